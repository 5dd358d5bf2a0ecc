"""Postgres sink: one transaction per batch for rows, rejected rows, duplicates and vault
entries; the batch's messages are deleted from SQS only after that transaction committed.

Write path: COPY the batch into a temporary staging table, then one statement claims each
message id in the ledger (`ON CONFLICT DO NOTHING`) and inserts into the outcome table only
the ids it claimed. So a redelivered message, whatever the dedupe step thought this time,
has no effect, and every message id is in exactly one of: rows, rejected, duplicates.

The sink receives its own settings (`sink:` of the config), the table's columns
(connectors/postgres/schema.py, from the declared fields) and what it shares with the steps (the
seal cache, the sealer); it never sees the rest of the configuration.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from opentelemetry.trace import SpanKind
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
from connectors.sqs.source import Acker
from logins.core import metrics, shutdown
from logins.core.config import PostgresSinkConfig
from logins.core.records import Event, Rejection
from logins.core.sealcache import SealCache
from logins.core.telemetry import producer_links, tracer
from logins.core.vault import Sealer

__all__ = [
    "BatchCommitter",
    "BatchResult",
    "Committed",
    "DatabaseUnavailable",
    "PostgresSink",
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
    Column("_duplicate_of", "text"),
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
                " ins_duplicates AS (INSERT INTO {duplicates} (message_id, duplicate_of,"
                "  sent_at, create_date)"
                "  SELECT s.message_id, s._duplicate_of, s.sent_at, s.create_date"
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
            outcome = "row" if event.duplicate_of is None else "duplicate"
            return (*values, *delivery, outcome, message.receive_count, None, None,
                    event.sealed_body, event.vault_key_id, event.duplicate_of,
                    unknown)  # fmt: skip
        return (*values, *delivery, "rejected", message.receive_count, rejection.reason,
                rejection.detail, event.sealed_body, event.vault_key_id, event.duplicate_of,
                unknown)  # fmt: skip


_MAINTAIN_EVERY_SECONDS = 3600.0  # the ledger's partition maintenance, while writing
_DELIVERY_SLOTS = {"message_id": 0, "sent_at": 1, "create_date": 2}
_VAULT_TYPES = ["text", "text", "bytea", "text"]


@functools.lru_cache(maxsize=4096)
def _sent_at(sent_timestamp_ms: int) -> tuple[datetime, date]:
    """SentTimestamp as a datetime and its UTC date (cached: a batch's messages often share
    the millisecond)."""
    sent_at = datetime.fromtimestamp(sent_timestamp_ms / 1000, tz=timezone.utc)
    return sent_at, sent_at.date()


@dataclass(frozen=True)
class Committed:
    """What one `BatchCommitter.commit` did: the parts of the batch that committed, with their
    counts, and the events the database refused that wait for another delivery (each with
    the reason: SQLSTATE and error class, never a value)."""

    batches: list[tuple[list[Event], BatchResult]]
    refused: list[tuple[Event, str]]

    @property
    def events(self) -> list[Event]:
        return [e for batch, _ in self.batches for e in batch]

    @property
    def result(self) -> BatchResult:
        return _sum(r for _, r in self.batches)


class BatchCommitter:
    """The write path with the poison rule, shared by the flow's sink and the Lambda handler.

    A batch the database refuses because of one row's data is split until that row is alone.
    The row is parked as a rejected row (`poison`, its fields sealed) once it was received
    `poison_after_attempts` times; before that it is handed back, to come again through
    SQS redelivery. Any other error propagates (DatabaseUnavailable after the retries).
    `sealer` seals a parked row's fields."""

    def __init__(
        self, writer: PostgresWriter, *, poison_after_attempts: int, sealer: Sealer
    ) -> None:
        self.writer = writer
        self._poison_after = poison_after_attempts
        self._sealer = sealer

    def commit(self, events: list[Event]) -> Committed:
        batches, refused = self._write_isolating(events)
        return Committed(batches, refused)

    def _write_isolating(
        self, events: list[Event]
    ) -> tuple[list[tuple[list[Event], BatchResult]], list[tuple[Event, str]]]:
        """Write `events`; on a data error, bisect to find the rows the database refuses."""

        try:
            return [(events, self.writer.write(events))], []
        except psycopg.Error as exc:
            if not is_poison_error(exc):
                raise
            if len(events) == 1:
                event = events[0]
                if event.message.receive_count >= self._poison_after:
                    return [([event], self._park(event, exc))], []
                return [], [(event, _describe(exc))]
            middle = len(events) // 2
            left = self._write_isolating(events[:middle])
            right = self._write_isolating(events[middle:])
            return left[0] + right[0], left[1] + right[1]

    def _park(self, event: Event, exc: psycopg.Error) -> BatchResult:
        """Store a row the database keeps refusing as rejected ('poison'), sealed; no values."""
        detail = f"the database refused the row: {_describe(exc)}"
        metrics.POISON.labels("parked").inc()
        log.error(
            "message %s parked as poison after %d attempts: %s",
            event.message.message_id,
            event.message.receive_count,
            _describe(exc),
        )
        fields = json.dumps(event.fields or {}, sort_keys=True, default=str)
        event.sealed_body = self._sealer.seal_rejected(event.message.message_id, fields)
        event.vault_key_id = self._sealer.key_id
        event.rejection = Rejection("poison", detail)
        return self.writer.write([event])


class _PostgresPartition(StatelessSinkPartition[Event]):
    """Commits each batch, then deletes its messages. A batch the database refuses because of
    one row's data is split until that row is alone; it is retried through SQS redelivery and
    parked as a rejected row (`poison`) once it was received `poison_after_attempts` times.

    Batches are written on up to `sink.writers` writer threads of this partition, each with
    its own connection, so the worker prepares the next batches while PostgreSQL commits
    these. The first writer's queue is `sink.queued_batches` deep; a batch goes to another
    writer (one batch deep each) only while that queue is full, since one connection's
    commits are a chain of round trips (COPY, statement, commit) that leaves PostgreSQL's
    second core idle once the flow outruns it. The ledger, not the order of commits, makes
    each message's effect happen once. Nothing is deleted before its own batch's commit, so
    a batch still queued when the process dies comes back from SQS like any uncommitted
    message. A failure on a writer thread is raised on the worker by the next `write_batch`
    (or by `close`: the failure also stops the sources, so the flow ends even if no batch
    follows); batches queued behind it are released to the queue at once."""

    def __init__(
        self,
        settings: PostgresSinkConfig,
        committers: Sequence[BatchCommitter],
        *,
        cache: SealCache,
        acker: Acker,
        max_release_seconds: int,
        queue_name: str,
    ) -> None:
        self._settings = settings
        self._max_release_seconds = max_release_seconds
        self._committers = list(committers)
        try:
            for committer in self._committers:
                committer.writer.connect()
        except BaseException:
            for committer in self._committers:
                committer.writer.close()
            raise
        metrics.LAST_COMMIT.set(time.time())  # "stalled" counts from the start until a commit
        self._span_attributes = _messaging_attributes(queue_name)
        self._cache = cache
        self._acker = acker
        self._failure: BaseException | None = None
        self._failure_raised = False
        self._refused = False  # the database refused this login for good: release, never write
        # One queue per writer: the first `queued_batches` deep, each other one batch deep.
        self._queues: list[queue.Queue[list[Event] | None]] = []
        self._room = threading.Condition()  # notified when a writer takes a batch
        self._threads: list[threading.Thread] = []
        if settings.queued_batches > 0:
            self._queues = [
                queue.Queue(maxsize=settings.queued_batches if i == 0 else 1)
                for i in range(len(self._committers))
            ]
            self._threads = [
                threading.Thread(target=self._drain, args=(committer, batches), daemon=True,
                                 name="postgres-writer" + (f"-{i + 1}" if i else ""))
                for i, (committer, batches) in enumerate(zip(self._committers, self._queues,
                                                             strict=True))
            ]  # fmt: skip
            for thread in self._threads:
                thread.start()

    def write_batch(self, items: list[Event]) -> None:
        if not items:
            return
        unmasked = sum(1 for e in items if not e.masked)
        if unmasked:  # configuration policy prevents this; never write raw PII regardless
            raise RuntimeError(f"{unmasked} events reached the sink without a mask step")
        self._raise_failure()
        if not self._queues:
            self._write_logged(items, self._committers[0])
        else:
            self._enqueue(items)

    def _enqueue(self, items: list[Event]) -> None:
        """To the first writer whose queue has room, so the other writers take batches only
        while the first is behind (a flow PostgreSQL keeps up with commits on one connection,
        and sends SQS one batch's deletes at a time); blocks while all are full: backpressure."""
        while True:
            for batches in self._queues:
                try:
                    batches.put_nowait(items)
                    return
                except queue.Full:
                    continue
            with self._room:
                self._room.wait(0.05)  # until a writer takes a batch (or look again)

    def _drain(self, committer: BatchCommitter, batches: queue.Queue[list[Event] | None]) -> None:
        """A writer thread: writes its queue's batches on its connection until `close`."""
        while (items := batches.get()) is not None:
            with self._room:
                self._room.notify()
            if self._failure is not None:
                self._acker.release([e.message for e in items])  # never tried: back at once
                continue
            try:
                self._write_logged(items, committer)
            except BaseException as exc:  # handed to the worker thread by _raise_failure
                self._failure = exc
                shutdown.stop_after_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            self._failure_raised = True
            raise RuntimeError("the PostgreSQL sink failed (logged above)") from self._failure

    def _write_logged(self, items: list[Event], committer: BatchCommitter) -> None:
        try:
            self._write_batch(items, committer)
        except Exception:
            # In a cluster other processes only see a bare panic: log the traceback here.
            log.exception(
                "sink failed; the flow stops and uncommitted messages return to the "
                "queue after their visibility timeout"
            )
            raise

    def _write_batch(self, items: list[Event], committer: BatchCommitter) -> None:
        if self._refused:
            self._acker.release([e.message for e in items])
            return
        with tracer().start_as_current_span(
            "logins.sink.write_batch",
            kind=SpanKind.CONSUMER,
            attributes={**self._span_attributes, "messaging.batch.message_count": len(items)},
        ) as span:
            if span.is_recording():  # parse the producers' headers only when traces are kept
                headers = ((e.message.message_id, e.message.trace_header) for e in items)
                for link in producer_links(headers):
                    span.add_link(link.context, link.attributes)
            started = time.perf_counter()
            try:
                committed = committer.commit(items)
            except DatabaseUnavailable as exc:
                self._acker.release([e.message for e in items])  # back to the queue at once
                if not exc.permanent:
                    raise
                # Refused for good: stop the flow gracefully (exit 2), write nothing more.
                self._refused = True
                shutdown.fail(str(exc))
                return
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            done, poisoned = committed.events, committed.refused
            if done:
                committed_at = time.time()
                metrics.LAST_COMMIT.set(committed_at)
                metrics.COMMIT_LATENCY.observe_many(
                    committed_at - e.message.sent_timestamp_ms / 1000 for e in done
                )
            self._cache.mark_committed(v.token for e in done for v in e.vault_entries)
            failed = self._acker.delete([e.message for e in done])
            if poisoned:
                self._retry_later(poisoned)
            result = committed.result
            span.set_attributes(
                {
                    "logins.batch.size": len(items),
                    "logins.batch.rows": result.rows,
                    "logins.batch.rejected": result.rejected,
                    "logins.batch.duplicates": result.duplicates,
                    "logins.batch.redelivered": result.redelivered,
                    "logins.batch.vault_entries": result.vault_entries,
                    "logins.batch.poisoned": len(poisoned),
                    "logins.batch.delete_failed": failed,
                }
            )
        _count(done, result)
        log.debug("committed batch: %s, %d deletes failed", result, failed)

    def _retry_later(self, poisoned: list[tuple[Event, str]]) -> None:
        """Not deleted: the message comes back after a short, growing delay and is tried alone."""
        for event, reason in poisoned:
            metrics.POISON.labels("retried").inc()
            log.warning(
                "message %s refused by the database (attempt %d of %d): %s",
                event.message.message_id,
                event.message.receive_count,
                self._settings.poison_after_attempts,
                reason,
            )
        for event, _ in poisoned:
            delay = min(2**event.message.receive_count, self._max_release_seconds)
            self._acker.release([event.message], after_seconds=delay)

    def close(self) -> None:
        """Write what is queued, then close; raises if the writer thread failed and no
        write_batch has raised that yet."""
        try:
            for batches in self._queues:
                batches.put(None)  # its writer ends there, after the batches before
            for thread in self._threads:
                thread.join()
            for committer in self._committers:
                committer.writer.close()
        finally:
            self._acker.close()  # whatever happened, this sink deletes nothing more
        # Raised once: Bytewax closes a partition while unwinding the error write_batch raised,
        # and an error from close() then is a panic during a panic, which aborts the process.
        if not self._failure_raised:
            self._raise_failure()


def _messaging_attributes(queue_name: str) -> dict[str, str]:
    """OpenTelemetry's messaging attributes of a batch span (semantic conventions for a batch
    that is received and processed): the system and the queue's name, never a message's data."""
    return {
        "messaging.system": "aws_sqs",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": queue_name,
    }


def _describe(exc: psycopg.Error) -> str:
    """SQLSTATE and error class only: PostgreSQL's message may quote the value."""
    return f"SQLSTATE {exc.sqlstate} ({type(exc).__name__})"


def _sum(results: Iterable[BatchResult]) -> BatchResult:
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
    """Writes every event into PostgreSQL: a row, a rejected row or a duplicate, plus the
    batch's vault entries, in one transaction per batch.

    Delivery guarantee: exactly-once effect over an at-least-once source. Each message id is
    claimed once in the ledger, so a redelivered message writes nothing; its message is
    deleted from the queue (through the acker) only after its transaction committed.

    Unit of parallelism: one partition per worker, each with its own connection and writer
    thread. Partitions share nothing but the database (and the seal cache of the process).

    `settings` is the config's `sink:`; `schema` the row table's columns (from the declared
    fields); `vault_table` where the vault entries go; `cache` the seal cache the mask step
    shares; `sealer` seals a row the database keeps refusing; `acker_factory` gives each
    partition its acker; `max_release_seconds` caps the delay before a refused row comes back
    (the source's visibility timeout); `queue_name` names the queue in the batch spans;
    `on_connect` runs on each new connection (the schema check or migrations)."""

    def __init__(
        self,
        settings: PostgresSinkConfig,
        schema: TableSchema,
        *,
        vault_table: str,
        cache: SealCache,
        sealer: Sealer,
        acker_factory: Callable[[], Acker],
        max_release_seconds: int,
        queue_name: str,
        on_connect: OnConnect | None = None,
    ) -> None:
        self._settings = settings
        self._queue_name = queue_name
        self._schema = schema
        self._vault_table = vault_table
        self._cache = cache
        self._sealer = sealer
        self._acker_factory = acker_factory
        self._max_release_seconds = max_release_seconds
        self._on_connect = on_connect

    def writer(self) -> PostgresWriter:
        """A writer with this sink's settings (a partition holds one; benchmarks use one)."""
        return PostgresWriter(
            self._settings,
            self._schema,
            vault_table=self._vault_table,
            on_connect=self._on_connect,
        )

    def committer(self) -> BatchCommitter:
        """A writer with the poison rule (a partition holds one; so does the Lambda handler)."""
        return BatchCommitter(
            self.writer(),
            poison_after_attempts=self._settings.poison_after_attempts,
            sealer=self._sealer,
        )

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PostgresPartition:
        return _PostgresPartition(
            self._settings,
            [self.committer() for _ in range(self._settings.writers)],  # > 1 needs a queue (config)
            cache=self._cache,
            acker=self._acker_factory(),
            max_release_seconds=self._max_release_seconds,
            queue_name=self._queue_name,
        )
