"""Dedupe step: recognise a login the producer sent twice.

The producer's format has no event id, so "the same login" means the same fields within a
short window of SentTimestamp (a resend). State is keyed by shard (a few dozen keys, each
holding many fingerprints) because Bytewax's per-key overhead dominates with one key per
message. It holds keyed fingerprints, never raw values, and stays bounded: entries older
than the window are evicted, and each shard holds at most `max_entries` of them.

Redelivery of the *same* SQS message is not a duplicate: it keeps the outcome it had, and
the sink's ledger makes its second write a no-op. Duplicates still reach the sink, so they
are recorded and deleted from the queue. This state is an optimisation; the ledger in the
database is the truth.
"""

from __future__ import annotations

from typing import Any

from bytewax.operators import StatefulBatchLogic

from logins.records import Event

# fingerprint -> (first message id, its SentTimestamp ms); insertion order ~ time order
DedupeState = dict[bytes, tuple[str, int]]


def shard_of(event: Event, shards: int) -> str:
    """The state key of an event: rejected events spread by message id, valid ones by content."""
    raw = event.fingerprint or event.message.message_id.encode()
    return str(int.from_bytes(raw[:4], "big") % shards)


class DedupeLogic(StatefulBatchLogic[Event, Event, DedupeState]):
    def __init__(self, window_seconds: float, max_entries: int, state: DedupeState | None) -> None:
        self._window_ms = int(window_seconds * 1000)
        self._max_entries = max_entries
        self._seen: DedupeState = dict(state or {})
        self._high_water = max((ts for _, ts in self._seen.values()), default=0)

    def on_batch(self, values: list[Event]) -> tuple[list[Event], bool]:
        for event in values:
            if event.rejection is None:
                self._classify(event)
        self._evict()
        return values, StatefulBatchLogic.RETAIN

    def _classify(self, event: Event) -> None:
        message = event.message
        sent = message.sent_timestamp_ms
        first = self._seen.get(event.fingerprint)
        if first is not None and abs(sent - first[1]) <= self._window_ms:
            if first[0] != message.message_id:
                event.duplicate_of = first[0]
            return
        self._seen.pop(event.fingerprint, None)  # re-insert at the end: it is the newest now
        self._seen[event.fingerprint] = (message.message_id, sent)
        self._high_water = max(self._high_water, sent)

    def _evict(self) -> None:
        horizon = self._high_water - self._window_ms
        seen = self._seen
        while seen:
            oldest = next(iter(seen))
            if len(seen) <= self._max_entries and seen[oldest][1] >= horizon:
                break
            del seen[oldest]

    def snapshot(self) -> DedupeState:
        return dict(self._seen)

    def __len__(self) -> int:
        return len(self._seen)


def builder(window_seconds: float, max_entries: int) -> Any:
    """The `stateful_batch` builder: a fresh or recovered logic per shard key."""

    def build(state: DedupeState | None) -> DedupeLogic:
        return DedupeLogic(window_seconds, max_entries, state)

    return build
