"""The messages this process holds, and the one heartbeat that keeps them invisible.

`InFlight` is the record: every message received and not yet deleted or released
(`logins_held_messages`). `Heartbeat` is its only owner of the visibility clock: one thread
per process, one acker of its own (made when the thread starts), started by the first user
(a source partition or a sink's acker) and stopped by the last to leave, after which nothing
is extended: what is still held comes back after its visibility timeout, as when the process
exits. A heartbeat outliving its flow in a process that runs another (tests, a reused Lambda
sandbox) would keep those messages hidden. Its acker fails its own flow's stop (the source's)
on a permanent error, never another flow's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from logins.core import metrics
from logins.core.config import SqsSourceConfig
from logins.core.records import SqsMessage

__all__ = ["Extender", "Heartbeat", "InFlight"]


class InFlight:
    """Every message this process received and has not deleted or released yet (by receipt
    handle): whatever waited half its visibility timeout (in the receive buffer, queued behind
    a slow write, or in a write that retries) is due for a fresh timeout. An entry is dropped
    on delete or release, or when SQS refuses to extend it (another process of a cluster
    deleted it)."""

    def __init__(self, config: SqsSourceConfig) -> None:
        self._config = config
        self._held: dict[str, SqsMessage] = {}
        self._lock = threading.Lock()

    def add(self, messages: Sequence[SqsMessage]) -> None:
        with self._lock:
            before = len(self._held)
            for message in messages:
                self._held[message.receipt_handle] = message
            metrics.HELD.inc(len(self._held) - before)

    def discard(self, messages: Sequence[SqsMessage]) -> None:
        with self._lock:
            before = len(self._held)
            for message in messages:
                self._held.pop(message.receipt_handle, None)
            metrics.HELD.dec(before - len(self._held))

    def due(self) -> list[SqsMessage]:
        """The messages held for more than half their visibility timeout."""
        limit = time.time() - self._config.visibility_timeout / 2
        with self._lock:
            return [m for m in self._held.values() if m.received_at < limit]

    def __len__(self) -> int:
        return len(self._held)


class Extender(Protocol):
    def extend(self, messages: Sequence[SqsMessage]) -> list[SqsMessage]: ...
    def close(self) -> None: ...


class Heartbeat:
    """Extends the visibility of what `inflight` holds for longer than half its timeout, ten
    messages a call (the acker's batches), checked every min(1 s, timeout / 4). Users
    `acquire` and `release`; the thread runs while there is at least one."""

    def __init__(
        self, config: SqsSourceConfig, inflight: InFlight, make_acker: Callable[[], Extender]
    ) -> None:
        self._config = config
        self._inflight = inflight
        self._make_acker = make_acker
        self._lock = threading.Lock()
        self._users = 0
        self._stop: threading.Event | None = None

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._stop is not None:
                return
            self._stop = stop = threading.Event()
        interval = min(1.0, self._config.visibility_timeout / 4)
        threading.Thread(
            target=self._beat, args=(stop, interval), name="sqs-visibility", daemon=True
        ).start()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._stop is None:
                return
            stop, self._stop = self._stop, None
        stop.set()

    @property
    def running(self) -> bool:
        return self._stop is not None

    def _beat(self, stop: threading.Event, interval: float) -> None:
        acker: Extender | None = None
        try:
            while not stop.wait(interval):
                due = self._inflight.due()
                if due:
                    acker = acker or self._make_acker()
                    self._inflight.discard(acker.extend(due))
        finally:
            if acker is not None:
                acker.close()
