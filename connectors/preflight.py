"""Start-up checks, before the flow receives anything: the queue answers GetQueueAttributes, and
PostgreSQL accepts this login, is version 13 or later (connectors/postgres/serverversion.py),
its schema version is current and this role may write the sink's tables. `logins check
--connect` runs the same checks and changes nothing.

A permanent error (connectors/errors.py: no such queue, access denied, bad credentials or
signature, unknown host, 28P01, 3D000, 42501, ...) fails its check at once. A transient one
(refused, timeouts, 5xx, throttling) is retried with capped exponential backoff and jitter
(tenacity, as the sink's writes) until `wait_seconds` have passed, each attempt logged with the
error's code and the server's message. The schema is the migrations' business: at the flow's
start this module calls their `ensure_schema` (check the version, migrate if sink.migrate and
the role allow); otherwise it only reads the catalog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from connectors.errors import Failure, ServiceError, pg_failure, pg_where, sqs_failure
from connectors.postgres.migrations import ensure_schema, schema_state
from connectors.postgres.schemaversion import SchemaError
from connectors.postgres.serverversion import UnsupportedServer, require_supported
from connectors.sqs.source import sqs_client, where
from logins.core import vaultsql
from logins.core.config import AppConfig, SqsSourceConfig

log = logging.getLogger(__name__)

_QUEUE_COUNTS = {
    "ApproximateNumberOfMessages": "visible",
    "ApproximateNumberOfMessagesNotVisible": "in flight",
    "ApproximateNumberOfMessagesDelayed": "delayed",
}


@dataclass(frozen=True)
class Outcome:
    """One check: what it found, or the failure."""

    name: str  # "sqs" | "postgres"
    detail: str
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def run(config: AppConfig, wait_seconds: float, migrate: bool = False) -> list[Outcome]:
    """Both checks; each retries a transient error until `wait_seconds` after the start.
    `migrate`: the flow's start, which brings an older schema up to date (sink.migrate)."""
    deadline = time.monotonic() + wait_seconds
    return [
        _retried("sqs", lambda: check_sqs(config.source), deadline),
        _retried("postgres", lambda: check_postgres(config, migrate), deadline),
    ]


def check_sqs(config: SqsSourceConfig) -> str:
    """GetQueueAttributes on the configured queue, one attempt: `_retried` retries, and logs
    each attempt's error (botocore's own retries would be silent)."""
    client = sqs_client(config, max_attempts=1)
    try:
        attrs = client.get_queue_attributes(
            QueueUrl=config.queue_url, AttributeNames=list(_QUEUE_COUNTS)
        )["Attributes"]
    except (BotoCoreError, ClientError) as exc:
        raise ServiceError(sqs_failure(exc, where(config), at_start=True)) from None
    counts = ", ".join(f"{attrs.get(name, '?')} {label}" for name, label in _QUEUE_COUNTS.items())
    return f"{where(config)}: {counts} ({client.protocol} protocol)"


def sink_tables(config: AppConfig) -> tuple[list[str], list[str]]:
    """(tables the sink inserts into, tables whose columns it reads: the ledger's ON CONFLICT
    key and RETURNING). Column grants count (the pipeline role of connectors/postgres/roles.py has
    only those). The vault is written only through the owner's functions (`sink_functions`)."""
    sink = config.sink
    inserts = [sink.table, sink.rejected_table, sink.duplicates_table, sink.ledger_table]
    return inserts, [sink.ledger_table]


def sink_functions(config: AppConfig) -> list[str]:
    """The owner's functions the sink calls: the vault's put and flush (logins/core/vaultsql.py)."""
    names = vaultsql.names(config)
    return [names["put"], names["flush"]]


def check_postgres(config: AppConfig, migrate: bool = False) -> str:
    """Connect; the schema is current (with `migrate`, as the flow's start does: migrate it if
    sink.migrate allows and the role may); this role may insert into the sink's tables and
    stage batches in temporary tables. Without `migrate` nothing is changed."""
    dsn = config.sink.dsn.get_secret_value()
    at = pg_where(dsn)
    try:
        with psycopg.connect(
            dsn, autocommit=True, connect_timeout=10, application_name="logins-etl check"
        ) as conn:
            require_supported(conn)
            schema = _schema(conn, config, at, migrate)
            return f"{at}: {schema}; {_privileges(conn, config, at)}"
    except psycopg.Error as exc:
        raise ServiceError(pg_failure(exc, at, at_start=True)) from None
    except UnsupportedServer as exc:  # permanent: not retried
        raise _refusal(at, "server version", str(exc)) from None


def _refusal(at: str, code: str, message: str) -> ServiceError:
    return ServiceError(Failure("PostgreSQL", at, code, message, True))


def _schema(conn: psycopg.Connection[tuple[object, ...]], config: AppConfig, at: str,
            migrate: bool) -> str:  # fmt: skip
    """The recorded schema version (connectors/postgres/schemaversion.py), migrated if asked."""
    found = schema_state(conn, config)
    if found.current:
        return f"schema version {found.have}"
    if migrate or not config.sink.migrate:
        try:
            ensure_schema(conn, config, allow_migrate=migrate and config.sink.migrate)
        except SchemaError as exc:
            code = "42501" if "(42501:" in str(exc) else "SchemaVersion"
            raise _refusal(at, code, str(exc)) from None
        return f"migrated to schema version {schema_state(conn, config).have}"
    return f"{found.describe()}: the flow migrates it at start (sink.migrate)"


def _privileges(conn: psycopg.Connection[tuple[object, ...]], config: AppConfig, at: str) -> str:
    inserts, reads = sink_tables(config)
    wanted = [(name, "INSERT") for name in inserts] + [(name, "SELECT") for name in reads]
    rows = conn.execute(
        "SELECT w.name, w.privilege, c.oid IS NOT NULL,"
        " c.oid IS NOT NULL AND has_any_column_privilege(c.oid, w.privilege)"
        " FROM unnest(%s::text[], %s::text[]) AS w(name, privilege)"
        " LEFT JOIN LATERAL (SELECT to_regclass(quote_ident(w.name)) AS oid) c ON true",
        ([n for n, _ in wanted], [p for _, p in wanted]),
    ).fetchall()
    facts = conn.execute(
        "SELECT current_user, current_database(),"
        " has_database_privilege(current_database(), 'TEMPORARY')"
    ).fetchone()
    assert facts is not None
    user, database, temporary = facts
    functions = conn.execute(
        "SELECT f.name, bool_or(p.oid IS NOT NULL),"
        " coalesce(bool_or(has_function_privilege(p.oid, 'EXECUTE')), false)"
        " FROM unnest(%s::text[]) AS f(name)"
        " LEFT JOIN pg_proc p ON p.proname = f.name AND pg_function_is_visible(p.oid)"
        " GROUP BY f.name",
        (sink_functions(config),),
    ).fetchall()
    missing = sorted(
        {str(name) for name, _, exists, _ in rows if not exists}
        | {f"{name}()" for name, exists, _ in functions if not exists}
    )
    refused = [f"{right} on {name}" for name, right, exists, ok in rows if exists and not ok]
    refused += [f"EXECUTE on {name}()" for name, exists, ok in functions if exists and not ok]
    if refused:
        raise _refusal(at, "42501", f"permission denied: role {user} lacks {', '.join(refused)}")
    if not temporary:
        raise _refusal(
            at,
            "42501",
            f"permission denied: role {user} cannot create temporary tables in database"
            f" {database} (the sink stages each batch in one)",
        )
    if missing:  # only before a migration the flow will run
        return f"role {user} (to be created: {', '.join(missing)})"
    return (
        f"role {user} may write {', '.join(inserts)} and call {', '.join(sink_functions(config))}"
    )


def _retried(name: str, check: Callable[[], str], deadline: float) -> Outcome:
    def transient(exc: BaseException) -> bool:
        return isinstance(exc, ServiceError) and not exc.failure.permanent

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("start-up check %s (attempt %d): %s; retrying", name, state.attempt_number, exc)

    retrying = Retrying(
        retry=retry_if_exception(transient),
        wait=wait_random_exponential(multiplier=0.5, max=5),
        stop=stop_after_delay(max(0.0, deadline - time.monotonic())),
        before_sleep=before_sleep,
        reraise=True,
    )
    started = time.monotonic()
    try:
        return Outcome(name, retrying(check))
    except ServiceError as exc:
        detail = str(exc.failure)
        if not exc.failure.permanent:
            detail += f" (still failing after {time.monotonic() - started:.0f}s)"
        return Outcome(name, detail, exc.failure)
