"""`make bench` / `python -m bench`: the pipeline against its baselines, in one run, on the same
generated data; writes docs/benchmarks.md and docs/benchmarks.png (see docs/benchmarks.md).

    python -m bench                       # everything but the SQS part (~12 min here)
    python -m bench --sqs-endpoint URL    # also the SQS path (e.g. LocalStack)
    python -m bench --quick               # small sizes: a smoke test of the harness (~3 min)
    python -m bench --report-only         # re-render the report from the last results.json
    python -m bench core -n N -w W --json # one core run + its ceilings and baseline, as JSON
    python -m bench --dedupe              # also the dedupe window (adds ~10 min)
    python -m bench dedupe                # only the dedupe window at 10,000 msg/s (simulated
                                          # time); rewrites its section of docs/benchmarks.md
    python -m bench tokens                # only the token custody section: key file vs KMS
    python -m bench sqs -n N --json       # only the SQS path: flow vs bare drains, as JSON
                                          # (needs --endpoint or BENCH_SQS_ENDPOINT); rewrites
                                          # its section of docs/benchmarks.md

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

from bench import baselines, core, dedupe, profile, report, tokens
from bench.common import ROOT, Server, as_dict, config_for, dataset, flow_env, keys, log, median
from bench.generated import Dataset


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1_000_000, help="core path size")
    p.add_argument("--small", type=int, default=100_000, help="the memory-growth comparison size")
    p.add_argument(
        "--cost-small", type=int, default=50_000, help="the cost-per-message comparison size"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="repeats of the short measurements")
    p.add_argument("--naive-messages", type=int, default=10_000)
    p.add_argument("--latency-rate", type=float, default=500.0)
    p.add_argument("--latency-seconds", type=float, default=25.0)
    p.add_argument("--profile-messages", type=int, default=100_000)
    p.add_argument("--sqs-endpoint", default=os.environ.get("BENCH_SQS_ENDPOINT") or None)
    p.add_argument("--sqs-messages", type=int, default=40_000)
    p.add_argument("--py-spy", default=os.environ.get("PY_SPY") or None)
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--work", type=Path, default=ROOT / "bench" / ".work")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--chart", type=Path, default=ROOT / "docs" / "benchmarks.png")
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--dedupe", action="store_true", help="also the dedupe window (else its last section stays)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.small, args.cost_small, args.repeats = 50_000, 10_000, 5_000, 1
        args.naive_messages, args.latency_seconds, args.profile_messages = 1000, 5.0, 10_000
        args.sqs_messages = min(args.sqs_messages, 2000)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["core"]:
        return core_main(argv[1:])
    if argv[:1] == ["dedupe"]:
        return dedupe_main(argv[1:])
    if argv[:1] == ["tokens"]:
        return tokens.main(argv[1:])
    if argv[:1] == ["sqs"]:
        return sqs_main(argv[1:])
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
        rendered = report.carry_sections(args.out.read_text(), rendered)
    args.out.write_text(rendered)
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
        runs["cost_small_1w"] = [
            as_dict(core.run_flow(server, args.work, keyfiles, data, name=f"cost_{attempt}",
                                  messages=args.cost_small, workers=1)[0])
            for attempt in range(args.repeats)
        ]  # fmt: skip
        run, _ = core.run_flow(server, args.work, keyfiles, data, name="latency",
                               messages=int(args.latency_rate * args.latency_seconds),
                               workers=1, rate=args.latency_rate)  # fmt: skip
        runs["latency"] = as_dict(run)

        results["naive"] = as_dict(
            baselines.naive(server, config, data, args.naive_messages, args.repeats, NAIVE_SECONDS)
        )
        results["ceiling"] = as_dict(baselines.ceiling(server, config, rows_file, args.repeats))
        results["ceiling_exactly_once"] = as_dict(
            baselines.exactly_once_ceiling(server, config, rows_file, args.repeats)
        )
        rows_file.unlink()
        if args.dedupe:
            results["dedupe"] = dedupe.run(minutes=3.0 if args.quick else 12.0)

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

            result = sqs_path(server, args.work, keyfiles, data, args.sqs_endpoint,
                              args.sqs_messages, args.repeats)  # fmt: skip
            results["sqs"] = result.summary() | {"runs": as_dict([result.same, result.default])}
            from bench.sqscost import cpu_per_message, delayed

            cpu_sizes = (4000, min(24000, args.sqs_messages))  # the SQS path's CPU per message
            if cpu_sizes[1] > cpu_sizes[0]:
                results["sqs"]["cpu"] = cpu_per_message(server, args.work, keyfiles, data,
                                                        args.sqs_endpoint, *cpu_sizes,
                                                        args.repeats).summary()  # fmt: skip
            results["sqs"]["delayed"] = delayed(server, args.work, keyfiles, data,
                                                args.sqs_endpoint, min(8000, args.sqs_messages),
                                                args.repeats, 20.0).summary()  # fmt: skip
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


NAIVE_SECONDS = 15.0  # the baseline's speed is the disk's commit latency: bound its time


def core_main(argv: list[str]) -> int:
    """`python -m bench core -n N -w W [--json]`: the core path into a fresh database on the
    server (BENCH_DATABASE_URL, else embedded), then, in the same run, the exactly-once and
    bare COPY ceilings on its rows and the one-INSERT-per-message baseline."""
    p = argparse.ArgumentParser(prog="python -m bench core", description=core_main.__doc__)
    p.add_argument("-n", "--messages", type=int, default=1_000_000)
    p.add_argument("-w", "--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--baseline-messages", type=int, default=10_000)
    p.add_argument("--baseline-seconds", type=float, default=NAIVE_SECONDS)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--work", type=Path, default=ROOT / "bench" / ".work")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_start = os.getloadavg()[0]
    keyfiles = keys(args.work)
    server = Server(args.work, os.environ.get("BENCH_DATABASE_URL") or None, f"_{os.getpid()}")
    try:
        postgres = server.describe()
        data, _ = dataset(args.work, args.messages, args.seed)
        name = f"core_{args.workers}w"
        run, dsn = core.run_flow(server, args.work, keyfiles, data, name=name,
                                 messages=args.messages, workers=args.workers,
                                 keep_database=True)  # fmt: skip
        config = config_for(flow_env(keyfiles, dsn))
        rows_file = args.work / f"{name}-rows.copy"
        baselines.export_rows(dsn, config, rows_file)
        server.drop_database(f"bench_{name}")
        eo = baselines.exactly_once_ceiling(server, config, rows_file, 1)
        bare = baselines.ceiling(server, config, rows_file, 1)
        rows_file.unlink()
        naive = baselines.naive(server, config, data, min(args.messages, args.baseline_messages), 1,
                                args.baseline_seconds)  # fmt: skip
    finally:
        server.stop()
    out = core_summary(run, eo, bare, naive) | {
        "postgres": postgres,
        "git": git(),
        "load_average": [load_start, os.getloadavg()[0]],
        "seconds": round(time.time() - started, 1),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key}: {value}")
    return 0


def core_summary(
    run: core.FlowRun, eo: baselines.Repeated, bare: baselines.Repeated, naive: baselines.Repeated
) -> dict[str, Any]:
    """The figures of one core run beside its ceilings and baseline, all from the same run."""
    n = run.messages
    rows = run.ledger.outcomes.get("row", 0)
    return {
        "messages": n,
        "workers": run.workers,
        "msgs_per_s": round(run.msgs_per_s, 1),
        "rows_per_s": round(run.msgs_per_s * rows / max(run.ledger.total, 1), 1),
        "exact": run.exact,
        "outcomes": run.ledger.outcomes,
        "resends_missed": run.resends_missed,
        "ceiling_rows_per_s": round(eo.median, 1),
        "vs_ceiling": round(run.msgs_per_s / eo.median, 4),
        "bare_copy_rows_per_s": round(bare.median, 1),
        "baseline_msgs_per_s": round(naive.median, 1),
        "baseline_messages": naive.items,
        "vs_baseline": round(run.msgs_per_s / naive.median, 2),
        "flow_cpu_us_per_msg": _us_each(run.process.cpu_seconds, n),
        "postgres_cpu_us_per_msg": _us_each(run.postgres_cpu_seconds, n),
        "wal_bytes_per_msg": None if run.wal_bytes is None else round(run.wal_bytes / n, 1),
        "ceiling_wal_bytes_per_row": round(median(eo.wal_bytes) / eo.items, 1)
        if eo.wal_bytes
        else None,
        "ceiling_postgres_cpu_us_per_row": _us_each(_median_or_none(eo.postgres_cpu), eo.items),
        # the run's and the ceiling's own backends only (the server may be shared)
        "backend_cpu_us_per_msg": _us_each(run.backend_cpu_seconds, n),
        "ceiling_backend_cpu_us_per_row": _us_each(_median_or_none(eo.backend_cpu), eo.items),
        "peak_rss_mb": round(run.process.peak_rss_mb, 1),
    }


def _us_each(seconds: float | None, count: int) -> float | None:
    """CPU seconds as µs per message (or row), rounded; None when not measured."""
    return None if seconds is None else round(seconds / count * 1e6, 2)


def _median_or_none(values: list[float]) -> float | None:
    return median(values) if values else None


def sqs_main(argv: list[str]) -> int:
    """`python -m bench sqs -n N [--json]`: only the SQS path (bench/sqs.py): the flow against
    bare drains with the same receivers and with four, repeated and interleaved, into fresh
    databases on the server (BENCH_DATABASE_URL, else embedded); prints both ratios."""
    from bench.sqs import sqs_path

    p = argparse.ArgumentParser(prog="python -m bench sqs", description=sqs_main.__doc__)
    p.add_argument("--endpoint", default=os.environ.get("BENCH_SQS_ENDPOINT") or None)
    p.add_argument("-n", "--messages", type=int, default=40_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--work", type=Path, default=ROOT / "bench" / ".work")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite the SQS section")
    p.add_argument("--no-pairs", action="store_true", help="skip the flow-vs-drain rate pairs")
    p.add_argument(
        "--cpu-sizes",
        default="4000,24000",
        help="SMALL,LARGE: the flow's marginal CPU per message between them ('' skips)",
    )
    p.add_argument(
        "--delay-ms",
        type=float,
        default=20.0,
        help="the fault proxy holds each call this long (0 skips)",
    )
    p.add_argument("--delay-messages", type=int, default=10_000)
    p.add_argument(
        "--flow-source",
        default="",
        help="KEY=VALUE,... overriding the flow's source: keys in the CPU runs",
    )
    args = p.parse_args(argv)
    if not args.endpoint:
        p.error("give --endpoint or BENCH_SQS_ENDPOINT (e.g. LocalStack's http://127.0.0.1:4566)")
    args.work.mkdir(parents=True, exist_ok=True)
    started, load_start, commit = time.time(), os.getloadavg()[0], git()
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    keyfiles = keys(args.work)
    server = Server(args.work, os.environ.get("BENCH_DATABASE_URL") or None, f"_{os.getpid()}")
    try:
        sizes = [int(x) for x in args.cpu_sizes.split(",") if x]
        most = max([args.messages, args.delay_messages, *sizes])
        data, _ = dataset(args.work, most + 100, args.seed)  # room for refused bodies
        figures: dict[str, Any] = {}
        if sizes:
            from bench.sqscost import cpu_per_message

            source = dict(kv.split("=", 1) for kv in args.flow_source.split(",") if kv)
            cpu = cpu_per_message(server, args.work, keyfiles, data, args.endpoint, sizes[0],
                                  sizes[1], args.repeats, source)  # fmt: skip
            figures["cpu"] = cpu.summary()
        if args.delay_ms:
            from bench.sqscost import delayed

            figures["delayed"] = delayed(server, args.work, keyfiles, data, args.endpoint,
                                         args.delay_messages, args.repeats,
                                         args.delay_ms).summary()  # fmt: skip
        if not args.no_pairs:
            figures |= sqs_path(server, args.work, keyfiles, data, args.endpoint, args.messages,
                                args.repeats).summary()  # fmt: skip
    finally:
        server.stop()
    out = figures | {
        "command": " ".join(["python -m bench sqs", *map(shlex.quote, argv)]),
        "started": date,
        "git": commit,
        "load_average": [load_start, os.getloadavg()[0]],
        "seconds": round(time.time() - started, 1),
    }
    (args.work / "sqs.json").write_text(json.dumps(out, indent=1))
    if not args.no_doc and not args.no_pairs:
        text = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(report.with_section(text, "sqs", report.sqs_section(out)))
        log(f"wrote the SQS section of {args.out}")
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key}: {value}")
    exact = [out.get("exact", True), *(out[k]["exact"] for k in ("cpu", "delayed") if k in out)]
    return 0 if all(exact) else 1


def dedupe_main(argv: list[str]) -> int:
    """`python -m bench dedupe`: the dedupe window at full rate (bench/dedupe.py); writes
    bench/.work/dedupe.json and rewrites the dedupe section of docs/benchmarks.md."""
    p = argparse.ArgumentParser(prog="python -m bench dedupe", description=dedupe_main.__doc__)
    p.add_argument("--rate", type=float, default=10_000.0, help="messages/s of simulated time")
    p.add_argument("--minutes", type=float, default=12.0, help="simulated minutes")
    p.add_argument("--work", type=Path, default=ROOT / "bench" / ".work")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--report-only", action="store_true", help="re-render the last dedupe.json")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    saved = args.work / "dedupe.json"
    if args.report_only:
        results = json.loads(saved.read_text())
    else:
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        load, commit = os.getloadavg()[0], git()  # the code that runs, before it runs
        results = dedupe.run(args.rate, args.minutes) | {
            "command": " ".join(["python -m bench dedupe", *map(shlex.quote, argv)]),
            "started": started,
            "git": commit,
            "load_average": [load, os.getloadavg()[0]],
        }
        saved.write_text(json.dumps(results, indent=1))
    text = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(report.with_section(text, "dedupe", report.dedupe_section(results)))
    log(f"wrote the dedupe section of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
