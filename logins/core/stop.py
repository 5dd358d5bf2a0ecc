"""One flow's stop: whether it was asked to stop receiving, and the permanent error that asked.

`build_flow` makes one per flow and hands it to the source and the sink (and what they build:
the SQS calls, the acker, the writer threads), so a flow never sees a stop or a failure left
by an earlier flow in the same process. The source ends on its next poll once `is_set`;
`logins.core.shutdown` sets it on SIGTERM/SIGINT and turns a recorded `failure` into exit 2.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["PERMANENT_ERROR_EXIT", "Stop"]

log = logging.getLogger(__name__)

PERMANENT_ERROR_EXIT = 2


class Stop:
    """A flow's request to stop receiving (a signal, a failed writer thread, a permanent
    error), and the first permanent error, if any: the flow drains what it holds either way."""

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._failure: str | None = None
        self._lock = threading.Lock()

    def request(self) -> None:
        """Stop receiving: the sources end on their next poll, the flow drains. A failure off
        the worker thread (the sink's writer) asks this too, so the flow ends and raises it
        when the sink closes instead of waiting for a next batch that may never come."""
        self._requested.set()

    def is_set(self) -> bool:
        return self._requested.is_set()

    def fail(self, reason: str) -> None:
        """A permanent error while running: retrying cannot help (the queue was deleted, the
        credentials were revoked). Stop receiving like a signal does, so the flow commits
        what it holds; only the first reason is kept (`failure`), for the exit 2."""
        with self._lock:
            first = self._failure is None
            if first:
                self._failure = reason
        if first:
            log.error(
                "stopping on a permanent error (%s); what is held is committed, then the flow"
                " exits %d",
                reason,
                PERMANENT_ERROR_EXIT,
            )
        self._requested.set()

    @property
    def failure(self) -> str | None:
        """The first permanent error `fail` recorded, if any."""
        with self._lock:
            return self._failure
