"""Graceful stop on SIGTERM/SIGINT: stop receiving, commit what is held, exit 0.

The signal only sets `STOPPING`; each source partition sees it on its next poll, hands over
what it buffered and ends, so Bytewax drains the flow (every held message is committed and
deleted) and exits 0. A watchdog bounds that: past the timeout the process exits 3 without
committing more; what it held returns to the queue after its visibility timeout. A second
signal exits at once (130), with the same guarantee.

A permanent error while running (the queue deleted, credentials revoked: see `fail`) stops the
flow the same way, so what it holds is committed, and then the process exits 2 instead of 0.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from types import FrameType

log = logging.getLogger(__name__)

STOPPING = threading.Event()
TIMED_OUT_EXIT = 3
PERMANENT_ERROR_EXIT = 2
_failure: list[str] = []  # the first permanent error of this run, if any
_failure_lock = threading.Lock()


def install(timeout_seconds: float) -> None:
    """Install the handlers (main thread only; elsewhere, e.g. in tests, this is a no-op)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if STOPPING.is_set():
            log.warning(
                "second %s: exiting now; uncommitted messages return to the queue",
                signal.Signals(signum).name,
            )
            os._exit(130)
        log.info(
            "%s: stop receiving, committing what is held (at most %ss)",
            signal.Signals(signum).name,
            timeout_seconds,
        )
        STOPPING.set()
        threading.Thread(target=_watchdog, args=(timeout_seconds,), daemon=True).start()

    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _watchdog(timeout_seconds: float) -> None:
    threading.Event().wait(timeout_seconds)
    log.error(
        "graceful stop took over %ss: exiting; uncommitted messages return to the queue "
        "after their visibility timeout",
        timeout_seconds,
    )
    logging.shutdown()
    os._exit(TIMED_OUT_EXIT)


def stop_after_failure() -> None:
    """A part of the flow failed off the worker thread (the sink's writer): stop receiving, so
    the sources end, the flow drains, and the failure is raised when the sink closes (exit
    non-zero) instead of waiting for a next batch that may never come."""
    STOPPING.set()


def fail(reason: str) -> None:
    """A permanent error while running: retrying cannot help (the queue was deleted, the
    credentials were revoked). Stop receiving like a signal does, so the flow commits what it
    holds; `exit_nonzero_after_failure` then makes the process exit 2 instead of 0."""
    with _failure_lock:
        first = not _failure
        if first:
            _failure.append(reason)
    if first:
        log.error(
            "stopping on a permanent error (%s); what is held is committed, then the flow exits %d",
            reason,
            PERMANENT_ERROR_EXIT,
        )
    STOPPING.set()


def failure() -> str | None:
    """The permanent error `fail` recorded for this run, if any."""
    with _failure_lock:
        return _failure[0] if _failure else None


def exit_nonzero_after_failure() -> None:
    """At exit, turn a drained stop after `fail` into exit code 2. Bytewax returns normally
    once the flow has drained, so the code is set from an atexit hook (os._exit: an exception
    there cannot change the code). Register it before the telemetry's own hooks: atexit runs
    the latest first, so span exporters flush before this one exits."""
    atexit.register(_exit_if_failed)


def _exit_if_failed() -> None:
    reason = failure()
    if reason is None:
        return
    print(f"logins: stopped: {reason}", file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(PERMANENT_ERROR_EXIT)


def reset() -> None:
    """A new flow starts with no stop requested (a process may run several, as tests do)."""
    STOPPING.clear()
    with _failure_lock:
        _failure.clear()
