"""The two reference points, on the same data as the pipeline:

* the common hand-written loader: per message json.loads, unkeyed SHA-256 hex of ip and
  device_id, one INSERT and one COMMIT (psycopg), into the analysts' table;
* the ceiling: the pipeline's own output rows (read back from its table) written with a bare
  COPY, in transactions of the pipeline's batch size, into a table with the same columns and
  nothing else: no validation, tokens, vault, ledger, index or constraint.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql

from bench.common import Server, log, median
from connectors.schema import Column, table_schema
from logins.config import AppConfig
from logins.dev.generated import Dataset


@dataclass
class Repeated:
    name: str
    items: int  # messages (baseline) or rows (ceiling) per repeat
    rates: list[float]  # items/s of each repeat

    @property
    def median(self) -> float:
        return median(self.rates)


def _published(config: AppConfig) -> list[Column]:
    """The analysts' table as the producer team published it (the shipped config's
    `sink.published_columns`): what the hand-written loader fills."""
    return [c for c in table_schema(config).ddl if c.name in config.sink.published_columns]


def naive(server: Server, config: AppConfig, data: Path, messages: int, repeats: int) -> Repeated:
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
            _naive_load(conn, insert, bodies)
            rates.append(len(bodies) / (time.perf_counter() - started))
            log(f"naive baseline {attempt + 1}/{repeats}: {rates[-1]:,.0f} msg/s")
    server.drop_database("bench_naive")
    return Repeated("one INSERT + COMMIT per message", len(bodies), rates)


def _sha256(value: object) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()


def _naive_load(conn: psycopg.Connection, insert: sql.Composed, bodies: list[str]) -> None:
    """What the usual hand-written solution does: parse, hash, insert, commit, next."""
    with conn.cursor() as cur:
        for body in bodies:
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
    lines = rows_file.read_bytes().splitlines(keepends=True)
    chunks = [b"".join(lines[i : i + batch]) for i in range(0, len(lines), batch)]
    del lines
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
