"""`make bench` / `python -m bench`: the pipeline against its baselines, in one run, on the same
generated data; writes docs/benchmarks.md and docs/benchmarks.png (see docs/benchmarks.md).

    python -m bench                       # everything but the SQS part (~12 min here)
    python -m bench --sqs-endpoint URL    # also the SQS path (e.g. LocalStack)
    python -m bench --quick               # small sizes: a smoke test of the harness (~3 min)
    python -m bench --report-only         # re-render the report from the last results.json
    python -m bench --dedupe              # also the dedupe window (adds ~10 min)

One part alone (`python -m bench PART -h`; each writes bench/.work/PART.json, and the parts
with a section of docs/benchmarks.md rewrite it unless --no-doc):

    python -m bench core -n N -w W --json # one core run + its ceilings and baseline, as JSON
    python -m bench dedupe                # the dedupe window at 10,000 msg/s (simulated time)
    python -m bench tokens                # the token custody section: key file vs KMS
    python -m bench sqs -n N --json       # the SQS path: flow vs bare drains (needs --endpoint
                                          # or BENCH_SQS_ENDPOINT)

Environment: BENCH_DATABASE_URL (a PostgreSQL superuser DSN; else an embedded server is
started), BENCH_SQS_ENDPOINT (= --sqs-endpoint), PY_SPY (py-spy's path, if not on PATH).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import baselines, chart, core, dedupe, profile, report, sections, sqs, tokens
from bench.common import (
    ROOT,
    WORK,
    Rig,
    as_dict,
    dataset,
    finish,
    flow_env,
    log,
    parser,
    session,
    stamp,
)
from bench.generated import Dataset
from logins.core.config import load_config

PAGE = ROOT / "docs" / "benchmarks.md"
SQS_ENDPOINT = os.environ.get("BENCH_SQS_ENDPOINT") or None


@dataclass(frozen=True)
class Part:
    """A part measured alone, `python -m bench NAME`: its options (common.parser's), its
    measurement, and the section of docs/benchmarks.md it rewrites (None: it has none)."""

    doc: str
    options: dict[str, Any]
    measure: Callable[[argparse.Namespace], dict[str, Any]]
    section: Callable[[dict[str, Any]], str | None] = lambda _: None
    ok: Callable[[dict[str, Any]], bool] = lambda _: True


PARTS = {
    "core": Part(core.alone.__doc__ or "", {
        "messages": 1_000_000, "workers": 1, "seed": 1, "baseline_messages": 10_000,
        "baseline_seconds": baselines.NAIVE_SECONDS}, core.alone),
    "dedupe": Part(dedupe.__doc__ or "", {
        "rate": (10_000.0, "messages/s of simulated time"),
        "minutes": (12.0, "simulated minutes")},
        lambda a: dedupe.run(a.rate, a.minutes), sections.dedupe_section),
    "tokens": Part(tokens.__doc__ or "", {
        "messages": 100_000, "kms_messages": 5_000, "seed": 1,
        "kms_key_id": (None, "your own HMAC_256 key instead of moto"),
        "kms_endpoint": (None, "with --kms-key-id: a local endpoint")},
        lambda a: tokens.measure(a.messages, a.kms_messages, a.seed, a.kms_key_id,
                                 a.kms_endpoint), sections.tokens_section),
    "sqs": Part(sqs.__doc__ or "", {
        "endpoint": SQS_ENDPOINT, "messages": 40_000, "repeats": 3, "seed": 1,
        "no_pairs": (False, "skip the flow-vs-drain rate pairs"),
        "cpu_sizes": ("4000,24000",
                      "SMALL,LARGE: the flow's marginal CPU per message between them ('' skips)"),
        "delay_ms": (20.0, "the fault proxy holds each call this long (0 skips)"),
        "delay_messages": 10_000,
        "flow_source": ("", "KEY=VALUE,... overriding the flow's source: in the CPU runs")},
        sqs.alone, lambda out: sections.sqs_section(out) if "defaults" in out else None,
        lambda out: all(x.get("exact", True) for x in (out, out.get("cpu") or {},
                                                        out.get("delayed") or {}))),
}  # fmt: skip


def part_main(name: str, argv: list[str]) -> int:
    part = PARTS[name]
    p = parser(f"python -m bench {name}", part.doc, **part.options,
               json=(False, "print one JSON object on stdout"), work=WORK, out=PAGE,
               no_doc=(False, "do not rewrite the page's section"),
               report_only=(False, f"re-render the last {name}.json"))  # fmt: skip
    args = p.parse_args(argv)
    if name == "sqs" and not args.endpoint and not args.report_only:
        p.error("give --endpoint or BENCH_SQS_ENDPOINT (e.g. LocalStack's http://127.0.0.1:4566)")
    args.work.mkdir(parents=True, exist_ok=True)
    saved = args.work / f"{name}.json"
    if args.report_only:
        out = json.loads(saved.read_text())
    else:
        record = stamp(" ".join([f"python -m bench {name}", *map(shlex.quote, argv)]))
        out = part.measure(args) | finish(record)
        saved.write_text(json.dumps(out, indent=1))
    full = args.work / "results.json"
    if name == "tokens" and full.exists():  # so that `python -m bench --report-only` keeps it
        full.write_text(json.dumps(json.loads(full.read_text()) | {"tokens": out}, indent=1))
    section = part.section(out)
    if section and not args.no_doc:
        sections.write_section(args.out, name, section)
        log(f"wrote the {name} section of {args.out}")
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0 if part.ok(out) else 1


# -- the full run ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = parser("python -m bench", __doc__,
               messages=(1_000_000, "core path size"),
               small=(100_000, "the memory-growth comparison size"),
               cost_small=(50_000, "the cost-per-message size"), seed=1,
               repeats=(3, "repeats of the short measurements"), naive_messages=10_000,
               latency_rate=500.0, latency_seconds=25.0, profile_messages=100_000,
               sqs_endpoint=SQS_ENDPOINT, sqs_messages=40_000,
               py_spy=os.environ.get("PY_SPY") or None, no_profile=False, work=WORK, out=PAGE,
               chart=ROOT / "docs" / "benchmarks.png",
               quick=(False, "small sizes, one repeat"), report_only=False,
               dedupe=(False, "also the dedupe window"))  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.small, args.cost_small, args.repeats = 50_000, 10_000, 5_000, 1
        args.naive_messages, args.latency_seconds, args.profile_messages = 1000, 5.0, 10_000
        args.sqs_messages = min(args.sqs_messages, 2000)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in PARTS:
        return part_main(argv[0], argv[1:])
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    if args.report_only:
        results = json.loads(results_path.read_text())
    else:
        results = measure(args)
        results_path.write_text(json.dumps(results, indent=1))
    rendered = report.render(results)
    if args.out.exists():  # keep the last `python -m bench dedupe|sqs|tokens` of what was not run
        rendered = sections.carry_sections(args.out.read_text(), rendered)
    args.out.write_text(rendered)
    if chart.chart(results, args.chart):
        log(f"wrote {args.out} and {args.chart}")
    else:
        log(f"wrote {args.out} (no chart: pip install '.[bench]' for matplotlib)")
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    record = stamp(_command())
    results: dict[str, Any] = {
        **{k: record[k] for k in ("command", "started", "git")},
        "machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
    }  # fmt: skip
    with session(args.work, shared=False) as (server, keyfiles):
        results["postgres"] = server.describe()
        latency_n = int(args.latency_rate * args.latency_seconds)
        sizes = (args.messages, args.small, args.naive_messages, args.profile_messages, latency_n)
        size = max(*sizes, args.sqs_messages + 100)  # room for the bodies SQS refuses
        log(f"dataset: {size:,} messages, seed {args.seed}")
        data, took = dataset(args.work, size, args.seed)
        with Dataset(data) as opened:
            results["dataset"] = {"n": opened.n, "seed": opened.seed, "kinds": opened.kinds,
                                  "generate_seconds": took,
                                  "bytes": data.stat().st_size}  # fmt: skip
        rig = Rig(server, args.work, keyfiles, data)
        results["seal_us"] = seal_cost()
        log(f"sealing: {results['seal_us']}")

        def flow(name: str, messages: int, **kw: Any) -> dict[str, Any]:
            run, _ = core.run_flow(rig, name=name,
                                   messages=messages, **{"workers": 1, **kw})  # fmt: skip
            return as_dict(run)

        run, dsn = core.run_flow(rig, name="core_1w",
                                 messages=args.messages, workers=1, keep_database=True)  # fmt: skip
        runs: dict[str, Any] = {"core_1w": as_dict(run)}
        results["runs"] = runs
        config = load_config(flow_env(keyfiles, dsn))
        rows_file = args.work / "pipeline-rows.copy"
        exported = baselines.export_rows(dsn, config, rows_file)
        results["statement_ms"] = core.statement_costs(dsn, config)
        log(f"sink statements, ms per 1,000 rows: {results['statement_ms']}")
        server.drop_database("bench_core_1w")
        log(f"exported the pipeline's {exported:,} rows for the ceiling")
        runs["core_2w"] = flow("core_2w", args.messages, workers=2)
        runs["small_1w"] = [flow(f"small_{i}", args.small) for i in range(args.repeats)]
        runs["cost_small_1w"] = [flow(f"cost_{i}", args.cost_small) for i in range(args.repeats)]
        runs["latency"] = flow("latency", latency_n, rate=args.latency_rate)
        results |= as_dict(baselines.all_of(server, config, data, rows_file, args.naive_messages,
                                            args.repeats))  # fmt: skip
        rows_file.unlink()
        if args.dedupe:
            results["dedupe"] = dedupe.run(minutes=3.0 if args.quick else 12.0)
        spy = None if args.no_profile else profile.find_py_spy(args.py_spy)
        if spy:
            results["profile"] = run_profiles(rig, args, spy)
        else:
            log("no py-spy (PATH or PY_SPY): the report keeps no profile of this run")
        results["tokens"] = tokens.measure(
            messages=args.small, kms_messages=2_000 if args.quick else 5_000, seed=args.seed
        ) | {"command": results["command"]}
        if args.sqs_endpoint:
            results["sqs"] = sqs.in_full_run(rig, args.sqs_endpoint,
                                             args.sqs_messages, args.repeats)  # fmt: skip
    results["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results["duration_seconds"] = finish(record)["seconds"]
    results["machine"]["load_average_end"] = os.getloadavg()
    return results


def run_profiles(rig: Rig, args: argparse.Namespace, spy: str) -> dict[str, Any]:
    """Two sampled runs of one worker: CPU by function (all threads), then wall time of the
    worker thread by step (idle included)."""
    out: dict[str, Any] = {"messages": args.profile_messages}
    for kind, flags in (("cpu", []), ("wall", ["--idle"])):
        raw = args.work / f"profile-{kind}.txt"
        wrap = [spy, "record", "--rate", "100", "--threads", *flags, "--format", "raw",
                "--output", str(raw), "--"]  # fmt: skip
        core.run_flow(rig, name=f"profile_{kind}",
                      messages=args.profile_messages, workers=1, wrap=wrap)  # fmt: skip
        if kind == "cpu":
            out["cpu"] = as_dict(profile.summarise_cpu(raw))
        else:
            out["worker_wall"] = profile.summarise_worker_wall(raw)
    return out


def seal_cost(count: int = 2000) -> dict[str, float]:
    """µs per value: in a sealed box of its own (`Sealer.seal`'s cost) and
    under a batch's data key (`SealBatch`, what the mask step does), per batch of `count`."""
    from nacl.public import PrivateKey, SealedBox

    from logins.core.vault import Sealer

    public = PrivateKey.generate().public_key
    box, sealer = SealedBox(public), Sealer(public)
    values = [(f"k.{i:032x}", f"10.{i % 256}.0.{i % 250}") for i in range(count)]
    timings: dict[str, list[float]] = {"sealed_box": [], "batch": []}
    for _ in range(3):
        t = time.perf_counter()
        for token, value in values:
            box.encrypt(f"ip\x00{token}\x00{value}".encode())
        timings["sealed_box"].append((time.perf_counter() - t) / count * 1e6)
        t = time.perf_counter()
        batch = sealer.batch()
        for token, value in values:
            batch.seal("ip", token, value)
        timings["batch"].append((time.perf_counter() - t) / count * 1e6)
    return {k: sorted(v)[1] for k, v in timings.items()} | {"batch_size": count}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        **{name: version(dist) for name, dist in
           (("bytewax", "bytewax"), ("psycopg", "psycopg"), ("pynacl", "PyNaCl"))},
        "load_average_start": os.getloadavg(),
    }  # fmt: skip


def _command() -> str:
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items())
           if k in ("BENCH_DATABASE_URL", "BENCH_SQS_ENDPOINT", "PY_SPY")]  # fmt: skip
    if os.environ.get("MAKELEVEL"):
        return " ".join([*env, "make bench"])
    return " ".join([*env, "python -m bench", *map(shlex.quote, sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
