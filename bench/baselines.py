"""The reference points, on the same data as the pipeline:

* the common hand-written loader: per message json.loads, unkeyed SHA-256 hex of ip and
  device_id, one INSERT and one COMMIT (psycopg), into the analysts' table;
* the exactly-once ceiling: the pipeline's own output rows (read back from its table) COPYed
  into a stage and inserted with ON CONFLICT DO NOTHING into the project's own row and ledger
  tables (created by its migrations, so with their real keys and indexes), in transactions
  of the pipeline's batch size: what idempotent, ledgered writes of these rows cost on this
  server, with no validation, tokens or vault;
* the bare ceiling: the same rows written with a bare COPY into a table with the same
  columns and nothing else: no ledger, index or constraint.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql

from bench.common import Server, backend_cpu_seconds, log, median
from bench.generated import Dataset
from connectors.postgres.migrations import migrate
from connectors.postgres.schema import Column, table_schema
from logins.core.config import AppConfig


@dataclass
class Repeated:
    name: str
    items: int  # messages (baseline) or rows (ceiling) per repeat
    rates: list[float]  # items/s of each repeat
    wal_bytes: list[int] = field(default_factory=list)  # WAL the server wrote, per repeat
    # the server's CPU seconds per repeat (Server.cpu_seconds; empty if not on this machine)
    postgres_cpu: list[float] = field(default_factory=list)
    backend_cpu: list[float] = field(default_factory=list)  # its own connection's, per repeat

    @property
    def median(self) -> float:
        return median(self.rates)


def _published(config: AppConfig) -> list[Column]:
    """The analysts' table as the producer team published it (the shipped config's
    `sink.published_columns`): what the hand-written loader fills."""
    return [c for c in table_schema(config).ddl if c.name in config.sink.published_columns]


def naive(
    server: Server,
    config: AppConfig,
    data: Path,
    messages: int,
    repeats: int,
    max_seconds: float | None = None,
) -> Repeated:
    """`max_seconds` bounds each repeat: its speed is the disk's commit latency."""
    dsn = server.fresh_database("bench_naive")
    dataset = Dataset(data)
    try:
        bodies = [body for _, body in dataset.iter_bodies(messages)]
    finally:
        dataset.close()
    published = _published(config)
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type)) for c in published
    )
    insert = sql.SQL("INSERT INTO naive_logins ({}) VALUES ({})").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in published),
        sql.SQL(", ").join(sql.Placeholder() * len(published)),
    )
    rates = []
    with psycopg.connect(dsn) as conn:
        for attempt in range(repeats):
            conn.execute("DROP TABLE IF EXISTS naive_logins")
            conn.execute(sql.SQL("CREATE TABLE naive_logins ({})").format(columns))
            conn.commit()
            started = time.perf_counter()
            done = _naive_load(conn, insert, bodies, max_seconds)
            rates.append(done / (time.perf_counter() - started))
            log(f"naive baseline {attempt + 1}/{repeats}: {rates[-1]:,.0f} msg/s")
    server.drop_database("bench_naive")
    return Repeated("one INSERT + COMMIT per message", len(bodies), rates)


def _sha256(value: object) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()


def _naive_load(
    conn: psycopg.Connection, insert: sql.Composed, bodies: list[str], max_seconds: float | None
) -> int:
    """What the usual hand-written solution does: parse, hash, insert, commit, next. Returns
    how many bodies it went through (all, or those within `max_seconds`)."""
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds
    done = 0
    with conn.cursor() as cur:
        for body in bodies:
            if deadline is not None and done % 100 == 0 and time.perf_counter() > deadline:
                break
            done += 1
            try:
                m = json.loads(body)
                row = (
                    m["user_id"],
                    m["device_type"],
                    _sha256(m["ip"]),
                    _sha256(m["device_id"]),
                    m.get("locale"),
                    int(str(m["app_version"]).replace(".", "")),
                    date.today(),
                )
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                continue  # it drops what it cannot parse
            try:
                cur.execute(insert, row)
                conn.commit()
            except psycopg.Error:
                conn.rollback()
    return done


def export_rows(dsn: str, config: AppConfig, path: Path) -> int:
    """The pipeline's output rows (its row columns) as COPY text, one row per line."""
    names = [c.name for c in table_schema(config).row]
    query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
        sql.SQL(", ").join(sql.Identifier(n) for n in names), sql.Identifier(config.sink.table)
    )
    rows = 0
    with (
        psycopg.connect(dsn) as conn,
        conn.cursor() as cur,
        path.open("wb") as out,
        cur.copy(query) as copy,
    ):
        for chunk in copy:
            out.write(chunk)
            rows += bytes(chunk).count(b"\n")
    return rows


def ceiling(
    server: Server, config: AppConfig, rows_file: Path, repeats: int, batch: int = 1000
) -> Repeated:
    dsn = server.fresh_database("bench_ceiling")
    names = [c.name for c in table_schema(config).row]
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type))
        for c in table_schema(config).row
    )
    copy_sql = sql.SQL("COPY ceiling_logins ({}) FROM STDIN").format(
        sql.SQL(", ").join(sql.Identifier(n) for n in names)
    )
    chunks = _chunks(rows_file, batch)
    rates = []
    with psycopg.connect(dsn) as conn:
        for attempt in range(repeats):
            conn.execute("DROP TABLE IF EXISTS ceiling_logins")
            conn.execute(sql.SQL("CREATE TABLE ceiling_logins ({})").format(columns))
            conn.commit()
            started = time.perf_counter()
            with conn.cursor() as cur:
                for chunk in chunks:
                    with cur.copy(copy_sql) as copy:
                        copy.write(chunk)
                    conn.commit()
            elapsed = time.perf_counter() - started
            rows = conn.execute("SELECT count(*) FROM ceiling_logins").fetchone()
            assert rows is not None
            rates.append(int(rows[0]) / elapsed)
            log(f"ceiling {attempt + 1}/{repeats}: {rates[-1]:,.0f} rows/s")
    server.drop_database("bench_ceiling")
    return Repeated(
        f"bare COPY, {batch} rows per transaction", sum(c.count(b"\n") for c in chunks), rates
    )


def exactly_once_ceiling(
    server: Server, config: AppConfig, rows_file: Path, repeats: int, batch: int | None = None
) -> Repeated:
    """The pipeline's rows, per transaction of `batch` (the source's batch size): COPY text
    into a stage, then one statement claims the ids in the ledger and inserts the claimed
    rows, both `ON CONFLICT DO NOTHING`, into the tables `migrate` made (their real keys)."""
    batch = batch or config.source.max_batch
    dsn = server.fresh_database("bench_ceiling_eo")
    sink = config.sink
    names = [c.name for c in table_schema(config).row]
    chunks = _chunks(rows_file, batch)
    rates: list[float] = []
    wal: list[int] = []
    cpu: list[float] = []
    own: list[float] = []
    with psycopg.connect(dsn) as conn:
        for attempt in range(repeats):
            for table in (sink.table, sink.ledger_table):
                conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table))
                )
            migrate(conn, config)
            types = _column_types(conn, sink.ledger_table)
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS ceiling_stage ON COMMIT DELETE ROWS"
                    " AS SELECT {} FROM {} LIMIT 0"
                ).format(_ids(names), sql.Identifier(sink.table))
            )
            conn.commit()
            copy_sql = sql.SQL("COPY ceiling_stage ({}) FROM STDIN").format(_ids(names))
            insert = sql.SQL(
                "WITH claimed AS (INSERT INTO {ledger} (message_id, outcome, sent_at)"
                " SELECT message_id::{id_type}, 'row', sent_at::{sent_type} FROM ceiling_stage"
                " ON CONFLICT DO NOTHING RETURNING message_id)"
                " INSERT INTO {table} ({rows}) SELECT {s_rows} FROM ceiling_stage s"
                " JOIN claimed c ON c.message_id = s.message_id::{id_type}"
                " ON CONFLICT DO NOTHING"
            ).format(
                ledger=sql.Identifier(sink.ledger_table),
                table=sql.Identifier(sink.table),
                id_type=sql.SQL(types["message_id"]),
                sent_type=sql.SQL(types["sent_at"]),
                rows=_ids(names),
                s_rows=sql.SQL(", ").join(sql.Identifier("s", n) for n in names),
            )
            wal_before = server.wal_lsn()
            cpu_before = server.cpu_seconds()
            own_before = backend_cpu_seconds(conn.info.backend_pid)
            started = time.perf_counter()
            with conn.cursor() as cur:
                for chunk in chunks:
                    with cur.copy(copy_sql) as copy:
                        copy.write(chunk)
                    cur.execute(insert)
                    conn.commit()
            elapsed = time.perf_counter() - started
            cpu_after = server.cpu_seconds()  # this connection's backend is a live child
            own_after = backend_cpu_seconds(conn.info.backend_pid)
            if cpu_before is not None and cpu_after is not None:
                cpu.append(cpu_after - cpu_before)
            if own_before is not None and own_after is not None:
                own.append(own_after - own_before)
            wal.append(server.wal_bytes(wal_before))
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(sink.table))
            ).fetchone()
            assert row is not None
            rates.append(int(row[0]) / elapsed)
            log(f"exactly-once ceiling {attempt + 1}/{repeats}: {rates[-1]:,.0f} rows/s")
    server.drop_database("bench_ceiling_eo")
    return Repeated(
        f"COPY into a stage + INSERT ON CONFLICT into the row and ledger tables, {batch} rows"
        " per transaction",
        sum(c.count(b"\n") for c in chunks),
        rates,
        wal,
        cpu,
        own,
    )


def _chunks(rows_file: Path, batch: int) -> list[bytes]:
    lines = rows_file.read_bytes().splitlines(keepends=True)
    return [b"".join(lines[i : i + batch]) for i in range(0, len(lines), batch)]


def _ids(names: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _column_types(conn: psycopg.Connection, table: str) -> dict[str, str]:
    """Column -> its type as the catalog spells it (`format_type`), so the ceiling casts to
    whatever key types the migrations chose."""
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (sql.Identifier(table).as_string(conn),),
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows}
