"""Postgres sink: one transaction per batch for rows, rejected rows, duplicates and vault
entries; the batch's messages are deleted from SQS only after that transaction committed.

Write path: COPY the batch into a temporary staging table, then one statement claims each
message id in the ledger (`ON CONFLICT DO NOTHING`) and inserts into the outcome table only
the ids it claimed. So a redelivered message, whatever the dedupe step thought this time,
has no effect, and every message id is in exactly one of: rows, rejected, duplicates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from psycopg import sql
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from connectors.migrations import Column, migrate, row_columns
from flows.steps.mask import SealCache
from logins import metrics
from logins.config import AppConfig
from logins.records import Event, SqsMessage, VaultEntry
from logins.telemetry import tracer

log = logging.getLogger(__name__)


class Deleter(Protocol):
    def delete(self, messages: Sequence[SqsMessage]) -> int: ...


class DatabaseUnavailable(RuntimeError):
    """The database stayed away longer than `sink.retry.give_up_after_seconds`."""


@dataclass(frozen=True)
class BatchResult:
    rows: int
    rejected: int
    duplicates: int
    redelivered: int
    vault_entries: int


_DELIVERY = [
    Column("outcome", "text"),
    Column("receive_count", "integer"),
    Column("reason", "text"),
    Column("detail", "text"),
    Column("sealed_body", "bytea"),
    Column("vault_key_id", "text"),
    Column("duplicate_of", "text"),
]


def _ids(names: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


class PostgresWriter:
    """A connection and the batch write path, retried with capped exponential backoff and
    full jitter (tenacity) while the database is unavailable."""

    def __init__(self, config: AppConfig) -> None:
        self._config = config
        self._row_columns = row_columns(config)
        self._stage_columns = [*self._row_columns, *_DELIVERY]
        self._conn: psycopg.Connection[Any] | None = None
        self._statements = self._build_statements()

    # -- statements ---------------------------------------------------------------------------

    def _build_statements(self) -> dict[str, sql.Composed | sql.SQL]:
        sink, vault = self._config.sink, self._config.vault
        stage_names = [c.name for c in self._stage_columns]
        row_names = [c.name for c in self._row_columns]
        stage_ddl = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type))
            for c in self._stage_columns
        )
        claimed = sql.SQL(
            "FROM stage_events s JOIN claimed c USING (message_id) WHERE c.outcome = "
        )
        return {
            "create_stage": sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS stage_events ({}) ON COMMIT DELETE ROWS;"
                "CREATE TEMP TABLE IF NOT EXISTS stage_vault (token text, field text,"
                " sealed bytea, vault_key_id text) ON COMMIT DELETE ROWS"
            ).format(stage_ddl),
            "copy_events": sql.SQL("COPY stage_events ({}) FROM STDIN").format(_ids(stage_names)),
            "copy_vault": sql.SQL(
                "COPY stage_vault (token, field, sealed, vault_key_id) FROM STDIN"
            ),
            "insert": sql.SQL(
                "WITH claimed AS ("
                " INSERT INTO {ledger} (message_id, outcome, sent_at)"
                " SELECT message_id, outcome, sent_at FROM stage_events"
                " ON CONFLICT (message_id) DO NOTHING RETURNING message_id, outcome),"
                " ins_rows AS (INSERT INTO {table} ({rows}) SELECT {s_rows} {claimed}'row'"
                "  ON CONFLICT (message_id) DO NOTHING RETURNING 1),"
                " ins_rejected AS (INSERT INTO {rejected} (message_id, reason, detail,"
                "  sealed_body, vault_key_id, sent_at, create_date, receive_count)"
                "  SELECT s.message_id, s.reason, s.detail, s.sealed_body, s.vault_key_id,"
                "  s.sent_at, s.create_date, s.receive_count {claimed}'rejected'"
                "  ON CONFLICT (message_id) DO NOTHING RETURNING 1),"
                " ins_duplicates AS (INSERT INTO {duplicates} (message_id, duplicate_of,"
                "  sent_at, create_date)"
                "  SELECT s.message_id, s.duplicate_of, s.sent_at, s.create_date"
                "  {claimed}'duplicate' ON CONFLICT (message_id) DO NOTHING RETURNING 1)"
                " SELECT (SELECT count(*) FROM ins_rows), (SELECT count(*) FROM ins_rejected),"
                " (SELECT count(*) FROM ins_duplicates)"
            ).format(
                ledger=sql.Identifier(sink.ledger_table),
                table=sql.Identifier(sink.table),
                rows=_ids(row_names),
                s_rows=sql.SQL(", ").join(sql.Identifier("s", n) for n in row_names),
                claimed=claimed,
                rejected=sql.Identifier(sink.rejected_table),
                duplicates=sql.Identifier(sink.duplicates_table),
            ),
            "insert_vault": sql.SQL(
                "WITH ins AS (INSERT INTO {} (token, field, sealed, vault_key_id)"
                " SELECT token, field, sealed, vault_key_id FROM stage_vault"
                " ON CONFLICT (token) DO NOTHING RETURNING 1) SELECT count(*) FROM ins"
            ).format(sql.Identifier(vault.table)),
        }

    # -- connection ---------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(
                self._config.sink.dsn.get_secret_value(),
                application_name="logins-etl",
                connect_timeout=10,
            )
            if self._config.sink.migrate:
                migrate(conn, self._config)
            conn.execute(self._statements["create_stage"])
            conn.commit()
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        self._drop_connection()

    def connect(self) -> None:
        """Connect (and migrate) now, with the same retries as a write."""
        self._retrying()(self._connection)

    # -- writing ------------------------------------------------------------------------------

    def _retrying(self) -> Retrying:
        retry = self._config.sink.retry

        def before_sleep(state: RetryCallState) -> None:
            metrics.DB_RETRIES.inc()
            self._drop_connection()
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "database unavailable (attempt %d, %s); retrying",
                state.attempt_number,
                type(exc).__name__,
            )

        return Retrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=wait_random_exponential(multiplier=retry.initial_seconds, max=retry.max_seconds),
            stop=stop_after_delay(retry.give_up_after_seconds),
            before_sleep=before_sleep,
            reraise=True,
        )

    def write(self, events: Sequence[Event]) -> BatchResult:
        """Commit the batch; retried while the database is unavailable, up to the limit."""
        try:
            return self._retrying()(self._write_once, events)
        except psycopg.OperationalError as exc:
            self._drop_connection()
            raise DatabaseUnavailable(
                f"database still unavailable after {self._config.sink.retry.give_up_after_seconds}s"
                f" ({type(exc).__name__}); nothing of this batch was deleted from the queue"
            ) from None

    def _write_once(self, events: Sequence[Event]) -> BatchResult:
        conn = self._connection()
        unique = list({e.message.message_id: e for e in events}.values())
        vault = list({v.token: v for e in unique for v in e.vault_entries}.values())
        try:
            with conn.cursor() as cur:
                with cur.copy(self._statements["copy_events"]) as copy:
                    for event in unique:
                        copy.write_row(self._stage_row(event))
                cur.execute(self._statements["insert"])
                counts = cur.fetchone()
                assert counts is not None
                new_vault = 0
                if vault:
                    with cur.copy(self._statements["copy_vault"]) as copy:
                        for entry in vault:
                            copy.write_row(_vault_row(entry))
                    cur.execute(self._statements["insert_vault"])
                    fetched = cur.fetchone()
                    new_vault = fetched[0] if fetched else 0
            conn.commit()
        except BaseException:
            if not conn.closed:
                try:
                    conn.rollback()
                except psycopg.Error:
                    self._drop_connection()
            raise
        rows, rejected, duplicates = counts
        return BatchResult(
            rows, rejected, duplicates, len(events) - rows - rejected - duplicates, new_vault
        )

    def _stage_row(self, event: Event) -> tuple[Any, ...]:
        message = event.message
        sent_at = datetime.fromtimestamp(message.sent_timestamp_ms / 1000, tz=timezone.utc)
        fields = event.fields or {}
        delivery = {
            "message_id": message.message_id,
            "sent_at": sent_at,
            "create_date": sent_at.date(),
        }
        values = [
            delivery[c.name] if c.name in delivery else fields.get(c.name)
            for c in self._row_columns
        ]
        rejection = event.rejection
        values += [
            event.outcome,
            message.receive_count,
            rejection.reason if rejection else None,
            rejection.detail if rejection else None,
            event.sealed_body,
            event.vault_key_id,
            event.duplicate_of,
        ]
        return tuple(values)


def _vault_row(entry: VaultEntry) -> tuple[Any, ...]:
    return (entry.token, entry.field, entry.sealed, entry.vault_key_id)


class PostgresPartition(StatelessSinkPartition[Event]):
    def __init__(self, config: AppConfig, cache: SealCache, deleter: Deleter) -> None:
        self._writer = PostgresWriter(config)
        self._writer.connect()
        self._cache = cache
        self._deleter = deleter

    def write_batch(self, items: list[Event]) -> None:
        if not items:
            return
        unmasked = sum(1 for e in items if not e.masked)
        if unmasked:  # configuration policy prevents this; never write raw PII regardless
            raise RuntimeError(f"{unmasked} events reached the sink without a mask step")
        with tracer().start_as_current_span("logins.sink.write_batch") as span:
            started = time.perf_counter()
            result = self._writer.write(items)
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            self._cache.mark_committed(v.token for e in items for v in e.vault_entries)
            failed = self._deleter.delete([e.message for e in items])
            span.set_attributes(
                {
                    "logins.batch.size": len(items),
                    "logins.batch.rows": result.rows,
                    "logins.batch.rejected": result.rejected,
                    "logins.batch.duplicates": result.duplicates,
                    "logins.batch.redelivered": result.redelivered,
                    "logins.batch.vault_entries": result.vault_entries,
                    "logins.batch.delete_failed": failed,
                }
            )
        _count(items, result)
        log.debug("committed batch: %s, %d deletes failed", result, failed)

    def close(self) -> None:
        self._writer.close()


def _count(items: Sequence[Event], result: BatchResult) -> None:
    metrics.MESSAGES.labels("row").inc(result.rows)
    metrics.MESSAGES.labels("rejected").inc(result.rejected)
    metrics.MESSAGES.labels("duplicate").inc(result.duplicates)
    metrics.REDELIVERED.inc(result.redelivered)
    metrics.VAULT_SEALED.inc(result.vault_entries)
    for event in items:
        if event.rejection is not None:
            metrics.REJECTED.labels(event.rejection.reason).inc()


class PostgresSink(DynamicSink[Event]):
    def __init__(self, config: AppConfig, cache: SealCache, deleter_factory: Any) -> None:
        self._config = config
        self._cache = cache
        self._deleter_factory = deleter_factory

    def build(self, step_id: str, worker_index: int, worker_count: int) -> PostgresPartition:
        return PostgresPartition(self._config, self._cache, self._deleter_factory())
