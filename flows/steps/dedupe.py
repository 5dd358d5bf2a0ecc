"""Dedupe step: recognise a login the producer sent twice (the rule and its state:
`flows/steps/dedupe_window.py`).

State is keyed by shard (a few dozen keys, each holding many fingerprints) because Bytewax's
per-key overhead dominates with one key per message; this module only keys the events and
calls each shard's `Window`. A recognised resend is marked `duplicate` without naming the
message it repeats: the state keeps nothing that could name it.

Redelivery of the *same* SQS message is not a duplicate: it keeps the outcome it had, and the
sink's ledger makes its second write a no-op. Duplicates still reach the sink, so they are
recorded and deleted from the queue. This state is an optimisation; the ledger is the truth.

A shard's periods retire as its SentTimestamps move on. A shard that receives nothing (an
idle flow, or a quiet shard) asks Bytewax to wake it (`notify_at`) a window after its oldest
period would have retired, and if it saw no batch for a window by then, moves its high water
to the wall clock less one window: its dead keys are gone from memory and, through the
snapshot its wake-up causes, from the recovery store. A shard that is busy (draining a
backlog of older SentTimestamps) keeps to its SentTimestamps.

Snapshots (Bytewax takes one per touched key every epoch, and pickles it only with recovery)
are a view of the live window, serialised when pickled: a plain dict of the live periods'
keys and filled slots, so a snapshot writes the fingerprints a shard holds, not its budget.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from bytewax.operators import StatefulBatchLogic

from flows.steps.dedupe_window import BUCKET, PERIODS, SLOT_BYTES, Window, WindowState
from logins.core import metrics
from logins.core.records import Event

log = logging.getLogger(__name__)

SHARD_OVERHEAD = 6144  # bytes of a shard beyond its tables (objects, its rng), within budget
BYTES_PER_SLOT = SLOT_BYTES + 1 / BUCKET  # a slot and its share of the bucket fill counts


def shard_of(event: Event, shards: int) -> str:
    """The state key of an event: rejected events spread by message id, valid ones by content."""
    raw = event.fingerprint or event.message.message_id.encode()
    return str(int.from_bytes(raw[:4], "big") % shards)


def slots_per_period(memory_budget_mb: float, shards: int) -> int:
    """Slots of each of a shard's period tables: its share of the budget (MB = 10^6 bytes)
    over the two tables it may hold; whole buckets, at least one."""
    per_shard = int(memory_budget_mb * 1e6) // shards - SHARD_OVERHEAD
    slots = int(per_shard / PERIODS / BYTES_PER_SLOT)
    return max(BUCKET, slots // BUCKET * BUCKET)


class _EarlyEvictions:
    """Counts fingerprints dropped inside their window; logs at most once a minute."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._interval = interval
        self._clock = clock
        self._pending = 0
        self._logged_at = -math.inf

    def add(self, slots: int, count: int = 1) -> None:
        metrics.DEDUPE_EVICTED_EARLY.inc(count)
        with self._lock:
            self._pending += count
            now = self._clock()
            if now - self._logged_at < self._interval:
                return
            pending, self._pending, self._logged_at = self._pending, 0, now
        log.warning(
            "dedupe state full (%d slots per period and shard): %d fingerprints dropped before"
            " their window ended since the last report; a resend of one of those messages"
            " becomes a row. Raise steps[dedupe].memory_budget_mb (docs/operations.md)",
            slots,
            pending,
        )


EARLY = _EarlyEvictions()


class DedupeLogic(StatefulBatchLogic[Event, Event, WindowState]):
    """One shard: marks the resends of a batch `duplicate` (see `Window`)."""

    def __init__(
        self,
        window_seconds: float,
        slots: int,
        state: WindowState | _Snapshot | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(state, _Snapshot):  # handed over without pickling (in-process)
            state = state.window.state()
        self.window = Window(window_seconds, slots, state)
        self._window_seconds = window_seconds
        self._clock = clock
        self._last_batch = clock()

    def on_batch(self, values: list[Event]) -> tuple[list[Event], bool]:
        self._last_batch = self._clock()
        window = self.window
        seen, dropped = window.seen, window.dropped
        for event in values:
            message = event.message
            if event.rejection is None and seen(
                event.fingerprint, message.sent_timestamp_ms, message.receive_count > 1
            ):
                event.duplicate = True
        if window.dropped > dropped:
            EARLY.add(window.slots, window.dropped - dropped)
        return values, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """A window after the oldest live period would retire (on SentTimestamps), and at
        least a window after the last batch; none while nothing is held."""
        retires = self.window.retires_at_ms()
        if retires is None:
            return None
        at = max(retires / 1000, self._last_batch) + self._window_seconds
        return datetime.fromtimestamp(at, timezone.utc)

    def on_notify(self) -> tuple[list[Event], bool]:
        """Idle for a window: retire on the wall clock what SentTimestamps would have."""
        now = self._clock()
        if now - self._last_batch >= self._window_seconds:
            self.window.expire(int((now - self._window_seconds) * 1000))
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> WindowState:
        """A view, serialised when pickled (Bytewax drops it unpickled without recovery)."""
        return _Snapshot(self.window)  # type: ignore[return-value]


class _Snapshot:
    """What `snapshot` returns: pickles as the window's plain dict. Bytewax pickles a snapshot
    right after taking it; one pickled later would hold later state, still a correct window."""

    __slots__ = ("window",)

    def __init__(self, window: Window) -> None:
        self.window = window

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self.window.state(),))


def builder(window_seconds: float, slots: int) -> Any:
    """The `stateful_batch` builder: a fresh or recovered logic per shard key."""

    def build(state: WindowState | None) -> DedupeLogic:
        return DedupeLogic(window_seconds, slots, state)

    return build
