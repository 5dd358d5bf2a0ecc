"""The control table and the locks only the owner's functions take.

`logins_control (name, value)` holds lock rows (one per vault's erasures, per audit
table's appends, per ledger's maintenance) and settings only the owner writes (the ledger's
retention, the sealed rejected bodies' retention). No role but `logins_owner` has any
privilege on it, so no other login can lock a row of it: unlike an advisory lock id, which
any login can take, nobody can stall the functions that lock these rows.
`logins_take_lock(name, timeout)` locks one, trying for at most `timeout`, then fails naming
the login and pid that hold it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from logins.core.config import AppConfig

SEARCH_PATH = sql.SQL("SET search_path = pg_catalog, pg_temp")
CONTROL_TABLE = "logins_control"
TAKE_LOCK = "logins_take_lock"
LOCK_TIMEOUT = "3s"  # a second erasure, or a rotation batch meeting one, fails after this
# forget's and purge's own statements (a row another session holds: an open flush of the
# victim's entry, an open rekey batch) wait at most this long, then fail naming the holder
ROW_LOCK_TIMEOUT = "5s"
END_IT_HINT = (
    "wait for it to end, or end it as a superuser: pg_cancel_backend(pid) cancels a running"
    " statement; a session idle in transaction holds its locks until"
    " pg_terminate_backend(pid)"
)
TAKE_LOCK_SIGNATURE = "text, text"


def erasure_lock(config: AppConfig) -> str:
    """The control row that serialises erasures and rotation batches of one vault."""
    return f"{config.vault.table}:erasure"


def rejected_retention(config: AppConfig) -> str:
    """The control row whose value is the owner's retention of sealed rejected bodies, in
    days (`sink.rejected_retention_days`, written by `logins migrate`; NULL: kept)."""
    return f"{config.sink.rejected_table}:retention_days"


def audit_lock(config: AppConfig) -> str:
    """The control row that serialises appends to one audit table (the chain's order)."""
    return f"{config.vault.audit_table}:append"


def take_lock_signature(schema: str) -> sql.Composed:
    return sql.SQL("{}({})").format(sql.Identifier(schema, TAKE_LOCK), sql.SQL(TAKE_LOCK_SIGNATURE))


def control_statements(config: AppConfig) -> list[sql.Composed]:
    """The control table (lock rows, and settings only the owner writes) and this vault's
    lock rows."""
    control = sql.Identifier(CONTROL_TABLE)
    return [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, value integer)").format(
            control
        ),
        sql.SQL("INSERT INTO {} (name) VALUES ({}), ({}) ON CONFLICT (name) DO NOTHING").format(
            control, sql.Literal(erasure_lock(config)), sql.Literal(audit_lock(config))
        ),
        sql.SQL(
            "INSERT INTO {} (name, value) VALUES ({}, {})"
            " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
        ).format(
            control,
            sql.Literal(rejected_retention(config)),
            sql.Literal(config.sink.rejected_retention_days),
        ),
    ]


def definer_function(
    conn: psycopg.Connection[Any],
    name: sql.Composable,
    args: str,
    returns: str,
    body: sql.Composable,
    *,
    definer: bool = True,
    lock_timeout: str | None = None,
) -> sql.Composed:
    """`lock_timeout`: how long any statement of the function waits for a lock (the
    caller's own setting is restored when it returns)."""
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {name}({args}) RETURNS {returns} LANGUAGE plpgsql VOLATILE"
        " {definer} {search_path}{lock_timeout} AS {body}"
    ).format(
        name=name,
        args=sql.SQL(args),
        returns=sql.SQL(returns),
        definer=sql.SQL("SECURITY DEFINER" if definer else "SECURITY INVOKER"),
        search_path=SEARCH_PATH,
        lock_timeout=sql.SQL(" SET lock_timeout = {}").format(sql.Literal(lock_timeout))
        if lock_timeout
        else sql.SQL(""),
        body=sql.Literal(body.as_string(conn)),
    )


def take_lock_ddl(conn: psycopg.Connection[Any], schema: str) -> sql.Composed:
    """`logins_take_lock(name, timeout)`: lock the control row FOR UPDATE, trying for at most
    `timeout`; else raise 55P03 naming the login and pid that hold it. It polls with SKIP
    LOCKED rather than catching a lock_timeout: an exception block is a subtransaction, and
    a row locked in one names a subtransaction id that pg_locks does not show, so the holder
    could not be named. Not SECURITY DEFINER and executable by nobody but the owner: only
    the functions here call it."""
    control = sql.Identifier(schema, CONTROL_TABLE)
    body = sql.SQL(
        "DECLARE v_until timestamptz := pg_catalog.clock_timestamp() + p_timeout::interval;"
        " v_who text; v_pid integer; v_since timestamptz;"
        " BEGIN"
        " LOOP"
        "  PERFORM 1 FROM {control} c WHERE c.name = p_name FOR UPDATE SKIP LOCKED;"
        "  EXIT WHEN FOUND;"
        "  IF NOT EXISTS (SELECT 1 FROM {control} c WHERE c.name = p_name) THEN"
        "   RAISE EXCEPTION 'no control row %: run logins migrate', p_name"
        "   USING ERRCODE = '55000'; END IF;"
        "  IF pg_catalog.clock_timestamp() > v_until THEN"
        "   SELECT a.usename::text, a.pid, a.backend_start INTO v_who, v_pid, v_since"
        "    FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid"
        "    WHERE l.locktype = 'transactionid' AND l.granted AND l.mode = 'ExclusiveLock'"
        "    AND l.transactionid = (SELECT c.xmax FROM {control} c WHERE c.name = p_name)"
        "    LIMIT 1;"
        "   RAISE EXCEPTION '% is held by login % (pid %, connected since %); waited %',"
        "    p_name, COALESCE(v_who, '?'), COALESCE(v_pid::text, '?'),"
        "    COALESCE(v_since::text, '?'), p_timeout USING ERRCODE = '55P03',"
        "    HINT = {hint};"
        "  END IF;"
        "  PERFORM pg_catalog.pg_sleep(0.05);"
        " END LOOP;"
        " END"
    ).format(control=control, hint=sql.Literal(END_IT_HINT))
    return definer_function(
        conn,
        sql.Identifier(schema, TAKE_LOCK),
        "p_name text, p_timeout text",
        "void",
        body,
        definer=False,
    )


def row_lock_handler(
    what: str, xmaxes: sql.Composable, tables: list[tuple[str, str]]
) -> sql.Composed:
    """An EXCEPTION clause for a block whose statements waited longer than the function's
    lock_timeout: re-raise 55P03 naming the login and pid of the transaction that holds the
    rows (the xmax of the rows `xmaxes` selects), else of a transaction that holds a lock on
    one of `tables` ((schema, name) pairs). A 55P03 with a hint (logins_take_lock's, which
    names its holder) passes through. Needs `v_who text; v_pid integer; v_since timestamptz;
    v_hint text` declared."""
    return sql.SQL(
        " EXCEPTION WHEN lock_not_available THEN"
        "  GET STACKED DIAGNOSTICS v_hint = PG_EXCEPTION_HINT;"
        "  IF v_hint <> '' THEN RAISE; END IF;"
        "  SELECT a.usename::text, a.pid, a.backend_start INTO v_who, v_pid, v_since"
        "   FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid"
        "   WHERE l.pid <> pg_catalog.pg_backend_pid() AND l.granted"
        "   AND ((l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock'"
        "    AND l.transactionid IN ({xmaxes}))"
        "    OR (l.locktype = 'relation' AND l.relation = ANY(ARRAY[{tables}]::pg_catalog.oid[])"
        "     AND l.mode <> 'AccessShareLock'))"
        "   ORDER BY l.locktype = 'transactionid' DESC LIMIT 1;"
        "  RAISE EXCEPTION '% waited % for rows held by login % (pid %, connected since %)',"
        "   {what}, pg_catalog.current_setting('lock_timeout'), COALESCE(v_who, '?'),"
        "   COALESCE(v_pid::text, '?'), COALESCE(v_since::text, '?')"
        "   USING ERRCODE = '55P03', HINT = {hint};"
    ).format(
        xmaxes=xmaxes,
        tables=sql.SQL(", ").join(
            sql.SQL("pg_catalog.to_regclass(pg_catalog.format('%I.%I', {}, {}))").format(
                sql.Literal(schema), sql.Literal(name)
            )
            for schema, name in tables
        ),
        what=sql.Literal(what),
        hint=sql.Literal(END_IT_HINT),
    )


class Busy(RuntimeError):
    """A lock of these functions is held by another session (the message names it)."""


def busy(exc: psycopg.Error) -> Busy:
    """The lock's holder as PostgreSQL named it, and what to do."""
    hint = f" ({exc.diag.message_hint})" if exc.diag.message_hint else ""
    return Busy(f"{exc.diag.message_primary}{hint}")
