"""Progress of long commands (rotate, rekey, forget, generate, the demo's drain) on stderr:
count, rate and ETA, so an operator sees it is moving and when it will be done; and the
running flow's periodic status line (`FlowProgress`).

On a terminal it is a `rich` progress bar (rich draws and refreshes it from its own thread and
works out rate and ETA; no need to hand-roll cursor control). Anywhere else (a log file, CI,
a pipe) it is a plain line every `interval` seconds and one at the end, which a log keeps.
stdout is never touched, so `--json` output stays parseable.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TextIO

from prometheus_client import REGISTRY
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class Tracker:
    """What a long operation reports to: `advance(n)` or `update(done, total)`. Calling the
    tracker is `update`, so it fits a plain `(done, total)` callback."""

    def advance(self, n: int = 1) -> None:
        raise NotImplementedError

    def update(self, done: int, total: int | None = None) -> None:
        raise NotImplementedError

    def __call__(self, done: int, total: int | None = None) -> None:
        self.update(done, total)

    def close(self) -> None:
        raise NotImplementedError


class _RateColumn(ProgressColumn):
    """Items per second (rich's own speed column is for bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")


class _RichTracker(Tracker):
    def __init__(self, description: str, total: int | None, stream: TextIO) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=stream),
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self._progress.update(self._task, total=total)
        self._progress.update(self._task, completed=done)

    def close(self) -> None:
        self._progress.stop()


class _PlainTracker(Tracker):
    def __init__(
        self, description: str, total: int | None, stream: TextIO, interval: float
    ) -> None:
        self._description = description
        self._total = total
        self._stream = stream
        self._interval = interval
        self._done = 0
        self._started = time.monotonic()
        self._last_line = self._started

    def advance(self, n: int = 1) -> None:
        self.update(self._done + n)

    def update(self, done: int, total: int | None = None) -> None:
        self._done = done
        if total is not None:
            self._total = total
        now = time.monotonic()
        if now - self._last_line >= self._interval:
            self._last_line = now
            self._line(self._describe(now))

    def close(self) -> None:
        elapsed = time.monotonic() - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        of = f"/{self._total:,}" if self._total is not None else ""
        self._line(f"{self._done:,}{of} done in {elapsed:.1f}s ({rate:,.0f}/s)")

    def _describe(self, now: float) -> str:
        elapsed = now - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        if self._total is None:
            return f"{self._done:,}, {rate:,.0f}/s"
        percent = 100 * self._done / self._total if self._total else 100.0
        left = max(self._total - self._done, 0)
        eta = _clock(left / rate) if rate > 0 else "?"
        return f"{self._done:,}/{self._total:,} ({percent:.0f}%), {rate:,.0f}/s, ETA {eta}"

    def _line(self, text: str) -> None:
        print(f"{self._description}: {text}", file=self._stream, flush=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@contextlib.contextmanager
def progress(
    description: str,
    total: int | None = None,
    *,
    stream: TextIO | None = None,
    interval: float = 5.0,
) -> Iterator[Tracker]:
    """Track a long operation; the bar (or the last plain line) is finished on exit."""
    stream = stream if stream is not None else sys.stderr
    is_terminal = getattr(stream, "isatty", lambda: False)()
    tracker: Tracker = (
        _RichTracker(description, total, stream)
        if is_terminal
        else _PlainTracker(description, total, stream, interval)
    )
    try:
        yield tracker
    finally:
        tracker.close()


# --- the flow's status line ------------------------------------------------------------------

DEFAULT_FLOW_INTERVAL = 30.0
_flow_log = logging.getLogger("logins.progress")


@dataclass(frozen=True)
class FlowStatus:
    """What the flow has done in this process, from its own metrics. `queue_visible` and
    `queue_in_flight` are the source's last GetQueueAttributes reading (None before one)."""

    rate: float  # messages committed per second since the previous line
    committed: int  # messages committed: rows + rejected + duplicates
    rows: int
    rejected: int
    duplicates: int
    held: int
    queue_visible: int | None
    queue_in_flight: int | None

    def line(self) -> str:
        queue = (
            "queue depth unknown yet"
            if self.queue_visible is None
            else f"queue {self.queue_visible:,} visible, {self.queue_in_flight or 0:,} in flight"
        )
        return (
            f"progress: {self.rate:,.1f} msg/s, {self.committed:,} committed"
            f" ({self.rows:,} rows, {self.rejected:,} rejected, {self.duplicates:,} duplicates),"
            f" {self.held:,} held, {queue}"
        )


def _sample(name: str, labels: dict[str, str] | None = None) -> float | None:
    return REGISTRY.get_sample_value(name, labels or {})


def _count(name: str, labels: dict[str, str] | None = None) -> int:
    return int(_sample(name, labels) or 0)


def _optional(name: str, labels: dict[str, str]) -> int | None:
    value = _sample(name, labels)
    return None if value is None else int(value)


class FlowProgress:
    """Logs the flow's status every `interval` seconds on a thread of its own, and once at
    exit: rate, committed by outcome, held messages, queue depth. Everything comes from this
    process's Prometheus metrics (the sink's counters, the source's held gauge and its
    periodic queue reading), so a line costs no call to SQS and nothing per message. With
    LOGINS_LOG_FORMAT=json the values are fields of the log object, not only text."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last = (clock(), self._committed())
        self._stop = threading.Event()
        self._lock = threading.Lock()

    @staticmethod
    def _committed() -> int:
        return sum(
            _count("logins_messages_total", {"outcome": o})
            for o in ("row", "rejected", "duplicate")
        )

    def status(self) -> FlowStatus:
        """The status now; the rate is over the time since the previous call."""
        with self._lock:
            now, committed = self._clock(), self._committed()
            then, before = self._last
            self._last = (now, committed)
        elapsed = now - then
        return FlowStatus(
            rate=(committed - before) / elapsed if elapsed > 0 else 0.0,
            committed=committed,
            rows=_count("logins_messages_total", {"outcome": "row"}),
            rejected=_count("logins_messages_total", {"outcome": "rejected"}),
            duplicates=_count("logins_messages_total", {"outcome": "duplicate"}),
            held=_count("logins_held_messages"),
            queue_visible=_optional("logins_queue_messages", {"state": "visible"}),
            queue_in_flight=_optional("logins_queue_messages", {"state": "in_flight"}),
        )

    def report(self) -> FlowStatus:
        status = self.status()
        _flow_log.info(status.line(), extra=asdict(status))
        return status

    def start(self) -> None:
        """The reporting thread (a daemon), and a last line at exit."""
        if self._interval <= 0:
            return
        threading.Thread(target=self._run, name="logins-progress", daemon=True).start()
        atexit.register(self.stop)

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self.report()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.report()
