"""The schema's objects in their current form, as `logins migrate` creates them: the sink
table from the declared fields (connectors/postgres/schema.py), the outcome, vault, audit,
erasure, alias and version tables with their indexes and triggers, and the view that maps
every masked column to its newest token. Every statement is idempotent; version 1 is the
first release, so nothing here upgrades an earlier shape (connectors/postgres/migrations.py
runs these, and the upgrade steps a later version adds).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from connectors.postgres.schema import Column, TableSchema
from connectors.postgres.schemaversion import VERSION_TABLE
from logins.core import controlsql, inboxsql
from logins.core.auditsql import SEARCH_PATH
from logins.core.config import AppConfig
from logins.core.vaultschema import tables

__all__ = ["SchemaMismatch", "sink_table", "statements", "unified_view"]


class SchemaMismatch(RuntimeError):
    """A declared column exists with another type: migrations never retype a column."""


def _column_ddl(column: Column) -> sql.Composed:
    default = (
        sql.SQL(" DEFAULT {}").format(sql.SQL(column.default)) if column.default else sql.SQL("")
    )
    return sql.SQL("{} {}{}").format(sql.Identifier(column.name), sql.SQL(column.sql_type), default)


def sink_table(cur: psycopg.Cursor[Any], schema: TableSchema) -> None:
    """Create the sink table from the declared fields, or add the columns it lacks. A
    declared column whose existing type differs stops the start, naming both types."""
    table = sql.Identifier(schema.table)
    existing = dict(
        cur.execute(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = to_regclass(quote_ident(%s)) AND attnum > 0 AND NOT attisdropped",
            (schema.table,),
        ).fetchall()
    )
    if not existing:
        cur.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                table, sql.SQL(", ").join(_column_ddl(c) for c in schema.ddl)
            )
        )
        return
    wrong = [
        f"{c.name} is {existing[c.name]}, declared {c.catalog_type}"
        for c in schema.ddl
        if c.name in existing and existing[c.name] != c.catalog_type
    ]
    if wrong:
        raise SchemaMismatch(
            f"table {schema.table}: {'; '.join(wrong)}. Migrations never retype a column:"
            " change the declared field, or migrate the column yourself"
        )
    for column in schema.ddl:
        if column.name not in existing:
            # Added without its default, which is then set for new rows only: the rows already
            # there get NULL (a `loaded_at` of now() would claim they were loaded by this
            # migration), the rows the flow writes get the default.
            added = sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                table, sql.Identifier(column.name), sql.SQL(column.sql_type)
            )
            if column.default:
                added += sql.SQL(", ALTER COLUMN {} SET DEFAULT {}").format(
                    sql.Identifier(column.name), sql.SQL(column.default)
                )
            cur.execute(added)


def _table(name: str, *columns: str) -> sql.Composed:
    """`CREATE TABLE IF NOT EXISTS name ( column, ...)`, the columns as SQL text."""
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ( {})").format(
        sql.Identifier(name), sql.SQL(", ".join(columns))
    )


def _index(table: str, column: str, *, unique: bool = False) -> sql.Composed:
    """An index on one column, named `<table>_<column>_idx` (`_key` if unique)."""
    kind, suffix = ("UNIQUE INDEX", "key") if unique else ("INDEX", "idx")
    return sql.SQL("CREATE {} IF NOT EXISTS {} ON {} ({})").format(
        sql.SQL(kind),
        sql.Identifier(f"{table}_{column}_{suffix}"),
        sql.Identifier(table),
        sql.SQL(column),
    )


def statements(config: AppConfig) -> list[sql.Composed | sql.SQL]:
    """Every table, index and trigger besides the sink table and the ledger.

    * One unique key per message: the ledger's (connectors/postgres/ledger.py); the outcome
      tables get rows only for the ids it claimed in the same statement, so they have none.
    * The audit table is append-only (a trigger) and hash-chained (logins/core/audit.py): a
      row without a hash is refused, no two rows may claim the same predecessor.
    * `pii_vault.entry_id`: a random surrogate id per entry; the audit names entries by it,
      never by token, so an audit row says nothing about the value once the entry is gone.
    * `pii_erasures`: one row per erased value, keyed by the random marker `logins forget`
      put in the masked columns instead of its token (logins/pii/erasure.py). No token.
    * `pii_token_aliases` maps a token under an old token key to the same value's token
      under the new key (`logins rotate run`).
    * `logins_control` (locks and the owner's settings) and the vault's inbox
      (logins/core/inboxsql.py).
    """
    t = tables(config)
    audit_table = sql.Identifier(t.audit)
    return [
        _table(
            t.rejected,
            "message_id text NOT NULL",
            "reason text NOT NULL",
            "detail text NOT NULL",
            "sealed_body bytea NOT NULL",
            "vault_key_id text NOT NULL",
            "sent_at timestamptz",
            "create_date date",
            "receive_count integer",
            "rejected_at timestamptz NOT NULL DEFAULT now()",
            "body_erased_at timestamptz",
        ),
        # erasure and rotation look rejected bodies up, and page through them, by message id
        _index(t.rejected, "message_id"),
        _index(t.rejected, "rejected_at"),
        _table(
            config.sink.duplicates_table,
            "message_id text NOT NULL",
            "sent_at timestamptz",
            "create_date date",
            "recorded_at timestamptz NOT NULL DEFAULT now()",
        ),
        _table(
            t.vault,
            "token text PRIMARY KEY",
            "field text NOT NULL",
            "sealed bytea NOT NULL",
            "vault_key_id text NOT NULL",
            "created_at timestamptz NOT NULL DEFAULT now()",
            "entry_id uuid NOT NULL DEFAULT gen_random_uuid()",
        ),
        _index(t.vault, "entry_id", unique=True),
        _table(
            t.audit,
            "id bigserial PRIMARY KEY",
            "at timestamptz NOT NULL DEFAULT now()",
            "actor text NOT NULL",
            "reason text NOT NULL",
            "action text NOT NULL",
            "tokens text[] NOT NULL",
            "succeeded integer NOT NULL",
            "failed integer NOT NULL",
            "detail jsonb",
            "prev_hash text",
            "row_hash text",
            "note text",
            "hash_version smallint",
        ),
        _index(t.audit, "prev_hash", unique=True),
        sql.SQL(
            "CREATE OR REPLACE FUNCTION logins_append_only() RETURNS trigger"
            " LANGUAGE plpgsql {} AS $$ BEGIN"
            " RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME; END $$"
        ).format(SEARCH_PATH),
        sql.SQL("DROP TRIGGER IF EXISTS logins_append_only ON {}").format(audit_table),
        sql.SQL(
            "CREATE TRIGGER logins_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {}"
            " FOR EACH STATEMENT EXECUTE FUNCTION logins_append_only()"
        ).format(audit_table),
        sql.SQL(
            "CREATE OR REPLACE FUNCTION logins_audit_chained() RETURNS trigger"
            " LANGUAGE plpgsql {} AS $$ BEGIN"
            " IF NEW.row_hash IS NULL OR NEW.prev_hash IS NULL THEN"
            " RAISE EXCEPTION 'table % is hash-chained: a row needs prev_hash and row_hash',"
            " TG_TABLE_NAME; END IF;"
            " RETURN NEW; END $$"
        ).format(SEARCH_PATH),
        _trigger_once("logins_audit_chained", t.audit, "logins_audit_chained"),
        _table(
            t.erasures,
            "marker text PRIMARY KEY",
            "field text",
            "erased_at timestamptz NOT NULL DEFAULT now()",
            "audit_id bigint",
        ),
        _table(
            t.aliases,
            "old_token text NOT NULL",
            "new_token text NOT NULL",
            "field text NOT NULL",
            "created_at timestamptz NOT NULL DEFAULT clock_timestamp()",
            "PRIMARY KEY (old_token, new_token)",
        ),
        _index(t.aliases, "new_token"),
        _table(
            VERSION_TABLE,
            "scope text PRIMARY KEY",
            "version integer NOT NULL",
            "fingerprint text NOT NULL",
            "migrated_at timestamptz NOT NULL DEFAULT now()",
            "migrated_by text NOT NULL DEFAULT session_user",
        ),
        *controlsql.control_statements(config),
        *inboxsql.inbox_statements(config),
    ]


def _trigger_once(trigger: str, table: str, function: str) -> sql.Composed:
    """A BEFORE INSERT row trigger, created only if missing: re-creating it at every start
    would lock the table against the pipelines still writing to it."""
    return sql.SQL(
        "DO $logins$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = {trigger}"
        " AND tgrelid = to_regclass(quote_ident({table}))) THEN EXECUTE format("
        "'CREATE TRIGGER %I BEFORE INSERT ON %I FOR EACH ROW EXECUTE FUNCTION %I()',"
        " {trigger}, {table}, {function}); END IF; END $logins$"
    ).format(trigger=sql.Literal(trigger), table=sql.Literal(table), function=sql.Literal(function))


def unified_view(config: AppConfig, conn: psycopg.Connection) -> sql.Composed:
    """`<table>_unified`: every column of the sink table, plus `<masked column>_current`, the
    newest token of the same value (via the aliases of `logins rotate run`), so that analysts
    match a value across old and new tokens. Replaced only if its columns are not what they
    should be, and never allowed to fail a start (an analyst's view on top of it, say)."""
    t = tables(config)
    table, aliases = sql.Identifier(t.sink), sql.Identifier(t.aliases)
    current = [
        sql.SQL(
            "COALESCE((SELECT a.new_token FROM {aliases} a WHERE a.old_token = t.{col}"
            " ORDER BY a.created_at DESC, a.new_token DESC LIMIT 1), t.{col}) AS {name}"
        ).format(aliases=aliases, col=sql.Identifier(col), name=sql.Identifier(f"{col}_current"))
        for col in t.masked.values()
    ]
    select = sql.SQL("SELECT t.*{} FROM {} t").format(
        sql.SQL("").join(sql.SQL(", ") + c for c in current), table
    )
    view = sql.Identifier(t.unified_view)
    create = sql.SQL("CREATE OR REPLACE VIEW {} AS {}").format(view, select).as_string(conn)
    drop = sql.SQL("DROP VIEW IF EXISTS {}").format(view).as_string(conn)
    fresh = sql.SQL("CREATE VIEW {} AS {}").format(view, select).as_string(conn)
    extra = [f"{col}_current" for col in t.masked.values()]
    body = sql.SQL(
        "DECLARE want text[]; have text[]; BEGIN"
        " SELECT array_agg(x ORDER BY x) INTO want FROM (SELECT attname::text AS x"
        "  FROM pg_attribute WHERE attrelid = to_regclass({table}) AND attnum > 0"
        "  AND NOT attisdropped UNION ALL SELECT unnest({extra}::text[])) s;"
        " SELECT array_agg(attname::text ORDER BY attname::text) INTO have FROM pg_attribute"
        "  WHERE attrelid = to_regclass({view}) AND attnum > 0 AND NOT attisdropped;"
        " IF have IS NOT DISTINCT FROM want THEN RETURN; END IF;"
        " BEGIN EXECUTE {create};"
        " EXCEPTION WHEN others THEN"
        "  BEGIN EXECUTE {drop}; EXECUTE {fresh};"
        "  EXCEPTION WHEN others THEN"
        "   RAISE WARNING 'view % not updated: %', {view}, SQLERRM;"
        "  END;"
        " END; END"
    ).format(
        table=sql.Literal(sql.Identifier(t.sink).as_string(conn)),
        view=sql.Literal(view.as_string(conn)),
        extra=sql.Literal(extra),
        create=sql.Literal(create),
        drop=sql.Literal(drop),
        fresh=sql.Literal(fresh),
    )
    return sql.SQL("DO {}").format(sql.Literal(body.as_string(conn)))
