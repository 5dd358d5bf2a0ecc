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

import struct
from typing import Any

from bytewax.operators import StatefulBatchLogic

from logins.records import Event

# State: fingerprint -> the first message's SentTimestamp (ms, 8 bytes big-endian) followed by
# its id (UTF-8), in insertion order (~ time order). One bytes object per entry is about 100
# bytes less than a (str, int) tuple, and a full window is most of the process's memory.
# Bytewax snapshots the state every epoch (even without recovery), so `snapshot` is a plain
# copy of this dict. A snapshot written before (fingerprint -> (id, ms)) is still restored.
DedupeState = dict[bytes, bytes]
_OldDedupeState = dict[bytes, tuple[str, int]]
_TS = struct.Struct(">q")


def _pack(message_id: str, sent_ms: int) -> bytes:
    return _TS.pack(sent_ms) + message_id.encode("utf-8", "surrogatepass")


def _sent_ms(packed: bytes) -> int:
    ms: int = _TS.unpack_from(packed)[0]
    return ms


def _message_id(packed: bytes) -> str:
    return packed[_TS.size :].decode("utf-8", "surrogatepass")


def shard_of(event: Event, shards: int) -> str:
    """The state key of an event: rejected events spread by message id, valid ones by content."""
    raw = event.fingerprint or event.message.message_id.encode()
    return str(int.from_bytes(raw[:4], "big") % shards)


class DedupeLogic(StatefulBatchLogic[Event, Event, DedupeState]):
    def __init__(
        self,
        window_seconds: float,
        max_entries: int,
        state: DedupeState | _OldDedupeState | None,
    ) -> None:
        self._window_ms = int(window_seconds * 1000)
        self._max_entries = max_entries
        self._seen: DedupeState = {
            fingerprint: entry if isinstance(entry, bytes) else _pack(*entry)
            for fingerprint, entry in (state or {}).items()
        }
        self._high_water = max(map(_sent_ms, self._seen.values()), default=0)

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
        if first is not None and abs(sent - _sent_ms(first)) <= self._window_ms:
            first_id = _message_id(first)
            if first_id != message.message_id:
                event.duplicate_of = first_id
            return
        self._seen.pop(event.fingerprint, None)  # re-insert at the end: it is the newest now
        self._seen[event.fingerprint] = _pack(message.message_id, sent)
        if sent > self._high_water:
            self._high_water = sent

    def _evict(self) -> None:
        horizon = self._high_water - self._window_ms
        seen = self._seen
        while seen:
            oldest = next(iter(seen))
            if len(seen) <= self._max_entries and _sent_ms(seen[oldest]) >= horizon:
                break
            del seen[oldest]

    def snapshot(self) -> DedupeState:
        return dict(self._seen)

    def __len__(self) -> int:
        return len(self._seen)


def builder(window_seconds: float, max_entries: int) -> Any:
    """The `stateful_batch` builder: a fresh or recovered logic per shard key."""

    def build(state: DedupeState | _OldDedupeState | None) -> DedupeLogic:
        return DedupeLogic(window_seconds, max_entries, state)

    return build
