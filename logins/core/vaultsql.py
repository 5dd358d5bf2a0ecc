"""The SECURITY DEFINER functions the vault roles act through: each makes one kind of change
and writes its audit row in the same transaction.

Only the owner changes the vault, the aliases, the token columns and the rejected bodies
directly. The revealer, eraser, rotator and pipeline roles hold no INSERT, UPDATE or DELETE
on them; each calls the functions below (EXECUTE revoked from PUBLIC, granted to one role by
connectors/postgres/roles.py). Every function runs as `logins_owner` with `search_path`
pinned to `pg_catalog, pg_temp`, names every object schema-qualified, and appends its audit
row through the internal append function (logins/core/auditsql.py), which records
`session_user`, the login: never a name the caller passes. An audit row of each kind is
written only by the function of that kind:

    <prefix>forget(tokens, rejected ids, reason, note, detail)   eraser   action forget
    <prefix>purge(reason, note)                                  eraser   action purge
    <prefix>rotate(reason, note, detail, ..., old, new, sealed)  rotator  action rotate
    <prefix>rekey(reason, note, detail, ..., keys, sealed)       rotator  action rekey
    <audit>_reveal(reason, note, succeeded, failed, detail)      revealer action reveal
    <vault>_put(tokens, fields, sealed, key ids) -> void         pipeline (no audit row)
    <vault>_flush() -> void                                      pipeline and the three above

`forget` and each rotation batch take the erasure lock, and every append the audit lock:
rows of `logins_control` that only the owner's functions can lock (logins/core/controlsql.py),
so nobody can stall an erasure from outside, and a second one fails fast naming the first.

The pipeline's vault entries go first to `<vault>_inbox`, and `put` and `flush` move them into
the vault so that no caller learns whether a value was there already (logins/core/inboxsql.py).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from logins.core.audit import append_function, reveal_function
from logins.core.config import AppConfig
from logins.core.controlsql import (
    CONTROL_TABLE,
    LOCK_TIMEOUT,
    ROW_LOCK_TIMEOUT,
    TAKE_LOCK,
    definer_function,
    erasure_lock,
    rejected_retention,
    row_lock_handler,
    take_lock_ddl,
)
from logins.core.inboxsql import flush_body, inbox_table, put_body
from logins.core.vaultschema import VaultTables, tables

__all__ = ["flush", "function_ddl", "inbox_table", "names", "signature"]


def names(config: AppConfig) -> dict[str, str]:
    """Function name by operation."""
    t = tables(config)
    prefix = t.aliases[: -len("token_aliases")]
    return {
        "forget": f"{prefix}forget",
        "purge": f"{prefix}purge",
        "rotate": f"{prefix}rotate",
        "rekey": f"{prefix}rekey",
        "reveal": reveal_function(config),
        "put": f"{t.vault}_put",
        "flush": f"{t.vault}_flush",
    }


# Each function's parameters, by operation, as its body names them.
PARAMETERS = {
    "forget": "p_tokens text[], p_rejected text[], p_reason text, p_note text, p_detail jsonb",
    "purge": "p_reason text, p_note text",
    "rotate": "p_reason text, p_note text, p_detail jsonb, p_succeeded integer, p_failed integer,"
    " p_old text[], p_new text[], p_sealed bytea[], p_key_ids text[]",
    "rekey": "p_reason text, p_note text, p_detail jsonb, p_succeeded integer, p_failed integer,"
    " p_rejected boolean, p_keys text[], p_sealed bytea[], p_from text, p_to text",
    "reveal": "p_reason text, p_note text, p_succeeded integer, p_failed integer, p_detail jsonb",
    "put": "p_tokens text[], p_fields text[], p_sealed bytea[], p_key_ids text[]",
    "flush": "",
}


def signature(config: AppConfig, schema: str, operation: str) -> sql.Composed:
    """The function with its argument types, as GRANT, REVOKE and ownership checks name it."""
    types = ", ".join(p.split()[1] for p in PARAMETERS[operation].split(", ") if p)
    return sql.SQL("{}({})").format(
        sql.Identifier(schema, names(config)[operation]), sql.SQL(types)
    )


def _append(schema: str, config: AppConfig) -> sql.Identifier:
    return sql.Identifier(schema, append_function(config))


def _lock(schema: str, name: str) -> sql.Composed:
    return sql.SQL("PERFORM {}({}, {});").format(
        sql.Identifier(schema, TAKE_LOCK), sql.Literal(name), sql.Literal(LOCK_TIMEOUT)
    )


def function_ddl(
    conn: psycopg.Connection[Any], config: AppConfig, schema: str
) -> list[sql.Composed]:
    """CREATE OR REPLACE every function of this module for `config` in `schema`."""
    t = tables(config)
    n = names(config)

    def define(
        operation: str, returns: str, body: sql.Composed, lock_timeout: str | None = None
    ) -> sql.Composed:
        return definer_function(
            conn,
            sql.Identifier(schema, n[operation]),
            PARAMETERS[operation],
            returns,
            body,
            lock_timeout=lock_timeout,
        )

    return [
        take_lock_ddl(conn, schema),
        define("forget", "jsonb", _forget(config, t, schema), ROW_LOCK_TIMEOUT),
        define("purge", "jsonb", _purge(config, t, schema), ROW_LOCK_TIMEOUT),
        define("rotate", "integer", _rotate(config, t, schema)),
        define("rekey", "integer", _rekey(config, t, schema)),
        define(
            "reveal",
            "TABLE (audit_id bigint, audit_at timestamptz, audit_actor text,"
            " audit_prev_hash text, audit_row_hash text, audit_detail text)",
            _reveal(config, schema),
        ),
        define("put", "void", put_body(schema, config)),
        # its own transaction: an asynchronous commit loses nothing (a crash before the WAL
        # is flushed leaves the rows in the inbox, for the next put or flush)
        define(
            "flush",
            "void",
            sql.SQL(
                "BEGIN PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);{} END"
            ).format(flush_body(schema, config)),
        ),
    ]


def _forget(config: AppConfig, t: VaultTables, schema: str) -> sql.Composed:
    """Erase the values of `p_tokens` (each expanded through the aliases, under the erasure
    lock so no rotation adds one meanwhile): a random marker per value in every masked
    column, the aliases and inbox and vault entries deleted, the named rejected bodies
    emptied, the audit row and one `erasures` row per marker. The vault rows go last, so
    a pipeline batch offering one of these tokens waits only for the rest of this call."""
    vault, aliases = sql.Identifier(schema, t.vault), sql.Identifier(schema, t.aliases)
    rewrite = sql.SQL("").join(
        sql.SQL(
            " UPDATE {sink} s SET {col} = m.marker FROM unnest(v_tokens, v_markers)"
            "  AS m(token, marker) WHERE s.{col} = m.token;"
            " GET DIAGNOSTICS v_n = ROW_COUNT; v_rows := v_rows + v_n;"
        ).format(sink=sql.Identifier(schema, t.sink), col=sql.Identifier(column))
        for column in t.masked.values()
    )
    return sql.SQL(
        "DECLARE v_seed text; v_group text[]; v_marker text; v_tokens text[] := '{{}}';"
        " v_markers text[] := '{{}}'; v_values integer := 0; v_rows integer := 0;"
        " v_n integer; v_aliases integer := 0; v_rejected text[]; v_erased text[];"
        " v_fields text[];"
        " v_entries jsonb; v_audit bigint;"
        " v_who text; v_pid integer; v_since timestamptz; v_hint text;"
        " BEGIN"
        " IF p_reason IS NULL OR pg_catalog.btrim(p_reason) = '' THEN"
        "  RAISE EXCEPTION 'forget: a reason is required' USING ERRCODE = '22023'; END IF;"
        " {lock}"
        # the erasure lock above is the top transaction's (its holder can be named); the
        # rest is a block whose lock waits end after lock_timeout naming who holds the rows
        " BEGIN"
        # what the pipeline committed to the inbox counts as in the vault
        " {flush}"
        " FOREACH v_seed IN ARRAY COALESCE(p_tokens, '{{}}') LOOP"
        "  CONTINUE WHEN v_seed = ANY(v_tokens);"
        "  WITH RECURSIVE c(tok) AS (SELECT v_seed UNION SELECT CASE WHEN a.old_token = c.tok"
        "   THEN a.new_token ELSE a.old_token END FROM {aliases} a JOIN c"
        "   ON a.old_token = c.tok OR a.new_token = c.tok)"
        "  SELECT pg_catalog.array_agg(c.tok) INTO v_group FROM c;"
        "  v_marker := 'erased:' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text,"
        "   '-', '');"
        "  v_tokens := v_tokens || v_group;"
        "  v_markers := v_markers || pg_catalog.array_fill(v_marker,"
        "   ARRAY[pg_catalog.cardinality(v_group)]);"
        "  v_values := v_values + 1;"
        " END LOOP;"
        " {rewrite}"
        " DELETE FROM {aliases} a WHERE a.old_token = ANY(v_tokens)"
        "  OR a.new_token = ANY(v_tokens);"
        " GET DIAGNOSTICS v_aliases = ROW_COUNT;"
        " WITH e AS (UPDATE {rejected} r SET sealed_body = ''::bytea, body_erased_at = now()"
        "  WHERE r.message_id = ANY(COALESCE(p_rejected, '{{}}'))"
        "  AND pg_catalog.octet_length(r.sealed_body) > 0 RETURNING r.message_id)"
        "  SELECT COALESCE(pg_catalog.array_agg(e.message_id), '{{}}') INTO v_rejected FROM e;"
        " DELETE FROM {inbox} i WHERE i.token = ANY(v_tokens);"
        " WITH d AS (DELETE FROM {vault} v WHERE v.token = ANY(v_tokens)"
        "  RETURNING v.token, v.entry_id, v.field)"
        " SELECT COALESCE(pg_catalog.array_agg(d.token ORDER BY d.token), '{{}}'),"
        "  COALESCE(pg_catalog.array_agg(d.field ORDER BY d.token), '{{}}'),"
        "  COALESCE(pg_catalog.jsonb_agg(d.entry_id::text ORDER BY d.token), '[]')"
        "  INTO v_erased, v_fields, v_entries FROM d;"
        " SELECT a.audit_id INTO v_audit FROM {append}('forget', p_reason, p_note,"
        "  pg_catalog.cardinality(v_erased),"
        "  pg_catalog.cardinality(v_tokens) - pg_catalog.cardinality(v_erased),"
        # the caller's words stay apart from what this function did (review finding 9)
        "  pg_catalog.jsonb_build_object('requested', COALESCE(p_detail, '{{}}'::jsonb),"
        "   'entries', v_entries, 'values', v_values, 'rows_rewritten', v_rows,"
        "   'aliases_deleted', v_aliases,"
        "   'rejected_bodies_erased', pg_catalog.cardinality(v_rejected))) a;"
        " INSERT INTO {erasures} (marker, field, audit_id)"
        "  SELECT m.marker, (SELECT e.field FROM unnest(v_erased, v_fields)"
        "   AS e(token, field) JOIN unnest(v_tokens, v_markers) AS g(token, marker)"
        "   ON g.token = e.token WHERE g.marker = m.marker LIMIT 1), v_audit"
        "  FROM (SELECT DISTINCT x.marker FROM unnest(v_markers) AS x(marker)) m;"
        " RETURN pg_catalog.jsonb_build_object('audit_id', v_audit,"
        "  'erased', pg_catalog.to_jsonb(v_erased),"
        "  'absent', (SELECT COALESCE(pg_catalog.jsonb_agg(x.token), '[]')"
        "   FROM unnest(v_tokens) AS x(token) WHERE x.token <> ALL(v_erased)),"
        "  'rows_rewritten', v_rows, 'aliases_deleted', v_aliases,"
        "  'rejected_erased', pg_catalog.to_jsonb(v_rejected));"
        " {handler} END;"
        " END"
    ).format(
        handler=row_lock_handler(
            "forget",
            sql.SQL(
                "SELECT i.xmax FROM {inbox} i WHERE i.token = ANY(v_tokens)"
                " UNION ALL SELECT v.xmax FROM {vault} v WHERE v.token = ANY(v_tokens)"
                " UNION ALL SELECT r.xmax FROM {rejected} r"
                "  WHERE r.message_id = ANY(COALESCE(p_rejected, '{{}}'))"
            ).format(
                inbox=sql.Identifier(schema, inbox_table(config)),
                vault=vault,
                rejected=sql.Identifier(schema, t.rejected),
            ),
            [
                (schema, inbox_table(config)),
                (schema, t.vault),
                (schema, t.sink),
                (schema, t.aliases),
                (schema, t.rejected),
            ],
        ),
        lock=_lock(schema, erasure_lock(config)),
        flush=flush_body(schema, config, always=True),
        aliases=aliases,
        rewrite=rewrite,
        rejected=sql.Identifier(schema, t.rejected),
        inbox=sql.Identifier(schema, inbox_table(config)),
        vault=vault,
        append=_append(schema, config),
        erasures=sql.Identifier(schema, t.erasures),
    )


def _purge(config: AppConfig, t: VaultTables, schema: str) -> sql.Composed:
    """Empty the sealed rejected bodies older than the owner's retention (a setting of
    `logins_control` that `logins migrate` writes, never the caller's argument: issue 18's
    review, finding 9), with the purge audit row."""
    return sql.SQL(
        "DECLARE v_cutoff timestamptz; v_n integer; v_audit bigint; p_days integer;"
        " v_who text; v_pid integer; v_since timestamptz; v_hint text;"
        " BEGIN"
        " SELECT c.value INTO p_days FROM {control} c WHERE c.name = {setting};"
        " IF p_days IS NULL OR p_days < 1 THEN"
        "  RAISE EXCEPTION 'no retention of sealed rejected bodies is set (%): set"
        " sink.rejected_retention_days and run logins migrate as the owner', {setting}"
        "  USING ERRCODE = '22023';"
        " END IF;"
        " v_cutoff := now() - pg_catalog.make_interval(days => p_days);"
        " BEGIN"
        " UPDATE {rejected} r SET sealed_body = ''::bytea, body_erased_at = now()"
        "  WHERE r.rejected_at < v_cutoff AND pg_catalog.octet_length(r.sealed_body) > 0;"
        " GET DIAGNOSTICS v_n = ROW_COUNT;"
        " {handler} END;"
        " SELECT a.audit_id INTO v_audit FROM {append}('purge', p_reason, p_note, v_n, 0,"
        "  pg_catalog.jsonb_build_object('table', {table}, 'retention_days', p_days,"
        "  'cutoff', v_cutoff)) a;"
        " RETURN pg_catalog.jsonb_build_object('purged', v_n, 'cutoff', v_cutoff,"
        "  'audit_id', v_audit, 'retention_days', p_days);"
        " END"
    ).format(
        rejected=sql.Identifier(schema, t.rejected),
        append=_append(schema, config),
        table=sql.Literal(t.rejected),
        control=sql.Identifier(schema, CONTROL_TABLE),
        setting=sql.Literal(rejected_retention(config)),
        handler=row_lock_handler(
            "purge",
            sql.SQL(
                "SELECT r.xmax FROM {} r WHERE r.rejected_at < v_cutoff"
                " AND pg_catalog.octet_length(r.sealed_body) > 0"
            ).format(sql.Identifier(schema, t.rejected)),
            [(schema, t.rejected)],
        ),
    )


def _rotate(config: AppConfig, t: VaultTables, schema: str) -> sql.Composed:
    """One rotation batch (or, with no entries, a start or done row): for each old token
    still in the vault (locked FOR SHARE, under the erasure lock, so an erased value does not
    come back) a new entry with the old entry's field and the alias; the audit row counts
    what was written."""
    vault = sql.Identifier(schema, t.vault)
    aliases = sql.Identifier(schema, t.aliases)
    return sql.SQL(
        "DECLARE v_n integer := 0; v_key text; v_bad text;"
        " BEGIN"
        " IF pg_catalog.cardinality(COALESCE(p_old, '{{}}')) > 0 THEN"
        # the batch's new tokens are tokens under the key its rotation's start row declared,
        # not the old token's key, and neither old tokens nor an alias cycle (issue 18's
        # review, finding 4: a raw value or another value's token aliased to a victim's)
        "  SELECT a.detail->>'to_token_key' INTO v_key FROM {audit} a WHERE a.action = 'rotate'"
        "   AND a.detail->>'phase' = 'start' ORDER BY a.id DESC LIMIT 1;"
        "  IF v_key IS NULL THEN RAISE EXCEPTION 'rotate: no rotation started (its start row"
        " declares the new token key)' USING ERRCODE = '22023'; END IF;"
        "  IF pg_catalog.cardinality(p_old) <> pg_catalog.cardinality(p_new)"
        "   OR pg_catalog.cardinality(p_old) <> pg_catalog.cardinality(p_sealed)"
        "   OR pg_catalog.cardinality(p_old) <> pg_catalog.cardinality(p_key_ids) THEN"
        "   RAISE EXCEPTION 'rotate: the arrays differ in length' USING ERRCODE = '22023';"
        "  END IF;"
        "  SELECT x.new INTO v_bad FROM unnest(p_old, p_new) AS x(old, new)"
        "   WHERE x.new IS NULL OR x.new !~ '^[A-Za-z0-9]+\\.[0-9a-f]{{32}}$'"
        "   OR pg_catalog.split_part(x.new, '.', 1) <> v_key"
        "   OR pg_catalog.split_part(x.old, '.', 1) = v_key"
        "   OR EXISTS (SELECT 1 FROM {aliases} a WHERE a.old_token = x.new)"
        "   OR EXISTS (SELECT 1 FROM {vault} o JOIN {vault} n ON n.token = x.new"
        "    WHERE o.token = x.old AND n.field <> o.field) LIMIT 1;"
        "  IF FOUND THEN RAISE EXCEPTION 'rotate: % is not a token under the new key %"
        " for a token under another key (or is an old token, or of another field)',"
        "   COALESCE(pg_catalog.left(v_bad, 40), 'NULL'), v_key USING ERRCODE = '22023';"
        "  END IF;"
        "  {lock}"
        "  WITH kept AS (SELECT x.old, x.new, v.field, x.sealed, x.k"
        "   FROM unnest(p_old, p_new, p_sealed, p_key_ids) AS x(old, new, sealed, k)"
        "   JOIN (SELECT o.token, o.field FROM {vault} o WHERE o.token = ANY(p_old) FOR SHARE) v"
        "   ON v.token = x.old),"
        "  entries AS (INSERT INTO {vault} (token, field, sealed, vault_key_id)"
        "   SELECT k.new, k.field, k.sealed, k.k FROM kept k ORDER BY k.new"
        "   ON CONFLICT (token) DO NOTHING),"
        "  links AS (INSERT INTO {aliases} (old_token, new_token, field)"
        "   SELECT k.old, k.new, k.field FROM kept k ON CONFLICT DO NOTHING)"
        "  SELECT pg_catalog.count(*) INTO v_n FROM kept;"
        "  p_succeeded := v_n;"
        " END IF;"
        " PERFORM 1 FROM {append}('rotate', p_reason, p_note, p_succeeded, p_failed,"
        "  COALESCE(p_detail, '{{}}'::jsonb)) a;"
        " RETURN v_n;"
        " END"
    ).format(
        lock=_lock(schema, erasure_lock(config)),
        vault=vault,
        aliases=aliases,
        audit=sql.Identifier(schema, config.vault.audit_table),
        append=_append(schema, config),
    )


def _rekey(config: AppConfig, t: VaultTables, schema: str) -> sql.Composed:
    """One rekey batch (or a start or done row): re-sealed vault entries (by token) or
    rejected bodies (by message id) still under `p_from`. A body emptied meanwhile (forget,
    purge) stays empty: the row must still be in the state the caller read."""
    return sql.SQL(
        "DECLARE v_n integer := 0; v_from text; v_to text;"
        " BEGIN"
        " IF pg_catalog.cardinality(COALESCE(p_keys, '{{}}')) > 0 THEN"
        # re-sealed to another key pair, the one its start row declared: never over the
        # same key (issue 18's review, finding 5: junk over any entry, a body hidden)
        "  SELECT a.detail->>'from_vault_key', a.detail->>'to_vault_key' INTO v_from, v_to"
        "   FROM {audit} a WHERE a.action = 'rekey' AND a.detail->>'phase' = 'start'"
        "   ORDER BY a.id DESC LIMIT 1;"
        "  IF p_from IS NULL OR p_to IS NULL OR p_from = p_to THEN"
        "   RAISE EXCEPTION 'rekey: the new vault key must differ from the old'"
        "   USING ERRCODE = '22023'; END IF;"
        "  IF v_from IS DISTINCT FROM p_from OR v_to IS DISTINCT FROM p_to THEN"
        "   RAISE EXCEPTION 'rekey: % -> % is not the rekey its start row declared (% -> %)',"
        "   p_from, p_to, COALESCE(v_from, 'none'), COALESCE(v_to, 'none')"
        "   USING ERRCODE = '22023'; END IF;"
        "  IF pg_catalog.cardinality(p_keys) <> pg_catalog.cardinality(p_sealed) THEN"
        "   RAISE EXCEPTION 'rekey: the arrays differ in length' USING ERRCODE = '22023';"
        "  END IF;"
        "  IF p_rejected THEN"
        "   UPDATE {rejected} r SET sealed_body = x.sealed, vault_key_id = p_to"
        "    FROM unnest(p_keys, p_sealed) AS x(k, sealed)"
        "    WHERE r.message_id = x.k AND r.vault_key_id = p_from"
        "    AND (pg_catalog.octet_length(r.sealed_body) > 0)"
        "     = (pg_catalog.octet_length(x.sealed) > 0);"
        "  ELSE"
        "   UPDATE {vault} v SET sealed = x.sealed, vault_key_id = p_to"
        "    FROM unnest(p_keys, p_sealed) AS x(k, sealed)"
        "    WHERE v.token = x.k AND v.vault_key_id = p_from"
        "    AND pg_catalog.octet_length(x.sealed) > 0;"
        "  END IF;"
        "  GET DIAGNOSTICS v_n = ROW_COUNT;"
        "  p_succeeded := v_n;"
        " END IF;"
        " PERFORM 1 FROM {append}('rekey', p_reason, p_note, p_succeeded, p_failed,"
        "  COALESCE(p_detail, '{{}}'::jsonb)) a;"
        " RETURN v_n;"
        " END"
    ).format(
        rejected=sql.Identifier(schema, t.rejected),
        vault=sql.Identifier(schema, t.vault),
        audit=sql.Identifier(schema, config.vault.audit_table),
        append=_append(schema, config),
    )


def _reveal(config: AppConfig, schema: str) -> sql.Composed:
    """The revealer's audit row: action `reveal`, nothing else."""
    return sql.SQL(
        "BEGIN RETURN QUERY SELECT * FROM {append}('reveal', p_reason, p_note, p_succeeded,"
        " p_failed, p_detail); END"
    ).format(append=_append(schema, config))


def flush(conn: psycopg.Connection[Any], config: AppConfig) -> None:
    """Move the pipeline's committed inbox entries into the vault (before a reveal, a
    rotation: so they find what the pipeline sealed moments ago)."""
    with conn.transaction():
        conn.execute(sql.SQL("SELECT {}()").format(sql.Identifier(names(config)["flush"])))
