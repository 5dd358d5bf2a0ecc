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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from statistics import median
from typing import Any

import psycopg
from psycopg import sql

from bench.common import log
from bench.generated import Dataset
from bench.server import Server
from connectors.postgres.migrations import migrate
from connectors.postgres.schema import Column, table_schema
from logins.core.config import AppConfig

NAIVE_SECONDS = 15.0  # the baseline's speed is the disk's commit latency: bound its time
Conn = psycopg.Connection[Any]


@dataclass
class Repeated:
    name: str
    items: int  # messages (baseline) or rows (ceiling) per repeat
    rates: list[float] = field(default_factory=list)  # items/s of each repeat
    wal_bytes: list[int] = field(default_factory=list)  # WAL the server wrote, per repeat
    # the server's CPU seconds per repeat (Server.cpu_seconds; empty if not on this machine)
    postgres_cpu: list[float] = field(default_factory=list)
    backend_cpu: list[float] = field(default_factory=list)  # its own connection's, per repeat

    @property
    def median(self) -> float:
        return median(self.rates)


def _repeat(
    server: Server,
    database: str,
    result: Repeated,
    repeats: int,
    setup: Callable[[Conn], None],
    load: Callable[[Conn], int],
    count: Callable[[Conn, int], int],
) -> Repeated:
    """`repeats` times on a fresh database: `setup` (committed), then `load` timed, with the
    WAL the server wrote, its CPU and the loading connection's own; `count` gives the items
    loaded (from `load`'s return or the table). The database is dropped at the end."""
    dsn = server.fresh_database(database)
    with psycopg.connect(dsn) as conn:
        for attempt in range(repeats):
            setup(conn)
            conn.commit()
            with server.measured(conn) as got:  # this connection's backend is a live child
                loaded = load(conn)
            for key, into in (("server_cpu", result.postgres_cpu),
                              ("backend_cpu", result.backend_cpu)):  # fmt: skip
                if got[key] is not None:
                    into.append(got[key])
            result.wal_bytes.append(got["wal_bytes"])
            result.rates.append(count(conn, loaded) / got["seconds"])
            log(f"{result.name} {attempt + 1}/{repeats}: {result.rates[-1]:,.0f} items/s")
    server.drop_database(database)
    return result


def all_of(
    server: Server, config: AppConfig, data: Path, rows_file: Path, messages: int, repeats: int
) -> dict[str, Repeated]:
    """The baseline on the first `messages` of the data, then both ceilings on the rows."""
    return {
        "naive": naive(server, config, data, messages, repeats, NAIVE_SECONDS),
        "ceiling": ceiling(server, config, rows_file, repeats),
        "ceiling_exactly_once": exactly_once_ceiling(server, config, rows_file, repeats),
    }


def _published(config: AppConfig) -> list[Column]:
    """The analysts' table as the producer team published it (the shipped config's
    `sink.published_columns`): what the hand-written loader fills."""
    return [c for c in table_schema(config).ddl if c.name in config.sink.published_columns]


def _ids(names: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _create(table: str, columns: Sequence[Column]) -> Callable[[Conn], None]:
    """(Re)create `table` with `columns` and nothing else."""
    typed = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type)) for c in columns
    )

    def setup(conn: Conn) -> None:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), typed))

    return setup


def _rows_in(table: str) -> Callable[[Conn, int], int]:
    def count(conn: Conn, _: int) -> int:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        return int(row.fetchone()[0])  # type: ignore[index]

    return count


def naive(
    server: Server,
    config: AppConfig,
    data: Path,
    messages: int,
    repeats: int,
    max_seconds: float | None = None,
) -> Repeated:
    """`max_seconds` bounds each repeat: its speed is the disk's commit latency."""
    with Dataset(data) as dataset:
        bodies = [body for _, body in dataset.iter_bodies(messages)]
    published = _published(config)
    insert = sql.SQL("INSERT INTO naive_logins ({}) VALUES ({})").format(
        _ids([c.name for c in published]), sql.SQL(", ").join(sql.Placeholder() * len(published))
    )
    result = Repeated("one INSERT + COMMIT per message", len(bodies))
    return _repeat(server, "bench_naive", result, repeats, _create("naive_logins", published),
                   lambda conn: _naive_load(conn, insert, bodies, max_seconds),
                   lambda _, done: done)  # fmt: skip


def _sha256(value: object) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()


def _naive_load(
    conn: Conn, insert: sql.Composed, bodies: list[str], max_seconds: float | None
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
    query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
        _ids([c.name for c in table_schema(config).row]), sql.Identifier(config.sink.table)
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


def _chunks(rows_file: Path, batch: int) -> list[bytes]:
    lines = rows_file.read_bytes().splitlines(keepends=True)
    return [b"".join(lines[i : i + batch]) for i in range(0, len(lines), batch)]


def _copy_each(
    chunks: list[bytes], copy_sql: sql.Composed, then: sql.Composed | None = None
) -> Callable[[Conn], int]:
    """A load: each chunk COPYed in (then `then` run), one transaction per chunk."""

    def load(conn: Conn) -> int:
        with conn.cursor() as cur:
            for chunk in chunks:
                with cur.copy(copy_sql) as copy:
                    copy.write(chunk)
                if then is not None:
                    cur.execute(then)
                conn.commit()
        return 0

    return load


def ceiling(
    server: Server, config: AppConfig, rows_file: Path, repeats: int, batch: int = 1000
) -> Repeated:
    row = table_schema(config).row
    copy_sql = sql.SQL("COPY ceiling_logins ({}) FROM STDIN").format(_ids([c.name for c in row]))
    chunks = _chunks(rows_file, batch)
    result = Repeated(
        f"bare COPY, {batch} rows per transaction", sum(c.count(b"\n") for c in chunks)
    )
    return _repeat(server, "bench_ceiling", result, repeats, _create("ceiling_logins", row),
                   _copy_each(chunks, copy_sql), _rows_in("ceiling_logins"))  # fmt: skip


def exactly_once_ceiling(
    server: Server, config: AppConfig, rows_file: Path, repeats: int, batch: int | None = None
) -> Repeated:
    """The pipeline's rows, per transaction of `batch` (the source's batch size): COPY text
    into a stage, then one statement claims the ids in the ledger and inserts the claimed
    rows, both `ON CONFLICT DO NOTHING`, into the tables `migrate` made (their real keys)."""
    batch = batch or config.source.max_batch
    sink = config.sink
    names = [c.name for c in table_schema(config).row]
    chunks = _chunks(rows_file, batch)
    statements: dict[str, sql.Composed] = {}

    def setup(conn: Conn) -> None:
        for table in (sink.table, sink.ledger_table):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))
        migrate(conn, config)
        types = _column_types(conn, sink.ledger_table)
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS ceiling_stage ON COMMIT DELETE ROWS"
                " AS SELECT {} FROM {} LIMIT 0"
            ).format(_ids(names), sql.Identifier(sink.table))
        )
        statements["copy"] = sql.SQL("COPY ceiling_stage ({}) FROM STDIN").format(_ids(names))
        statements["insert"] = sql.SQL(
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

    result = Repeated(
        f"COPY into a stage + INSERT ON CONFLICT into the row and ledger tables, {batch} rows"
        " per transaction",
        sum(c.count(b"\n") for c in chunks),
    )
    return _repeat(server, "bench_ceiling_eo", result, repeats, setup,
                   lambda conn: _copy_each(chunks, statements["copy"], statements["insert"])(conn),
                   _rows_in(sink.table))  # fmt: skip


def _column_types(conn: Conn, table: str) -> dict[str, str]:
    """Column -> its type as the catalog spells it (`format_type`), so the ceiling casts to
    whatever key types the migrations chose."""
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (sql.Identifier(table).as_string(conn),),
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows}
