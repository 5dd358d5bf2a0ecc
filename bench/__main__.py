"""`make bench` / `python -m bench`: the pipeline against its baselines, in one run, on the same
generated data; writes docs/benchmarks.md and docs/benchmarks.png (see docs/benchmarks.md).

    python -m bench                       # everything but the SQS part (~10 min here)
    python -m bench --sqs-endpoint URL    # also the SQS path (e.g. LocalStack)
    python -m bench --quick               # small sizes: a smoke test of the harness (~2 min)
    python -m bench --report-only         # re-render the report from the last results.json
    python -m bench tokens                # only the token custody section: key file vs KMS

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
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import baselines, core, profile, report, tokens
from bench.common import ROOT, Server, as_dict, config_for, dataset, flow_env, keys, log
from logins.dev.generated import Dataset


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1_000_000, help="core path size")
    p.add_argument("--small", type=int, default=100_000, help="the memory-growth comparison size")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="repeats of the short measurements")
    p.add_argument("--naive-messages", type=int, default=10_000)
    p.add_argument("--latency-rate", type=float, default=500.0)
    p.add_argument("--latency-seconds", type=float, default=25.0)
    p.add_argument("--profile-messages", type=int, default=100_000)
    p.add_argument("--sqs-endpoint", default=os.environ.get("BENCH_SQS_ENDPOINT") or None)
    p.add_argument("--sqs-messages", type=int, default=100_000)
    p.add_argument("--sqs-workers", type=int, default=2)
    p.add_argument("--py-spy", default=os.environ.get("PY_SPY") or None)
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--work", type=Path, default=ROOT / "bench" / ".work")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--chart", type=Path, default=ROOT / "docs" / "benchmarks.png")
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.small, args.repeats = 50_000, 10_000, 1
        args.naive_messages, args.latency_seconds, args.profile_messages = 1000, 5.0, 10_000
        args.sqs_messages = min(args.sqs_messages, 2000)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tokens"]:
        return tokens.main(argv[1:])
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    if args.report_only:
        results = json.loads(results_path.read_text())
    else:
        results = measure(args)
        results_path.write_text(json.dumps(results, indent=1))
    args.out.write_text(report.render(results))
    if report.chart(results, args.chart):
        log(f"wrote {args.out} and {args.chart}")
    else:
        log(f"wrote {args.out} (no chart: pip install '.[bench]' for matplotlib)")
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    results: dict[str, Any] = {
        "command": _command(),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "git": git(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    keyfiles = keys(args.work)
    server = Server(args.work, os.environ.get("BENCH_DATABASE_URL") or None)
    try:
        results["postgres"] = server.describe()
        latency_n = int(args.latency_rate * args.latency_seconds)
        sizes = (args.messages, args.small, args.naive_messages, args.profile_messages, latency_n)
        size = max(*sizes, args.sqs_messages + 100)  # room for the bodies SQS refuses
        log(f"dataset: {size:,} messages, seed {args.seed}")
        data, took = dataset(args.work, size, args.seed)
        opened = Dataset(data)
        results["dataset"] = {"n": opened.n, "seed": opened.seed, "kinds": opened.kinds,
                              "generate_seconds": took, "bytes": data.stat().st_size}  # fmt: skip
        opened.close()
        results["seal_us"] = seal_cost()
        log(f"sealing: {results['seal_us']}")
        results["runs"] = runs = {}

        run, dsn = core.run_flow(server, args.work, keyfiles, data, name="core_1w",
                                 messages=args.messages, workers=1, keep_database=True)  # fmt: skip
        runs["core_1w"] = as_dict(run)
        config = config_for(flow_env(keyfiles, dsn))
        rows_file = args.work / "pipeline-rows.copy"
        exported = baselines.export_rows(dsn, config, rows_file)
        results["statement_ms"] = core.statement_costs(dsn, config)
        log(f"sink statements, ms per 1,000 rows: {results['statement_ms']}")
        server.drop_database("bench_core_1w")
        log(f"exported the pipeline's {exported:,} rows for the ceiling")

        run, _ = core.run_flow(server, args.work, keyfiles, data, name="core_2w",
                               messages=args.messages, workers=2)  # fmt: skip
        runs["core_2w"] = as_dict(run)
        small = []
        for attempt in range(args.repeats):
            run, _ = core.run_flow(server, args.work, keyfiles, data, name=f"small_{attempt}",
                                   messages=args.small, workers=1)  # fmt: skip
            small.append(as_dict(run))
        runs["small_1w"] = small
        run, _ = core.run_flow(server, args.work, keyfiles, data, name="latency",
                               messages=int(args.latency_rate * args.latency_seconds),
                               workers=1, rate=args.latency_rate)  # fmt: skip
        runs["latency"] = as_dict(run)

        results["naive"] = as_dict(baselines.naive(server, data, args.naive_messages, args.repeats))
        results["ceiling"] = as_dict(baselines.ceiling(server, config, rows_file, args.repeats))
        rows_file.unlink()

        spy = None if args.no_profile else profile.find_py_spy(args.py_spy)
        if spy:
            results["profile"] = run_profiles(server, args, keyfiles, data, spy)
        else:
            log("no py-spy (PATH or PY_SPY): the report keeps no profile of this run")

        results["tokens"] = tokens.measure(
            messages=args.small, kms_messages=2_000 if args.quick else 5_000, seed=args.seed
        )
        results["tokens"]["command"] = results["command"]

        if args.sqs_endpoint:
            from bench.sqs import sqs_path

            results["sqs"] = as_dict(sqs_path(server, args.work, keyfiles, data, args.sqs_endpoint,
                                              args.sqs_messages, args.sqs_workers))  # fmt: skip
    finally:
        server.stop()
    results["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results["duration_seconds"] = time.time() - started
    results["machine"]["load_average_end"] = os.getloadavg()
    return results


def run_profiles(
    server: Server, args: argparse.Namespace, keyfiles: dict[str, Path], data: Path, spy: str
) -> dict[str, Any]:
    """Two sampled runs of one worker: CPU by function (all threads), then wall time of the
    worker thread by step (idle included)."""
    out: dict[str, Any] = {"messages": args.profile_messages}
    for kind, flags in (("cpu", []), ("wall", ["--idle"])):
        raw = args.work / f"profile-{kind}.txt"
        wrap = [spy, "record", "--rate", "100", "--threads", *flags, "--format", "raw",
                "--output", str(raw), "--"]  # fmt: skip
        core.run_flow(server, args.work, keyfiles, data, name=f"profile_{kind}",
                      messages=args.profile_messages, workers=1, wrap=wrap)  # fmt: skip
        if kind == "cpu":
            out["cpu"] = as_dict(profile.summarise_cpu(raw))
        else:
            out["worker_wall"] = profile.summarise_worker_wall(raw)
    return out


def seal_cost(count: int = 2000) -> dict[str, float]:
    """µs per value: in a sealed box of its own (format 1's cost, and `Sealer.seal`'s) and
    under a batch's data key (`SealBatch`, what the mask step does), per batch of `count`."""
    from nacl.public import PrivateKey, SealedBox

    from logins.vault import Sealer

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
        "bytewax": version("bytewax"),
        "psycopg": version("psycopg"),
        "pynacl": version("PyNaCl"),
        "load_average_start": os.getloadavg(),
    }


def git() -> dict[str, Any]:
    def run(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()

    return {
        "commit": run("rev-parse", "--short", "HEAD"),
        "dirty": bool(run("status", "--porcelain")),
    }


def _command() -> str:
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items())
           if k in ("BENCH_DATABASE_URL", "BENCH_SQS_ENDPOINT", "PY_SPY")]  # fmt: skip
    if os.environ.get("MAKELEVEL"):
        return " ".join([*env, "make bench"])
    return " ".join([*env, "python -m bench", *map(shlex.quote, sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
