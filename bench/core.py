"""The pipeline itself: `python -m bytewax.run bench.flow -w N` (the production steps and sink,
fed by the in-process source) into a fresh database; throughput and latency from the ledger."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import (
    PYTHON,
    Ledger,
    ProcessResult,
    Server,
    config_for,
    flow_env,
    log,
    median,
    prepare_schema,
    read_ledger,
    run_process,
    tail,
    timed,
)
from bench.generated import kinds_of
from connectors.postgres.pool import Writers
from connectors.postgres.schema import table_schema
from logins.core.config import AppConfig


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
    server: Server,
    work: Path,
    keyfiles: dict[str, Path],
    data: Path,
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
    dsn = server.fresh_database(dbname)
    extra = {"BENCH_DATASET": str(data), "BENCH_N": str(messages)}
    if rate is not None:
        extra["BENCH_RATE"] = str(rate)
    env = flow_env(keyfiles, dsn, **extra)
    config = config_for(env)
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
    kinds = kinds_of(data, messages)
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
        for _ in range(batches):
            conn.execute(stage_rows)
            conn.execute(stage_vault)
            for key in ("insert", "insert_vault"):
                with timed() as took:
                    conn.execute(statements[key])
                times[key].append(took[0] * 1000)
            with timed() as took:
                conn.commit()
            times["commit"].append(took[0] * 1000)
            conn.execute(stage_rows)
            with timed() as took:
                conn.execute(
                    sql.SQL("INSERT INTO bench_plain SELECT {} FROM stage_events").format(columns)
                )
            times["plain"].append(took[0] * 1000)
            conn.rollback()
    return {key: median(values) for key, values in times.items()}
