"""The PostgreSQL write path of one connection: a batch in one transaction (rows, rejected
rows, duplicates and vault entries), retried with capped exponential backoff and full jitter
while the database is unavailable.

Write path: COPY the batch into a temporary staging table, then one statement claims each
message id in the ledger (`ON CONFLICT DO NOTHING`) and inserts into the outcome table only
the ids it claimed. So a redelivered message, whatever the dedupe step thought this time,
has no effect, and every message id is in exactly one of: rows, rejected, duplicates.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import psycopg
from psycopg import sql
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from connectors.errors import Failure, ServiceError, pg_failure, pg_where
from connectors.postgres import ledger
from connectors.postgres.ledger import EPOCH_SENT_AT
from connectors.postgres.schema import Column, TableSchema
from connectors.postgres.schemaversion import SchemaError
from logins.core import metrics
from logins.core.config import PostgresSinkConfig
from logins.core.records import Event

__all__ = [
    "BatchResult",
    "DatabaseUnavailable",
    "OnConnect",
    "PostgresWriter",
    "is_poison_error",
]

log = logging.getLogger(__name__)

# Run on each new connection before the first write (the flow passes the migrations).
OnConnect = Callable[[psycopg.Connection[Any]], None]


def is_poison_error(exc: BaseException) -> bool:
    """Errors a row's own data can cause: data exceptions (SQLSTATE 22, or psycopg refusing a
    value before sending it), integrity violations (23) and exceptions raised by a trigger
    (P0). Any other error is the database's or ours, not the row's, and stops the flow."""
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return True
    return isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith("P0")


class DatabaseUnavailable(RuntimeError):
    """The database stayed away longer than `sink.retry.give_up_after_seconds`, or refuses
    this login for good (`permanent`: authentication, privileges): nothing was deleted."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class BatchResult:
    rows: int
    rejected: int
    duplicates: int
    redelivered: int
    vault_entries: int


# The staging table's columns beyond the row's, prefixed so that no declared column can
# share a name with one of them.
_DELIVERY = [
    Column("_outcome", "text"),
    Column("_receive_count", "integer"),
    Column("_reason", "text"),
    Column("_detail", "text"),
    Column("_sealed_body", "bytea"),
    Column("_vault_key_id", "text"),
    Column("_sent_unknown", "boolean"),  # no SentTimestamp: the ledger keys it at the epoch
]


def _ids(names: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


class PostgresWriter:
    """A connection and the batch write path, retried with capped exponential backoff and
    full jitter (tenacity) while the database is unavailable.

    `settings` names the tables, the retry limits and the connect timeout; `schema` is the
    row table's columns; `vault_table` takes the batch's vault entries; `on_connect` runs on
    each new connection (the flow passes the migrations when `settings.migrate`)."""

    def __init__(
        self,
        settings: PostgresSinkConfig,
        schema: TableSchema,
        *,
        vault_table: str,
        on_connect: OnConnect | None = None,
    ) -> None:
        self._settings = settings
        self._vault_table = vault_table
        self._on_connect = on_connect
        self._row_columns = list(schema.row)
        self._stage_columns = [*self._row_columns, *_DELIVERY]
        # The COPY's column order (any order: COPY names its columns): the fields' columns,
        # then the delivery's, then the outcome's, so a staged row is three tuples joined.
        field_columns = [c for c in self._row_columns if c.key is not None]
        self._field_keys = [c.key for c in field_columns if c.key is not None]
        self._no_fields = (None,) * len(field_columns)
        self._copy_columns = [
            *field_columns,
            *sorted(
                (c for c in self._row_columns if c.key is None),
                key=lambda c: _DELIVERY_SLOTS[c.name],  # KeyError: not a delivery column
            ),
            *_DELIVERY,
        ]
        self._delivery_slots = sorted(
            _DELIVERY_SLOTS[c.name] for c in self._row_columns if c.key is None
        )
        # Binary COPY: no text escaping of the sealed bytes, no parsing of dates on the server.
        self._stage_types = [c.copy_type for c in self._copy_columns]
        self._conn: psycopg.Connection[Any] | None = None
        self._maintained_at = time.monotonic()
        self._statements = self._build_statements()

    # -- statements ---------------------------------------------------------------------------

    @property
    def statements(self) -> dict[str, sql.Composed | sql.SQL]:
        """The sink's SQL by name (the benchmark times them one by one)."""
        return dict(self._statements)

    def _build_statements(self) -> dict[str, sql.Composed | sql.SQL]:
        sink = self._settings
        copy_names = [c.name for c in self._copy_columns]
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
            "copy_events": sql.SQL("COPY stage_events ({}) FROM STDIN (FORMAT BINARY)").format(
                _ids(copy_names)
            ),
            "copy_vault": sql.SQL(
                "COPY stage_vault (token, field, sealed, vault_key_id) FROM STDIN (FORMAT BINARY)"
            ),
            # The ledger's key is the only unique key per message (connectors/postgres/ledger.py):
            # the outcome tables take exactly the ids it claimed here, so they need none.
            "insert": sql.SQL(
                "WITH claimed AS ("
                " INSERT INTO {ledger} (message_id, outcome, sent_at)"
                " SELECT message_id, _outcome,"
                "  CASE WHEN _sent_unknown THEN {epoch}::timestamptz ELSE sent_at END"
                " FROM stage_events"
                " ON CONFLICT (sent_at, message_id) DO NOTHING RETURNING message_id, outcome),"
                " ins_rows AS (INSERT INTO {table} ({rows}) SELECT {s_rows} {claimed}'row'"
                "  RETURNING 1),"
                " ins_rejected AS (INSERT INTO {rejected} (message_id, reason, detail,"
                "  sealed_body, vault_key_id, sent_at, create_date, receive_count)"
                "  SELECT s.message_id, s._reason, s._detail, s._sealed_body, s._vault_key_id,"
                "  s.sent_at, s.create_date, s._receive_count {claimed}'rejected'"
                "  RETURNING 1),"
                " ins_duplicates AS (INSERT INTO {duplicates} (message_id, sent_at, create_date)"
                "  SELECT s.message_id, s.sent_at, s.create_date"
                "  {claimed}'duplicate' RETURNING 1)"
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
                epoch=sql.Literal(EPOCH_SENT_AT),
            ),
            # The vault write is the owner's function (logins/core/vaultsql.py): it appends the
            # entries to the vault's inbox and reports nothing per entry, so the pipeline's role
            # cannot tell whether a value was in the vault. The count is the entries offered.
            "insert_vault": sql.SQL(
                "WITH s AS (SELECT count(*) AS n, array_agg(token ORDER BY token) AS t,"
                " array_agg(field ORDER BY token) AS f, array_agg(sealed ORDER BY token) AS b,"
                " array_agg(vault_key_id ORDER BY token) AS k FROM stage_vault)"
                " SELECT s.n FROM s, LATERAL {}(s.t, s.f, s.b, s.k)"
            ).format(sql.Identifier(f"{self._vault_table}_put")),
            # after the commit: the batch's entries move from the inbox into the vault
            "flush_vault": sql.SQL("SELECT {}()").format(
                sql.Identifier(f"{self._vault_table}_flush")
            ),
        }

    # -- connection ---------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(
                self._settings.dsn.get_secret_value(),
                application_name="logins-etl",
                connect_timeout=self._settings.connect_timeout_seconds,
            )
            if self._on_connect is not None:
                try:  # no DDL on a current schema: the flow's role need not be able to
                    self._on_connect(conn)
                except BaseException:
                    conn.close()
                    raise
            conn.execute(self._statements["create_stage"])
            conn.commit()
            self._maintain_ledger(conn)
            self._conn = conn
        return self._conn

    def _maintain_ledger(self, conn: psycopg.Connection[Any]) -> None:
        """The ledger's day partitions ahead, the expired ones dropped
        (connectors/postgres/ledger.py): at each connection, then hourly; never fails a write."""
        ledger.maintain(conn, self._settings.ledger_table)  # the owner's retention
        self._maintained_at = time.monotonic()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        self._drop_connection()

    def connect(self) -> None:
        """Connect (and check or migrate the schema) now, with the same retries as a write."""
        try:
            self._retrying()(self._connection)
        except SchemaError as exc:
            log.error("cannot start: %s", exc)
            raise
        except psycopg.OperationalError as exc:
            raise ServiceError(self._failure(exc)) from None

    # -- writing ------------------------------------------------------------------------------

    def _failure(self, exc: BaseException) -> Failure:
        return pg_failure(exc, pg_where(self._settings.dsn.get_secret_value()))

    def _transient(self, exc: BaseException) -> bool:
        """Worth waiting for: the database is away, not refusing this login for good (28P01,
        3D000, 42501 ... stop the flow instead of being retried for give_up_after_seconds)."""
        return isinstance(exc, psycopg.OperationalError) and not self._failure(exc).permanent

    def _retrying(self) -> Retrying:
        retry = self._settings.retry

        def before_sleep(state: RetryCallState) -> None:
            metrics.DB_RETRIES.inc()
            self._drop_connection()
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "database unavailable (attempt %d, %s); retrying",
                state.attempt_number,
                self._failure(exc) if exc is not None else "?",
            )

        return Retrying(
            retry=retry_if_exception(self._transient),
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
            failure = self._failure(exc)
            if failure.permanent:  # e.g. the password changed: no retry
                raise DatabaseUnavailable(
                    f"{failure}; nothing of this batch was deleted from the queue", permanent=True
                ) from None
            raise DatabaseUnavailable(
                f"database still unavailable after {self._settings.retry.give_up_after_seconds}s"
                f" ({failure}); nothing of this batch was deleted from the queue"
            ) from None

    def _write_once(self, events: Sequence[Event]) -> BatchResult:
        conn = self._connection()
        if time.monotonic() - self._maintained_at > _MAINTAIN_EVERY_SECONDS:
            self._maintain_ledger(conn)
        unique = list({e.message.message_id: e for e in events}.values())
        vault = list({v.token: v for e in unique for v in e.vault_entries}.values())
        try:
            with conn.cursor() as cur:
                with cur.copy(self._statements["copy_events"]) as copy:
                    copy.set_types(self._stage_types)
                    stage_row = self._stage_row
                    for event in unique:
                        copy.write_row(stage_row(event))
                cur.execute(self._statements["insert"])
                counts = cur.fetchone()
                assert counts is not None
                new_vault = 0
                if vault:
                    with cur.copy(self._statements["copy_vault"]) as copy:
                        copy.set_types(_VAULT_TYPES)
                        for entry in vault:  # a VaultEntry is its row
                            copy.write_row(entry)
                    cur.execute(self._statements["insert_vault"])
                    fetched = cur.fetchone()
                    new_vault = fetched[0] if fetched else 0
            conn.commit()
            if vault:
                try:  # the batch is committed: a failure here only leaves them to the next
                    conn.execute(self._statements["flush_vault"])
                    conn.commit()
                except psycopg.Error:
                    conn.rollback()
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
        """The event's row in the COPY's column order: its fields, delivery and outcome."""
        message = event.message
        fields = event.fields
        if fields:
            try:
                values = tuple([fields[key] for key in self._field_keys])
            except KeyError:  # not every declared field (a caller other than the validator)
                values = tuple([fields.get(key) for key in self._field_keys])
        else:
            values = self._no_fields
        sent_at, create_date = _sent_at(message.sent_timestamp_ms)
        delivery: tuple[Any, ...] = (message.message_id, sent_at, create_date)
        if len(self._delivery_slots) != 3:  # a table without some delivery column
            delivery = tuple([delivery[i] for i in self._delivery_slots])
        rejection = event.rejection
        unknown = None if message.sent_timestamp_known else True
        if rejection is None:
            outcome = "duplicate" if event.duplicate else "row"
            return (*values, *delivery, outcome, message.receive_count, None, None,
                    event.sealed_body, event.vault_key_id, unknown)  # fmt: skip
        return (*values, *delivery, "rejected", message.receive_count, rejection.reason,
                rejection.detail, event.sealed_body, event.vault_key_id, unknown)  # fmt: skip


_MAINTAIN_EVERY_SECONDS = 3600.0  # the ledger's partition maintenance, while writing
_DELIVERY_SLOTS = {"message_id": 0, "sent_at": 1, "create_date": 2}
_VAULT_TYPES = ["text", "text", "bytea", "text"]


@functools.lru_cache(maxsize=4096)
def _sent_at(sent_timestamp_ms: int) -> tuple[datetime, date]:
    """SentTimestamp as a datetime and its UTC date (cached: a batch's messages often share
    the millisecond)."""
    sent_at = datetime.fromtimestamp(sent_timestamp_ms / 1000, tz=timezone.utc)
    return sent_at, sent_at.date()


def sum_results(results: Iterable[BatchResult]) -> BatchResult:
    """The counts of several batches, added up."""
    totals = [0, 0, 0, 0, 0]
    for result in results:
        for i, value in enumerate(
            (
                result.rows,
                result.rejected,
                result.duplicates,
                result.redelivered,
                result.vault_entries,
            )
        ):
            totals[i] += value
    return BatchResult(*totals)
