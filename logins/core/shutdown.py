"""Graceful stop on SIGTERM/SIGINT: stop receiving, commit what is held, exit 0.

The process's part of a flow's stop (logins.core.stop): the signal only requests the flow's
`Stop`; each source partition sees it on its next poll, hands over what it buffered and ends,
so Bytewax drains the flow (every held message is committed and deleted) and exits 0. A
watchdog bounds that: past the timeout the process exits 3 without committing more; what it
held returns to the queue after its visibility timeout. A second signal exits at once (130),
with the same guarantee.

A permanent error while running (the queue deleted, credentials revoked: `Stop.fail`) stops
the flow the same way, so what it holds is committed, and then the process exits 2 instead of 0.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from types import FrameType

from logins.core.stop import PERMANENT_ERROR_EXIT, Stop

__all__ = ["PERMANENT_ERROR_EXIT", "TIMED_OUT_EXIT", "exit_nonzero_after_failure", "install"]

log = logging.getLogger(__name__)

TIMED_OUT_EXIT = 3


def install(stop: Stop, timeout_seconds: float) -> None:
    """Make SIGTERM/SIGINT request `stop` (main thread only; elsewhere, e.g. in tests, this is
    a no-op)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
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
        stop.request()
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


def exit_nonzero_after_failure(stop: Stop) -> None:
    """At exit, turn a drained stop after `stop.fail` into exit code 2. Bytewax returns
    normally once the flow has drained, so the code is set from an atexit hook (os._exit: an
    exception there cannot change the code). Register it before the telemetry's own hooks:
    atexit runs the latest first, so span exporters flush before this one exits."""
    atexit.register(_exit_if_failed, stop)


def _exit_if_failed(stop: Stop) -> None:
    reason = stop.failure
    if reason is None:
        return
    print(f"logins: stopped: {reason}", file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(PERMANENT_ERROR_EXIT)
