"""The audit table's append function: the only way the vault roles can write an audit row.

`<audit table>_append(action, reason, note, succeeded, failed, detail)` is SECURITY DEFINER
(it runs as the table's owner, `logins_owner`) with a pinned `search_path`, and every name in
it is schema-qualified, so a caller's own objects (a temporary table called `pii_audit`, a
function shadowing `sha256`) cannot stand in for ours. It records `session_user` (the login
that authenticated; `SET ROLE` does not change it) as the actor, takes the chain's lock, the
next id and `clock_timestamp()` itself, and computes the version-2 hash exactly as
`logins.core.audit.canonical_v2` does. So a caller can neither pick the actor, the time or the id
nor write a row that does not extend the chain, and with no INSERT grant it cannot bypass
the function. EXECUTE is revoked from PUBLIC and granted to nobody: the vault roles append
only through the function of their action (logins/core/vaultsql.py), which calls this one.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from logins.core.audit import ACTIONS, V2_TAG, append_function, genesis
from logins.core.config import AppConfig
from logins.core.controlsql import LOCK_TIMEOUT, SEARCH_PATH, TAKE_LOCK, audit_lock

__all__ = ["SEARCH_PATH", "append_function_ddl", "append_function_signature"]


def _field(expression: str) -> str:
    """One field of the version-2 canonical form: 4-byte length (-1 for NULL) + UTF-8."""
    utf8 = f"pg_catalog.convert_to({expression}, 'UTF8')"
    return (
        f"pg_catalog.int4send(COALESCE(pg_catalog.octet_length({utf8}), -1))"
        f" || COALESCE({utf8}, ''::bytea)"
    )


def append_function_ddl(
    conn: psycopg.Connection[Any], config: AppConfig, schema: str
) -> sql.Composed:
    """CREATE OR REPLACE the append function for this config's audit table in `schema`.
    The chain's order is kept by a control row (logins/core/vaultsql.py) that only the
    owner's functions can lock, never an advisory lock anyone could hold."""
    audit = sql.Identifier(schema, config.vault.audit_table)
    function = sql.Identifier(schema, append_function(config))
    canonical = " || ".join(
        _field(e)
        for e in (
            "v_tag",
            "v_id::text",
            "pg_catalog.to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            "v_actor",
            "p_note",
            "p_reason",
            "p_action",
            "'[]'::text",
            "p_succeeded::text",
            "p_failed::text",
            "p_detail::text",
        )
    )
    body = sql.SQL(
        "DECLARE v_tag text := {tag}; v_prev text; v_id bigint; v_at timestamptz;"
        " v_actor text := session_user::text; v_hash text;"
        " BEGIN"
        " IF p_action IS NULL OR p_action NOT IN ({actions}) THEN"
        "  RAISE EXCEPTION 'audit: unknown action %', p_action USING ERRCODE = '22023'; END IF;"
        " IF p_reason IS NULL OR pg_catalog.btrim(p_reason) = '' THEN"
        "  RAISE EXCEPTION 'audit: a reason is required' USING ERRCODE = '22023'; END IF;"
        " IF p_succeeded IS NULL OR p_failed IS NULL OR p_succeeded < 0 OR p_failed < 0 THEN"
        "  RAISE EXCEPTION 'audit: counts must be >= 0' USING ERRCODE = '22023'; END IF;"
        " PERFORM {take_lock}({lock}, {timeout});"
        " SELECT a.row_hash INTO v_prev FROM {audit} a WHERE a.row_hash IS NOT NULL"
        "  ORDER BY a.id DESC LIMIT 1;"
        " v_prev := COALESCE(v_prev, {genesis});"
        " v_id := pg_catalog.nextval(pg_catalog.pg_get_serial_sequence({audit_name}, 'id'));"
        " v_at := pg_catalog.clock_timestamp();"
        " v_hash := pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(v_prev, 'UTF8')"
        "  || pg_catalog.decode('0a', 'hex') || {canonical}), 'hex');"
        " INSERT INTO {audit} (id, at, actor, note, reason, action, tokens, succeeded, failed,"
        "  detail, hash_version, prev_hash, row_hash) VALUES (v_id, v_at, v_actor, p_note,"
        "  p_reason, p_action, '{{}}'::text[], p_succeeded, p_failed, p_detail, 2, v_prev,"
        "  v_hash);"
        " RETURN QUERY SELECT v_id, v_at, v_actor, v_prev, v_hash, p_detail::text;"
        " END"
    ).format(
        tag=sql.Literal(V2_TAG),
        actions=sql.SQL(", ").join(sql.Literal(a) for a in ACTIONS),
        take_lock=sql.Identifier(schema, TAKE_LOCK),
        lock=sql.Literal(audit_lock(config)),
        timeout=sql.Literal(LOCK_TIMEOUT),
        audit=audit,
        audit_name=sql.Literal(audit.as_string(conn)),
        genesis=sql.Literal(genesis()),
        canonical=sql.SQL(canonical),
    )
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {function}(p_action text, p_reason text, p_note text,"
        " p_succeeded integer, p_failed integer, p_detail jsonb)"
        " RETURNS TABLE (audit_id bigint, audit_at timestamptz, audit_actor text,"
        " audit_prev_hash text, audit_row_hash text, audit_detail text)"
        " LANGUAGE plpgsql VOLATILE SECURITY DEFINER {search_path} AS {body}"
    ).format(function=function, search_path=SEARCH_PATH, body=sql.Literal(body.as_string(conn)))


def append_function_signature(config: AppConfig, schema: str) -> sql.Composed:
    """The function with its argument types, as GRANT and REVOKE name it."""
    return sql.SQL("{}(text, text, text, integer, integer, jsonb)").format(
        sql.Identifier(schema, append_function(config))
    )
