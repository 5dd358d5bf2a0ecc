"""`python -m bench dedupe`: the dedupe window at full rate, on the production step logic.

Three measurements, in one process, with synthetic SentTimestamps (simulated time, fed as
fast as the machine goes):

* **bytes per slot**: tracemalloc around building one shard's table at the default budget;
* **load that holds**: one shard fed unique logins at a steady rate for two windows, at
  loads (fingerprints in the window / slots) rising by 0.5 %, until one fingerprint is
  dropped inside its window; the highest load with none dropped sets the budget table;
* **the window at 10,000 msg/s**: the default configuration (64 shards, `shard_of`,
  `builder`, the default budget and window) fed 10,000 msg/s of simulated time for 12
  minutes: 3 % malformed, 2 % of the new logins resent 5-9 minutes after their original
  (uniformly), the rest new logins. Fingerprints are the validator's (`Tokenizer.fingerprint`
  of the six fields), message ids SQS-shaped UUIDs, batches of 1,000 split by shard as
  Bytewax's `stateful_batch` receives them. Every resend must come back as a duplicate of
  its original's id, and no new login as a duplicate.
"""

from __future__ import annotations

import logging
import random
import resource
import secrets
import sys
import time
import tracemalloc
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY

from bench.generated import message_id
from flows.steps import dedupe
from logins.core.config import DedupeStep
from logins.core.keys import TokenKey
from logins.core.records import Event, Rejection, SqsMessage
from logins.core.tokens import Tokenizer

T0 = 1_780_000_000_000  # ms
BUDGETS_MB = (25, 50, 100, 150, 250, 500, 1000)
NEW_LOGIN_SHARE = 0.95  # the generator's mix: 95 % of messages are new valid logins


def _defaults() -> DedupeStep:
    return DedupeStep(type="dedupe")


def _evicted() -> float:
    return REGISTRY.get_sample_value("logins_dedupe_evicted_early_total") or 0.0


def _uuid_ids(seed: int) -> Any:
    n = 0
    while True:
        yield message_id(seed, n)
        n += 1


def bytes_per_slot() -> dict[str, float]:
    """tracemalloc's count of what one default shard's table allocates, per slot."""
    step = _defaults()
    slots = dedupe.slots_per_shard(step.memory_budget_mb, step.shards)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    logic = dedupe.DedupeLogic(step.window_seconds, slots, None)
    allocated = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {"slots": logic.slots, "bytes": allocated, "bytes_per_slot": allocated / logic.slots}


def holds_at(load: float, slots: int, window: float, seed: int = 7) -> tuple[int, float]:
    """Feed one shard two windows of unique logins at `load` x slots per window; returns
    (fingerprints dropped inside their window, the highest load seen)."""
    logic = dedupe.DedupeLogic(window, slots, None, seed=seed)
    rate = load * logic.slots / window  # new logins per second
    step_ms = 1000 / rate
    ids = _uuid_ids(seed)
    rng = random.Random(seed)  # noqa: S311 (synthetic data, reproducible)
    before = _evicted()
    total = int(2 * window * rate)
    batch, peak = 16, 0.0
    for start in range(0, total, batch):
        events = [
            Event(
                SqsMessage(next(ids), "", "", T0 + int(i * step_ms), 1),
                fields={},
                fingerprint=rng.randbytes(16),
            )
            for i in range(start, min(start + batch, total))
        ]
        logic.on_batch(events)
        if start % (total // 8 or 1) < batch and start > total // 2:
            peak = max(peak, len(logic) / logic.slots)
    return int(_evicted() - before), peak


def highest_load(window: float) -> dict[str, Any]:
    """The highest load (by 0.5 % steps from 85 %) at which nothing was dropped."""
    step = _defaults()
    slots = dedupe.slots_per_shard(step.memory_budget_mb, step.shards)
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
    resends_wrong: int = 0  # recognised, but as a duplicate of another message
    false_duplicates: int = 0  # new logins reported as duplicates
    evicted_early: int = 0
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
    slots = dedupe.slots_per_shard(step.memory_budget_mb, shards)
    build = dedupe.builder(step.window_seconds, slots)
    started = time.perf_counter()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    logics = {str(s): build(None) for s in range(shards)}
    state_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    tokenizer = Tokenizer([TokenKey("bench", secrets.token_bytes(32))])
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
            fp = tokenizer.fingerprint(
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
                result.false_duplicates += event.duplicate_of is not None
            elif event.duplicate_of == wanted:
                result.resends_recognised += 1
            elif event.duplicate_of is not None:
                result.resends_wrong += 1
        result.messages += len(events)
    result.evicted_early = int(_evicted() - before_evicted)
    result.state_bytes_end = sum(_state_size(logic) for logic in logics.values())
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result.wall_seconds = time.perf_counter() - started
    result.gaps_minutes = {"min": gaps[0], "max": gaps[1]}
    return result


def _state_size(logic: dedupe.DedupeLogic) -> int:
    return sum(
        sys.getsizeof(part)
        for part in (logic._keys, logic._hi, logic._lo, logic._ids, logic.other_ids)
    )


def budget_table(load: float, window: float) -> list[dict[str, float]]:
    """Per budget: fingerprints held, and the steady rates up to which the window holds. A
    slot stays taken up to one epoch past its window, hence the epoch in the divisor."""
    epoch_s = dedupe.tick_ms(window) * 256 / 1000
    rows = []
    for mb in BUDGETS_MB:
        held = load * mb * 1e6 / dedupe.SLOT_BYTES
        logins = held / (window + epoch_s)
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
        "tick_ms": dedupe.tick_ms(window),
    }
