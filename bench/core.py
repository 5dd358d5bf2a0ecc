"""The pipeline itself: `python -m bytewax.run bench.flow -w N` (the production steps and sink,
fed by the in-process source) into a fresh database; throughput and latency from the ledger."""

from __future__ import annotations

import time
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median
from typing import Any

import psycopg
from psycopg import sql

from bench import baselines
from bench.common import (
    PYTHON,
    Ledger,
    ProcessResult,
    Rig,
    dataset,
    flow_env,
    log,
    prepare_schema,
    read_ledger,
    run_process,
    session,
    tail,
)
from bench.generated import kinds_of
from connectors.postgres.pool import Writers
from connectors.postgres.schema import table_schema
from logins.core.config import AppConfig, load_config


@dataclass
class FlowRun:
    name: str
    messages: int
    workers: int
    rate: float | None
    process: ProcessResult
    ledger: Ledger
    expected: dict[str, int]  # outcome -> count the dataset implies
    exact: bool  # every message exactly once; rejected = malformed; rows + duplicates = the rest
    msgs_per_s: float  # committed / (last commit - first SentTimestamp)
    latency_ms: dict[str, Any] | None = None
    # resends written as rows: dedupe did not see the original within its bounds (an
    # ordering matter, not a loss: `exact` already holds)
    resends_missed: int = 0
    postgres_cpu_seconds: float | None = None  # the server's CPU during the run, if local
    # the CPU of the run's own backends (its database's connections), if local: on a shared
    # server, postgres_cpu_seconds also counts everyone else's
    backend_cpu_seconds: float | None = None
    wal_bytes: int | None = None  # WAL the server wrote during the run (pg_current_wal_lsn)


def run_flow(
    rig: Rig,
    *,
    name: str,
    messages: int,
    workers: int,
    rate: float | None = None,
    timeout: float = 900,
    keep_database: bool = False,
    wrap: list[str] | None = None,
) -> tuple[FlowRun, str]:
    """One run of bench.flow; returns the result and the database's DSN (dropped unless kept)."""
    dbname = f"bench_{name}"
    server, work = rig.server, rig.work
    dsn = server.fresh_database(dbname)
    extra = {"BENCH_DATASET": str(rig.data), "BENCH_N": str(messages)}
    if rate is not None:
        extra["BENCH_RATE"] = str(rate)
    env = flow_env(rig.keys, dsn, **extra)
    config = load_config(env)
    prepare_schema(dsn, config)
    argv = [*(wrap or []), PYTHON, "-m", "bytewax.run", "bench.flow", "-w", str(workers)]
    log(
        f"{name}: {messages:,} messages, {workers} worker(s)"
        + (f", {rate:g} msg/s" if rate else "")
    )
    pg_before = server.cpu_seconds()
    wal_before = server.wal_lsn()
    with server.backends_cpu(dbname) as backends:
        process = run_process(argv, env, work / f"{name}.log", timeout)
    time.sleep(0.5)  # the flow's backends exit and are reaped
    pg_after = server.cpu_seconds()
    wal = server.wal_bytes(wal_before)
    if process.returncode != 0:
        raise RuntimeError(
            f"{name}: the flow exited {process.returncode}:\n{tail(process.log_path)}"
        )
    ledger = read_ledger(dsn, config)
    kinds = kinds_of(rig.data, messages)
    expected = {"row": kinds["valid"], "rejected": kinds["malformed"], "duplicate": kinds["resend"]}
    exact = accounted(ledger.total, ledger.outcomes, messages, expected)
    missed = expected["duplicate"] - ledger.outcomes.get("duplicate", 0)
    elapsed = (ledger.last_commit or 0) - (ledger.first_sent or 0)
    result = FlowRun(
        name, messages, workers, rate, process, ledger, expected, exact,
        ledger.total / elapsed if elapsed > 0 else 0.0, resends_missed=missed,
        postgres_cpu_seconds=None if pg_before is None or pg_after is None
        else pg_after - pg_before, wal_bytes=wal, backend_cpu_seconds=backends.seconds,
    )  # fmt: skip
    if rate is not None:
        result.latency_ms = latency(dsn, config.sink.ledger_table)
    log(
        f"{name}: {result.msgs_per_s:,.0f} msg/s committed, peak RSS {process.peak_rss_mb:.0f} MB,"
        f" ledger {'exact' if exact else 'NOT EXACT: ' + str(ledger.outcomes)},"
        f" {missed:,} resends written as rows, {wal / max(messages, 1):,.0f} WAL bytes/msg"
    )
    if not keep_database:
        server.drop_database(dbname)
    return result, dsn


def accounted(
    total: int, outcomes: dict[str, int], messages: int, expected: dict[str, int]
) -> bool:
    """The ledger's accounting is exact: each message once, each malformed one rejected, and
    every other one a row or a recognised duplicate. (Whether a resend is recognised depends
    on dedupe seeing its original first, within its bounds: reported apart, not a loss.)"""
    return (
        total == messages
        and outcomes.get("rejected", 0) == expected["rejected"]
        and outcomes.get("row", 0) + outcomes.get("duplicate", 0)
        == expected["row"] + expected["duplicate"]
    )


def latency(dsn: str, ledger_table: str, warmup_seconds: float = 1.0) -> dict[str, Any]:
    """SentTimestamp (stamped at emission) to the ledger row's clock_timestamp(), in ms, for
    the messages sent after the first `warmup_seconds` of the run."""
    query = sql.SQL(
        "WITH l AS (SELECT extract(epoch FROM committed_at - sent_at) * 1000 AS ms FROM {t}"
        " WHERE sent_at >= (SELECT min(sent_at) FROM {t}) + make_interval(secs => %s))"
        " SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),"
        " percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms),"
        " percentile_cont(%s::float8[]) WITHIN GROUP (ORDER BY ms) FROM l"
    ).format(t=sql.Identifier(ledger_table))
    fractions = [i / 100 for i in range(101)]
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query, (warmup_seconds, fractions)).fetchone()
    assert row is not None
    count, p50, p99, worst, cdf = row
    return {
        "count": float(count),
        "p50": float(p50),
        "p99": float(p99),
        "max": float(worst),
        "percentiles": [float(x) for x in cdf],  # 0th, 1st, ..., 100th
    }


def statement_costs(dsn: str, config: AppConfig, batches: int = 5) -> dict[str, float]:
    """ms per 1,000 rows of the sink's statements, on the database a run left behind: new
    message ids and tokens staged as the sink stages them, then the claim-and-insert
    statement, the vault insert and the commit; and, for scale, the same 1,000 rows inserted
    into a table with the same columns and no index. Median of `batches`."""
    statements = Writers.for_config(config, check_schema=False).writer().statements
    table, vault = sql.Identifier(config.sink.table), sql.Identifier(config.vault.table)
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in table_schema(config).row)
    stage_rows = sql.SQL(
        "INSERT INTO stage_events ({c}, _outcome, _receive_count) SELECT {r}, 'row', 1 FROM {t}"
        " LIMIT 1000"
    ).format(c=columns, t=table, r=sql.SQL(", ").join(
        sql.SQL("md5(random()::text)") if c.name == "message_id" else sql.Identifier(c.name)
        for c in table_schema(config).row
    ))  # fmt: skip
    stage_vault = sql.SQL(
        "INSERT INTO stage_vault SELECT 'bench.' || md5(random()::text), field, sealed,"
        " vault_key_id FROM {} LIMIT 1000"
    ).format(vault)
    times: dict[str, list[float]] = {"insert": [], "insert_vault": [], "commit": [], "plain": []}
    with psycopg.connect(dsn) as conn:
        conn.execute(statements["create_stage"])
        conn.execute(
            sql.SQL("CREATE TEMP TABLE bench_plain AS SELECT {} FROM {} LIMIT 0").format(
                columns, table
            )
        )
        conn.commit()
        plain = sql.SQL("INSERT INTO bench_plain SELECT {} FROM stage_events").format(columns)

        def ms(key: str, run: Callable[[], object]) -> None:
            started = time.perf_counter()
            run()
            times[key].append((time.perf_counter() - started) * 1000)

        for _ in range(batches):
            conn.execute(stage_rows)
            conn.execute(stage_vault)
            for key in ("insert", "insert_vault"):
                ms(key, lambda key=key: conn.execute(statements[key]))  # type: ignore[misc]
            ms("commit", conn.commit)
            conn.execute(stage_rows)
            ms("plain", lambda: conn.execute(plain))
            conn.rollback()
    return {key: median(values) for key, values in times.items()}


def alone(args: Namespace) -> dict[str, Any]:
    """`python -m bench core -n N -w W [--json]`: the core path into a fresh database on the
    server (BENCH_DATABASE_URL, else embedded), then, in the same run, the exactly-once and
    bare COPY ceilings on its rows and the one-INSERT-per-message baseline."""
    with session(args.work) as (server, keyfiles):
        postgres = server.describe()
        data, _ = dataset(args.work, args.messages, args.seed)
        name = f"core_{args.workers}w"
        run, dsn = run_flow(Rig(server, args.work, keyfiles, data), name=name,
                            messages=args.messages, workers=args.workers,
                            keep_database=True)  # fmt: skip
        config = load_config(flow_env(keyfiles, dsn))
        rows_file = args.work / f"{name}-rows.copy"
        baselines.export_rows(dsn, config, rows_file)
        server.drop_database(f"bench_{name}")
        eo = baselines.exactly_once_ceiling(server, config, rows_file, 1)
        bare = baselines.ceiling(server, config, rows_file, 1)
        rows_file.unlink()
        naive = baselines.naive(server, config, data, min(args.messages, args.baseline_messages),
                                1, args.baseline_seconds)  # fmt: skip
    return summary(run, eo, bare, naive) | {"postgres": postgres}


def summary(
    run: FlowRun, eo: baselines.Repeated, bare: baselines.Repeated, naive: baselines.Repeated
) -> dict[str, Any]:
    """The figures of one core run beside its ceilings and baseline, all from the same run."""
    n = run.messages
    rows = run.ledger.outcomes.get("row", 0)

    def each(seconds: float | None, count: int) -> float | None:  # CPU s as µs per item
        return None if seconds is None else round(seconds / count * 1e6, 2)

    def eo_median(values: list[float]) -> float | None:
        return median(values) if values else None

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
        "flow_cpu_us_per_msg": each(run.process.cpu_seconds, n),
        "postgres_cpu_us_per_msg": each(run.postgres_cpu_seconds, n),
        "wal_bytes_per_msg": None if run.wal_bytes is None else round(run.wal_bytes / n, 1),
        "ceiling_wal_bytes_per_row": round(median(eo.wal_bytes) / eo.items, 1)
        if eo.wal_bytes
        else None,
        "ceiling_postgres_cpu_us_per_row": each(eo_median(eo.postgres_cpu), eo.items),
        # the run's and the ceiling's own backends only (the server may be shared)
        "backend_cpu_us_per_msg": each(run.backend_cpu_seconds, n),
        "ceiling_backend_cpu_us_per_row": each(eo_median(eo.backend_cpu), eo.items),
        "peak_rss_mb": round(run.process.peak_rss_mb, 1),
    }
