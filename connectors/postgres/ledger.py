"""The ledger: one row per committed message, keyed (sent_at, message_id), partitioned by day.

Why this shape (docs/guarantees.md): the ledger is the one table whose key makes a message
count once; the outcome tables take their rows only for the ids it claimed in the same
statement. The key leads with SQS's SentTimestamp, which a redelivery repeats, so it is as
unique as the message id alone, and new rows land on the right edge of the index instead of
a random page. A message whose delivery has no SentTimestamp is keyed at the epoch (its
receive time would differ on a redelivery).

Partitions: one per UTC day of `sent_at` (`<ledger>_pYYYYMMDD`), created ahead, plus a
DEFAULT partition (`<ledger>_default`) for a day that has none, so that no batch fails for
want of a partition. `<ledger>_maintain()`, a SECURITY DEFINER function owned by
`logins_owner` and executable by the pipeline role, creates the partitions from yesterday to
`DAYS_AHEAD` days ahead, drops the day partitions whose every row was sent more than the
retention ago, and deletes the default partition's rows committed more than the retention
ago. The retention is the owner's: `logins migrate` writes `sink.ledger_retention_days` into
the row `<ledger>:retention_days` of `logins_control`, which no other role may write, and
the function takes no argument, so a caller cannot shorten it. SQS keeps a message for at
most 14 days from its first enqueue (a dead-letter queue keeps the original enqueue time),
so with a retention above 14 days no redelivery outlives its ledger row. `logins migrate`
and the sink (at each connection, then hourly) call it; it waits at most 2 s for the table
lock and skips a partition it cannot lock.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import psycopg
from psycopg import sql

from logins.core.auditsql import SEARCH_PATH
from logins.core.controlsql import CONTROL_TABLE

__all__ = [
    "DAYS_AHEAD",
    "EPOCH_SENT_AT",
    "create_statements",
    "default_partition",
    "maintain",
    "maintain_function",
    "maintain_function_ddl",
    "maintain_signature",
]

log = logging.getLogger(__name__)

DAYS_AHEAD = 7  # day partitions made ahead: a week of the flow without maintenance is safe
EPOCH_SENT_AT = "1970-01-01 00:00:00+00"  # the key of a message without SentTimestamp


def default_partition(ledger: str) -> str:
    return f"{ledger}_default"


def maintain_function(ledger: str) -> str:
    return f"{ledger}_maintain"


def maintain_signature(ledger: str, schema: str) -> sql.Composed:
    """The function with its argument types (none), as GRANT and REVOKE name it."""
    return sql.SQL("{}()").format(sql.Identifier(schema, maintain_function(ledger)))


def retention_setting(ledger: str) -> str:
    """The `logins_control` row that holds the ledger's retention in days."""
    return f"{ledger}:retention_days"


def maintain_lock(ledger: str) -> str:
    """The `logins_control` row the maintenance locks (SKIP LOCKED: one run at a time)."""
    return f"{ledger}:maintain"


def control_statements(ledger: str, retention_days: int) -> list[sql.Composed]:
    """The owner's retention and the maintenance's lock row, written by `logins migrate`
    (run as the owner)."""
    control = sql.Identifier(CONTROL_TABLE)
    return [
        sql.SQL(
            "INSERT INTO {} (name, value) VALUES ({}, {})"
            " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
        ).format(control, sql.Literal(retention_setting(ledger)), sql.Literal(retention_days)),
        sql.SQL("INSERT INTO {} (name) VALUES ({}) ON CONFLICT (name) DO NOTHING").format(
            control, sql.Literal(maintain_lock(ledger))
        ),
    ]


def _columns() -> sql.SQL:
    return sql.SQL(
        "message_id text NOT NULL,"
        " outcome text NOT NULL CHECK (outcome IN ('row', 'rejected', 'duplicate')),"
        " sent_at timestamptz NOT NULL,"
        " committed_at timestamptz NOT NULL DEFAULT now(),"
        " PRIMARY KEY (sent_at, message_id)"
    )


def create_statements(ledger: str) -> list[sql.Composed]:
    """The partitioned ledger and its DEFAULT partition, if missing."""
    return [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}) PARTITION BY RANGE (sent_at)").format(
            sql.Identifier(ledger), _columns()
        ),
        sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} DEFAULT").format(
            sql.Identifier(default_partition(ledger)), sql.Identifier(ledger)
        ),
    ]


def maintain_function_ddl(conn: psycopg.Connection[Any], ledger: str, schema: str) -> sql.Composed:
    """CREATE OR REPLACE `<ledger>_maintain()` (module docstring). Returns how many
    partitions it created or dropped."""
    body = sql.SQL(
        "DECLARE parent regclass := to_regclass(format('%I.%I', {schema}, {ledger}));"
        " retention_days integer := (SELECT c.value FROM {control} c WHERE c.name = {setting});"
        " days_ahead integer := {days_ahead};"
        " fallback text := format('%I.%I', {schema}, {fallback});"
        " today date := (now() AT TIME ZONE 'UTC')::date;"
        " cutoff timestamptz; d date; lo timestamptz; part text; held boolean;"
        " changed integer := 0; r record;"
        " BEGIN"
        " IF retention_days IS NULL OR retention_days <= 14 THEN"
        "  RAISE EXCEPTION 'ledger retention must be more than 14 days (SQS keeps a message"
        " up to 14 days), got %', retention_days USING ERRCODE = '22023'; END IF;"
        " IF days_ahead IS NULL OR days_ahead < 0 OR days_ahead > 366 THEN"
        "  RAISE EXCEPTION 'days_ahead must be 0 to 366, got %', days_ahead"
        "  USING ERRCODE = '22023'; END IF;"
        " IF parent IS NULL THEN RAISE EXCEPTION 'no table %', {ledger}; END IF;"
        # one at a time: a control row only this function (the owner) can lock; an
        # advisory lock anyone could hold would let an analyst stop the maintenance
        " PERFORM 1 FROM {control} c WHERE c.name = {lock} FOR UPDATE SKIP LOCKED;"
        " IF NOT FOUND THEN RETURN 0; END IF;"
        " cutoff := now() - make_interval(days => retention_days);"
        " FOR d IN SELECT g::date FROM generate_series(today - 1, today + days_ahead,"
        "  interval '1 day') g LOOP"
        "  part := {ledger} || '_p' || to_char(d, 'YYYYMMDD');"
        "  CONTINUE WHEN to_regclass(format('%I.%I', {schema}, part)) IS NOT NULL;"
        "  lo := d::timestamp AT TIME ZONE 'UTC';"
        # rows of that day already in the default partition: the day stays there
        "  EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE sent_at >= $1"
        "   AND sent_at < $2)', fallback) INTO held USING lo, lo + interval '1 day';"
        "  CONTINUE WHEN held;"
        "  BEGIN"
        "   EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',"
        "    {schema}, part, parent, lo, lo + interval '1 day');"
        "   changed := changed + 1;"
        "  EXCEPTION WHEN lock_not_available OR duplicate_table THEN NULL;"
        "  END;"
        " END LOOP;"
        " FOR r IN SELECT c.relname::text AS name FROM pg_inherits i"
        "  JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = parent"
        "  AND length(c.relname::text) = length({ledger}) + 10"
        "  AND left(c.relname::text, length({ledger}) + 2) = {ledger} || '_p'"
        "  AND right(c.relname::text, 8) ~ '^[0-9]+$' LOOP"
        "  CONTINUE WHEN (to_date(right(r.name, 8), 'YYYYMMDD') + 1)::timestamp"
        "   AT TIME ZONE 'UTC' > cutoff;"
        "  BEGIN"
        "   EXECUTE format('DROP TABLE %I.%I', {schema}, r.name);"
        "   changed := changed + 1;"
        "  EXCEPTION WHEN lock_not_available OR insufficient_privilege THEN NULL;"
        "  END;"
        " END LOOP;"
        " EXECUTE format('DELETE FROM %s WHERE committed_at < $1', fallback) USING cutoff;"
        " RETURN changed;"
        " END"
    ).format(
        schema=sql.Literal(schema),
        ledger=sql.Literal(ledger),
        fallback=sql.Literal(default_partition(ledger)),
        lock=sql.Literal(maintain_lock(ledger)),
        control=sql.Identifier(schema, CONTROL_TABLE),
        setting=sql.Literal(retention_setting(ledger)),
        days_ahead=sql.Literal(DAYS_AHEAD),
    )
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {function}()"
        " RETURNS integer LANGUAGE plpgsql VOLATILE SECURITY DEFINER {search_path}"
        " SET lock_timeout = '2s' AS {body}"
    ).format(
        function=sql.Identifier(schema, maintain_function(ledger)),
        search_path=SEARCH_PATH,
        body=sql.Literal(body.as_string(conn)),
    )


def maintain(conn: psycopg.Connection[Any], ledger: str) -> int | None:
    """Run the maintenance in a transaction of its own; a failure is logged (SQLSTATE only)
    and never fails a write: the DEFAULT partition takes a day that has no partition yet.
    Returns the partitions created or dropped, None if it failed."""
    try:
        row = conn.execute(
            sql.SQL("SELECT {}()").format(sql.Identifier(maintain_function(ledger)))
        ).fetchone()
        conn.commit()
    except psycopg.Error as exc:
        log.warning(
            "ledger partition maintenance failed (SQLSTATE %s, %s); the default partition"
            " takes the rows meanwhile",
            exc.sqlstate,
            type(exc).__name__,
        )
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
        return None
    return None if row is None else int(row[0])
