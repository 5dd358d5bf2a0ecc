"""`python -m bench dedupe`: the dedupe window at full rate, on the production step logic.

Three measurements, in one process, with synthetic SentTimestamps (simulated time, fed as
fast as the machine goes):

* **bytes per slot**: tracemalloc around building one shard's window at the default budget
  (two period tables), per slot of both;
* **load that holds**: one shard fed unique logins at a steady rate for three windows, at
  loads (fingerprints per period table / its slots) rising by 0.5 %, until one fingerprint is
  dropped inside its window; the highest load with none dropped sets the budget table;
* **the window at 10,000 msg/s**: the default configuration (64 shards, `shard_of`,
  `builder`, the default budget and window) fed 10,000 msg/s of simulated time for 12
  minutes: 3 % malformed, 2 % of the new logins resent 5-9 minutes after their original
  (uniformly), the rest new logins. Fingerprints are the validator's (`canonical_digest`
  of the six fields), message ids SQS-shaped UUIDs, batches of 1,000 split by shard as
  Bytewax's `stateful_batch` receives them. Every resend must come back as a duplicate, and
  no new login as a duplicate. At the end, the pickled snapshots of all 64 shards are
  measured: what a snapshot interval writes at this rate with every shard touched.

The recovery store on disk (bytes written per message, the store's size), old step against
new, is measured by `python -m bench.dedupe_recovery`.
"""

from __future__ import annotations

import logging
import pickle
import random
import resource
import sys
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import REGISTRY

from bench.generated import message_id
from flows.steps import dedupe, dedupe_window
from flows.steps.validate import canonical_digest
from logins.core.config import DedupeStep
from logins.core.records import Event, Rejection, SqsMessage

T0 = 1_780_000_000_000  # ms
BUDGETS_MB = (25, 50, 100, 150, 250, 500, 1000)
T = TypeVar("T")
NEW_LOGIN_SHARE = 0.95  # the generator's mix: 95 % of messages are new valid logins


def _defaults() -> DedupeStep:
    return DedupeStep(type="dedupe")


def _evicted() -> float:
    return REGISTRY.get_sample_value("logins_dedupe_evicted_early_total") or 0.0


def _traced(build: Callable[[], T]) -> tuple[T, int]:
    """What `build` returns, and the bytes tracemalloc saw it allocate."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    built = build()
    allocated = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return built, allocated


def bytes_per_slot() -> dict[str, float]:
    """tracemalloc's count of what one default shard's table allocates, per slot."""
    step = _defaults()
    slots = dedupe.slots_per_period(step.memory_budget_mb, step.shards)
    logic, allocated = _traced(lambda: dedupe.DedupeLogic(step.window_seconds, slots, None))
    both = logic.window.slots * dedupe.PERIODS
    return {"slots": both, "bytes": allocated, "bytes_per_slot": allocated / both}


def holds_at(load: float, slots: int, window: float, seed: int = 7) -> tuple[int, float]:
    """Feed one shard three windows of unique logins at `load` x slots per window (a period
    table holds one window's logins); returns (fingerprints dropped inside their window, the
    highest load of a period table seen)."""
    logic = dedupe_window.Window(window, slots, seed=seed)
    rate = load * logic.slots / window  # new logins per second
    step_ms = 1000 / rate
    rng = random.Random(seed)  # noqa: S311 (synthetic data, reproducible)
    total = int(3 * window * rate)
    peak = 0.0
    for i in range(total):
        logic.seen(rng.randbytes(16), T0 + int(i * step_ms))
        if i % (total // 24 or 1) == 0:
            peak = max(peak, *(sum(p.fill) / logic.slots for p in logic._periods))
    return logic.dropped, peak


def highest_load(window: float) -> dict[str, Any]:
    """The highest load (by 0.5 % steps from 85 %) at which nothing was dropped."""
    step = _defaults()
    slots = dedupe.slots_per_period(step.memory_budget_mb, step.shards)
    tried: list[tuple[float, int, float]] = []
    best = 0.0
    load = 0.85
    while load <= 1.0:
        dropped, peak = holds_at(load, slots, window)
        tried.append((round(load, 3), dropped, round(peak, 4)))
        if dropped:
            break
        best = peak
        load += 0.005
    return {"slots": slots, "load": best, "tried": tried}


@dataclass
class WindowRun:
    rate: float
    minutes: float
    messages: int = 0
    new_logins: int = 0
    malformed: int = 0
    resends_offered: int = 0
    resends_recognised: int = 0
    resends_wrong: int = 0  # kept for the report: a duplicate names no original now
    false_duplicates: int = 0  # new logins reported as duplicates
    evicted_early: int = 0
    live_fingerprints: int = 0  # inside the window at the end
    snapshot_bytes_end: int = 0  # the 64 shards' pickled snapshots at the end
    dedupe_seconds: float = 0.0
    dedupe_cpu_seconds: float = 0.0
    state_bytes: int = 0  # tracemalloc, building the 64 shards
    state_bytes_end: int = 0  # sizes of the same arrays and dicts at the end
    peak_rss_mb: float = 0.0
    wall_seconds: float = 0.0
    gaps_minutes: dict[str, float] = field(default_factory=dict)

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.dedupe_seconds if self.dedupe_seconds else 0.0


def window_run(
    rate: float = 10_000.0, minutes: float = 12.0, seed: int = 1, batch: int = 1000
) -> WindowRun:
    step = _defaults()
    shards = step.shards
    slots = dedupe.slots_per_period(step.memory_budget_mb, shards)
    build = dedupe.builder(step.window_seconds, slots)
    started = time.perf_counter()
    logics, state_bytes = _traced(lambda: {str(s): build(None) for s in range(shards)})

    rng = random.Random(seed)  # noqa: S311 (synthetic data, reproducible)
    result = WindowRun(rate, minutes, state_bytes=state_bytes)
    due: dict[int, list[tuple[bytes, str, int]]] = defaultdict(list)  # second -> resends
    waiting: list[tuple[bytes, str, int]] = []
    gaps = [float("inf"), 0.0]  # the shortest and longest gap offered, in minutes
    total = int(rate * minutes * 60)
    before_evicted = _evicted()
    for start in range(0, total, batch):
        events: list[Event] = []
        expect: list[str | None] = []
        for index in range(start, min(start + batch, total)):
            sent = T0 + int(index * 1000 / rate)
            second = (sent - T0) // 1000
            if second in due:
                waiting += due.pop(second)
            mid = message_id(seed, index)
            message = SqsMessage(mid, "", "", sent, 1)
            if waiting:
                fp, first, first_sent = waiting.pop()
                events.append(Event(message, fields={}, fingerprint=fp))
                expect.append(first)
                result.resends_offered += 1
                gap = (sent - first_sent) / 60_000
                gaps = [min(gaps[0], gap), max(gaps[1], gap)]
                continue
            if rng.random() < 0.03:
                events.append(Event(message, rejection=Rejection("not_json", "bench")))
                expect.append(None)
                result.malformed += 1
                continue
            fp = canonical_digest(
                [f"user-{index}", "2.3.0", "android", f"10.{index % 250}.0.1", "US", "593-47"]
            )
            events.append(Event(message, fields={}, fingerprint=fp))
            expect.append(None)
            result.new_logins += 1
            if rng.random() < 0.02:
                later = sent + int(rng.uniform(5 * 60_000, 9 * 60_000))
                due[(later - T0) // 1000].append((fp, mid, sent))
        t, c = time.perf_counter(), time.process_time()
        by_shard: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_shard[dedupe.shard_of(event, shards)].append(event)
        for key, part in by_shard.items():
            logics[key].on_batch(part)
        result.dedupe_seconds += time.perf_counter() - t
        result.dedupe_cpu_seconds += time.process_time() - c
        for event, wanted in zip(events, expect, strict=True):
            if wanted is None:
                result.false_duplicates += event.duplicate
            elif event.duplicate:
                result.resends_recognised += 1
        result.messages += len(events)
    result.evicted_early = int(_evicted() - before_evicted)
    result.state_bytes_end = sum(_state_size(logic) for logic in logics.values())
    result.live_fingerprints = sum(len(logic.window) for logic in logics.values())
    result.snapshot_bytes_end = sum(
        len(pickle.dumps(logic.snapshot())) for logic in logics.values()
    )
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result.wall_seconds = time.perf_counter() - started
    result.gaps_minutes = {"min": gaps[0], "max": gaps[1]}
    return result


def _state_size(logic: dedupe.DedupeLogic) -> int:
    periods = logic.window._periods
    spare = logic.window._spare
    return sum(sys.getsizeof(p.table) + sys.getsizeof(p.fill) for p in periods) + sum(
        sys.getsizeof(table) + sys.getsizeof(fill) for table, fill in spare
    )


def budget_table(load: float, window: float) -> list[dict[str, float]]:
    """Per budget: fingerprints held, and the steady rates up to which the window holds. A
    period table holds one window of logins (the other holds the window before)."""
    rows = []
    for mb in BUDGETS_MB:
        held = load * mb * 1e6 / dedupe.BYTES_PER_SLOT / dedupe.PERIODS
        logins = held / window
        rows.append(
            {"mb": mb, "fingerprints": held, "logins_per_s": logins,
             "msgs_per_s": logins / NEW_LOGIN_SHARE}
        )  # fmt: skip
    return rows


def run(rate: float = 10_000.0, minutes: float = 12.0) -> dict[str, Any]:
    logging.getLogger(dedupe.__name__).setLevel(logging.ERROR)  # the once-a-minute warning
    from bench.common import as_dict, log

    window = _defaults().window_seconds
    log("dedupe: bytes per slot (tracemalloc)")
    memory = bytes_per_slot()
    log(f"dedupe: {memory['bytes_per_slot']:.2f} bytes per slot; finding the load that holds")
    load = highest_load(window)
    log(f"dedupe: holds up to {load['load']:.1%} load; {rate:,.0f} msg/s for {minutes:g} min")
    run_ = window_run(rate, minutes)
    log(
        f"dedupe: {run_.resends_recognised:,} of {run_.resends_offered:,} resends recognised,"
        f" {run_.false_duplicates} false, {run_.evicted_early} evicted early,"
        f" {run_.msgs_per_s:,.0f} msg/s"
    )
    return {
        "memory": memory,
        "load": load,
        "table": budget_table(load["load"], window),
        "window_run": as_dict(run_) | {"msgs_per_s": run_.msgs_per_s},
        "window_seconds": window,
        "tick_ms": dedupe_window.tick_ms(window),
        "snapshot_bytes_per_message_at_s2": run_.snapshot_bytes_end / (rate * 2),
    }
