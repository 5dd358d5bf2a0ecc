"""Progress of long commands: a rich bar on a terminal, plain lines elsewhere; count, rate, ETA."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from logins.core import progress as progress_module
from logins.core.progress import progress
from tests.unit.conftest import Clock


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """time.monotonic for the plain tracker, moved by the test."""
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    return clock


def test_plain_lines_say_count_rate_and_eta_when_not_a_terminal(clock: Clock) -> None:
    out = io.StringIO()
    with progress("rotate: vault entries", 1000, stream=out, interval=5) as bar:
        clock.now += 1
        bar.update(100)  # within the interval: no line yet
        clock.now += 4
        bar.update(250)  # 250 in 5 s: 50/s, 750 left: 15 s
        clock.now += 5
        bar.advance(750)
    lines = out.getvalue().splitlines()
    assert lines == [
        "rotate: vault entries: 250/1,000 (25%), 50/s, ETA 0:15",
        "rotate: vault entries: 1,000/1,000 (100%), 100/s, ETA 0:00",
        "rotate: vault entries: 1,000/1,000 done in 10.0s (100/s)",
    ]
    assert "\x1b" not in out.getvalue()  # no terminal codes in a log


def test_a_total_learned_later_and_no_total(clock: Clock) -> None:
    out = io.StringIO()
    with progress("forget", stream=out, interval=1) as bar:
        clock.now += 2
        bar(10, 40)  # a (done, total) callback, as rotation and erasure call it
    with progress("generate", stream=out, interval=1) as bar:
        clock.now += 2
        bar.advance(30)
    assert out.getvalue().splitlines() == [
        "forget: 10/40 (25%), 5/s, ETA 0:06",
        "forget: 10/40 done in 2.0s (5/s)",
        "generate: 30, 15/s",
        "generate: 30 done in 2.0s (15/s)",
    ]


def test_a_terminal_gets_a_rich_bar_with_count_rate_and_eta() -> None:
    out = Terminal()
    with progress("rekey: rows re-sealed", 50, stream=out) as bar:
        for _ in range(5):
            bar.advance(10)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # drop colours, cursor moves
    final = shown.replace("\r", "\n").strip().splitlines()[-1]
    assert final.startswith("rekey: rows re-sealed ━")
    assert re.search(r"50/50 100% [\d,]+/s \d:\d\d:\d\d ETA \d:\d\d:\d\d$", final), final
    assert "\x1b[" in out.getvalue()  # drawn as a bar, not printed as lines


# --- the flow's status line ----------------------------------------------------------------


def test_the_flow_status_line_has_rate_counts_held_and_queue_as_json_fields() -> None:
    from logins.core import metrics
    from logins.core.progress import FlowProgress
    from logins.core.telemetry import JsonFormatter

    now = [100.0]
    reporter = FlowProgress(interval=1, clock=lambda: now[0])
    before = reporter.status()
    metrics.MESSAGES.labels("row").inc(30)
    metrics.MESSAGES.labels("rejected").inc(6)
    metrics.MESSAGES.labels("duplicate").inc(4)
    metrics.HELD.inc(7)
    metrics.QUEUE_MESSAGES.labels("visible").set(1234)
    metrics.QUEUE_MESSAGES.labels("in_flight").set(5)
    now[0] += 4.0
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("logins.progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        status = reporter.report()
    finally:
        logger.removeHandler(handler)
        metrics.HELD.dec(7)
    entry = json.loads(out.getvalue())
    assert status.rate == 10.0  # 40 committed in 4 s
    assert entry["rate"] == 10.0
    assert entry["committed"] - before.committed == 40
    assert entry["rows"] - before.rows == 30
    assert entry["rejected"] - before.rejected == 6
    assert entry["duplicates"] - before.duplicates == 4
    assert entry["held"] - before.held == 7
    assert (entry["queue_visible"], entry["queue_in_flight"]) == (1234, 5)
    assert entry["msg"].startswith("progress: 10.0 msg/s, ")
    assert "1,234 visible, 5 in flight" in entry["msg"]
