"""`python -m bench.dedupe_recovery`: what the dedupe step writes to Bytewax's recovery store.

Side by side, each in a fresh process, the same run of the dedupe step with recovery on as
`-r DIR -s 2 -b 0` sets it (`run_main` with a 2 s epoch and a zero backup interval):

* **old**: the step before random per-period keys (commit 37f0d37: preallocated slots with
  message ids, every touched shard's whole table in each snapshot), read from git;
* **new**: `flows/steps/dedupe.py` as it is.

Both get the default configuration (64 shards, 150 MB, 10-minute window) and the same
logins, paced in real time at `--rate` msg/s (SentTimestamps are the send times): new logins
with validator-style fingerprints and UUID message ids, 2 % of them resent 1-9 s later.
Measured per variant: bytes the process wrote (`/proc/self/io` `write_bytes`, what reached
the disk, and `wchar`, every write call), the store's size at the end (its files), CPU
seconds, and the live fingerprints at the end (logins inside the window). The command and
figures go to docs/operations.md (Recovery).
"""

from __future__ import annotations

import importlib.util
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.common import parser

OLD_COMMIT = "37f0d37"  # the last commit with the former step
T_RESEND = (1_000, 9_000)  # ms after the original


def _events(messages: int, rate: float, seed: int) -> list[tuple[float, bytes, str, bool]]:
    """(offset in s, fingerprint, message id, is a resend) in send order."""
    from flows.steps.validate import canonical_digest

    rng = random.Random(seed)  # noqa: S311 (synthetic data, reproducible)
    due: list[tuple[float, bytes]] = []
    out: list[tuple[float, bytes, str, bool]] = []
    for i in range(messages):
        at = i / rate
        mid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if due and due[0][0] <= at:
            out.append((at, due.pop(0)[1], mid, True))
            continue
        fp = canonical_digest([f"user-{i}", 2003000, "2.3.0", "ios", f"10.{i % 250}.0.1",
                               "US", f"593-47-{i:06d}"])  # fmt: skip
        out.append((at, fp, mid, False))
        if rng.random() < 0.02:
            due.append((at + rng.uniform(*T_RESEND) / 1000, fp))
            due.sort()
    return out


def _old_module() -> Any:
    """The former step, from git, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:flows/steps/dedupe.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    spec = importlib.util.spec_from_loader("old_dedupe", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, "old_dedupe.py", "exec"), module.__dict__)  # noqa: S102 (our own former code)
    return module


def _io() -> dict[str, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {"write_bytes": int(fields["write_bytes"]), "wchar": int(fields["wchar"])}


def _snapshots(store: Path) -> dict[str, int]:
    """Rows in the store's snapshot table, and the bytes of each key's latest snapshot."""
    rows = latest = 0
    for path in store.glob("*.sqlite3"):
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows += db.execute("SELECT count(*) FROM snaps").fetchone()[0]
            latest += db.execute(
                "SELECT coalesce(sum(length(ser_change)), 0) FROM snaps s WHERE snap_epoch ="
                " (SELECT max(snap_epoch) FROM snaps t"
                "  WHERE t.step_id = s.step_id AND t.state_key = s.state_key)"
            ).fetchone()[0]
    return {"rows": rows, "latest_bytes": latest}


def one(variant: str, messages: int, rate: float, interval: float, seed: int) -> dict[str, Any]:
    """One variant in this process: the flow with recovery, measured."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.inputs import DynamicSource, StatelessSourcePartition
    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.testing import TestingSink, run_main

    from flows.steps import dedupe
    from logins.core.config import DedupeStep
    from logins.core.records import Event, SqsMessage

    module = _old_module() if variant == "old" else dedupe
    step = DedupeStep(type="dedupe")
    if variant == "old":
        slots = module.slots_per_shard(step.memory_budget_mb, step.shards)
    else:
        slots = module.slots_per_period(step.memory_budget_mb, step.shards)
    build = module.builder(step.window_seconds, slots)
    plan = _events(messages, rate, seed)
    t0 = int(time.time() * 1000)

    class OldEvent(Event):  # the former step sets `duplicate_of`: an Event with a __dict__
        pass

    kind = OldEvent if variant == "old" else Event

    class Paced(StatelessSourcePartition[Any]):
        def __init__(self) -> None:
            self._next, self._start = 0, time.monotonic()

        def next_batch(self) -> list[Any]:
            if self._next >= len(plan):
                raise StopIteration
            now = time.monotonic() - self._start
            batch = []
            while self._next < len(plan) and plan[self._next][0] <= now:
                at, fp, mid, _ = plan[self._next]
                message = SqsMessage(mid, "", "", t0 + int(at * 1000), 1)
                batch.append(kind(message, fields={}, fingerprint=fp))
                self._next += 1
            return batch

        def next_awake(self) -> datetime:
            return datetime.now(timezone.utc) + timedelta(milliseconds=20)

    class Source(DynamicSource[Any]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Paced:
            return Paced()

    flow = Dataflow("dedupe_recovery")
    events = op.input("in", flow, Source())
    keyed = op.map("shard", events, lambda e: (dedupe.shard_of(e, step.shards), e))
    deduped = op.stateful_batch(step.name, keyed, build)
    out: list[Any] = []
    op.output("out", op.map("unkey", deduped, lambda kv: kv[1]), TestingSink(out))

    with tempfile.TemporaryDirectory(prefix="dedupe-recovery-") as tmp:
        store = Path(tmp)
        init_db_dir(store, 1)
        before, cpu, wall = _io(), time.process_time(), time.perf_counter()
        run_main(
            flow,
            epoch_interval=timedelta(seconds=interval),
            recovery_config=RecoveryConfig(str(store), backup_interval=timedelta(0)),
        )
        after = _io()
        files = {p.name: p.stat().st_size for p in store.iterdir() if p.is_file()}
        snapshots = _snapshots(store)
    written = after["write_bytes"] - before["write_bytes"]
    duplicates = sum(e.duplicate or getattr(e, "duplicate_of", None) is not None for e in out)
    live = sum(1 for _, _, _, resend in plan if not resend)  # the run is shorter than the window
    return {
        "variant": variant,
        "messages": len(out),
        "duplicates": duplicates,
        "resends": sum(1 for *_, resend in plan if resend),
        "write_bytes": written,
        "wchar": after["wchar"] - before["wchar"],
        "written_per_message": written / max(len(out), 1),
        "store_bytes": sum(files.values()),
        "store_files": files,
        "snapshot_rows": snapshots["rows"],
        "latest_snapshots_bytes": snapshots["latest_bytes"],
        "live_fingerprints": live,
        "store_per_live_fingerprint": sum(files.values()) / max(live, 1),
        "cpu_seconds": time.process_time() - cpu,
        "wall_seconds": time.perf_counter() - wall,
    }


def main(argv: list[str] | None = None) -> int:
    args = parser("python -m bench.dedupe_recovery", __doc__, messages=20_000,
                  rate=(1_000.0, "msg/s, real time"), interval=(2.0, "snapshot interval (-s)"),
                  seed=1, variant=(None, "old or new: run one variant here (internal)")
                  ).parse_args(argv)  # fmt: skip
    if args.variant:
        result = one(args.variant, args.messages, args.rate, args.interval, args.seed)
        print(json.dumps(result))
        return 0
    results = []
    for variant in ("old", "new"):
        command = [sys.executable, "-m", "bench.dedupe_recovery", "--variant", variant,
                   "--messages", str(args.messages), "--rate", str(args.rate),
                   "--interval", str(args.interval), "--seed", str(args.seed)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    old, new = results
    print(
        f"written per message: old {old['written_per_message']:,.0f} B,"
        f" new {new['written_per_message']:,.0f} B"
        f" ({old['written_per_message'] / max(new['written_per_message'], 1):,.0f}x less);"
        f" store: old {old['store_bytes'] / 1e6:,.1f} MB, new {new['store_bytes'] / 1e6:,.2f} MB"
        f" ({new['store_per_live_fingerprint']:.1f} B per live fingerprint)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
