"""Idempotent schema migrations: safe on an empty database, run again, from several workers
at once (an advisory lock serialises them), and on an existing sink table with rows such as
the producer team's `user_logins` (columns are only ever added, never retyped or dropped).
The sink table's columns come from the declared fields (connectors/postgres/schema.py).

Run by the owner (a login granted `logins_owner`) or a superuser. In one transaction: create
the NOLOGIN roles if missing (connectors/postgres/roles.py; needs CREATEROLE the first time), hand
every existing object to `logins_owner`, then, as `logins_owner` (SET LOCAL ROLE), create
what is missing in its current form, run the upgrade steps from the recorded schema version
(`UPGRADES`; none yet: version 1 is the first release), re-create the functions
(logins/core/auditsql.py, logins/core/vaultsql.py) and re-apply every grant, and record the
schema version (connectors/postgres/schemaversion.py). The flow calls `ensure_schema`:
nothing at all when the recorded version is current, so a role that cannot run DDL starts
fine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from connectors.postgres import ledger, roles, schemaversion
from connectors.postgres.schema import Column, TableSchema, table_schema
from connectors.postgres.schemaversion import (
    VERSION_TABLE,
    SchemaError,
    SchemaState,
    fingerprint,
    state,
)
from connectors.postgres.serverversion import require_supported
from logins.core import audit, controlsql, vaultsql
from logins.core.auditsql import SEARCH_PATH, append_function_ddl
from logins.core.config import AppConfig
from logins.core.vaultschema import tables

__all__ = ["LOCK_ID", "SchemaMismatch", "migrate", "on_connect"]

LOCK_ID = 7_417_301  # pg_advisory_xact_lock key for migrations

Upgrade = Callable[[psycopg.Connection[Any], AppConfig, str], None]
# The steps from one schema version to the next: `UPGRADES[n]` takes a database recorded at
# version n - 1 to version n, run by `migrate` (as the owner, in its transaction, with the
# schema's name) after the statements above have created whatever is missing in its current
# form, for every n above the recorded version up to SCHEMA_VERSION. A fresh database gets
# the current form and no step. Version 1 is the first release, so there is none yet.
UPGRADES: dict[int, Upgrade] = {}


class SchemaMismatch(RuntimeError):
    """A declared column exists with another type: migrations never retype a column."""


class PublicSchemaOpen(SchemaMismatch):
    """PUBLIC may CREATE in the schema (PostgreSQL < 15's default for `public`) and this login
    may not revoke it: the migration refuses, naming the statement to run (reported by
    `logins migrate` like a mismatch)."""


def _close_schema_to_public(conn: psycopg.Connection[Any]) -> None:
    """Before PostgreSQL 15 every role may CREATE in schema `public`: the pipeline's login
    could create a table or a function there. Revoke that from PUBLIC in `public` and in the
    schema the tables go to, or refuse with the statement a schema owner must run."""
    open_schemas = [
        str(name)
        for (name,) in conn.execute(
            "SELECT n.nspname::text FROM pg_namespace n, aclexplode(COALESCE(n.nspacl,"
            " acldefault('n', n.nspowner))) a WHERE n.nspname IN ('public', current_schema())"
            " AND a.grantee = 0 AND a.privilege_type = 'CREATE' ORDER BY 1"
        ).fetchall()
    ]
    for name in open_schemas:
        revoke = sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(name))
        try:
            with conn.transaction():
                conn.execute(revoke)
                still = conn.execute(
                    "SELECT has_schema_privilege('public', %s, 'CREATE')", (name,)
                ).fetchone()
                if still and still[0]:
                    raise psycopg.errors.InsufficientPrivilege("revoke had no effect")
        except psycopg.errors.InsufficientPrivilege:
            raise PublicSchemaOpen(
                f"every role may CREATE in schema {name} (PostgreSQL before 15 grants it to"
                " PUBLIC), so the pipeline's login could create objects there, and this login"
                " may not revoke it: run, as the schema's owner or a superuser,"
                f" `{revoke.as_string(conn)};` then `logins migrate` again"
            ) from None


def _column_ddl(column: Column) -> sql.Composed:
    default = (
        sql.SQL(" DEFAULT {}").format(sql.SQL(column.default)) if column.default else sql.SQL("")
    )
    return sql.SQL("{} {}{}").format(sql.Identifier(column.name), sql.SQL(column.sql_type), default)


def _sink_table(cur: psycopg.Cursor[Any], schema: TableSchema) -> None:
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


def _statements(config: AppConfig) -> list[sql.Composed | sql.SQL]:
    """Every table, index and trigger besides the sink table and the ledger, in its current
    form (version 1 is the first release: nothing here upgrades an earlier shape).

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
      (logins/core/vaultsql.py).
    """
    sink, vault = config.sink, config.vault
    t = tables(config)
    rejected, duplicates = sql.Identifier(t.rejected), sql.Identifier(sink.duplicates_table)
    audit_table = sql.Identifier(t.audit)
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " message_id text NOT NULL,"
            " reason text NOT NULL,"
            " detail text NOT NULL,"
            " sealed_body bytea NOT NULL,"
            " vault_key_id text NOT NULL,"
            " sent_at timestamptz,"
            " create_date date,"
            " receive_count integer,"
            " rejected_at timestamptz NOT NULL DEFAULT now(),"
            " body_erased_at timestamptz)"
        ).format(rejected),
        # erasure and rotation look rejected bodies up, and page through them, by message id
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (message_id)").format(
            sql.Identifier(f"{t.rejected}_message_id_idx"), rejected
        ),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (rejected_at)").format(
            sql.Identifier(f"{t.rejected}_rejected_at_idx"), rejected
        ),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " message_id text NOT NULL,"
            " sent_at timestamptz,"
            " create_date date,"
            " recorded_at timestamptz NOT NULL DEFAULT now())"
        ).format(duplicates),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " token text PRIMARY KEY,"
            " field text NOT NULL,"
            " sealed bytea NOT NULL,"
            " vault_key_id text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now(),"
            " entry_id uuid NOT NULL DEFAULT gen_random_uuid())"
        ).format(sql.Identifier(vault.table)),
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (entry_id)").format(
            sql.Identifier(f"{t.vault}_entry_id_key"), sql.Identifier(t.vault)
        ),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " id bigserial PRIMARY KEY,"
            " at timestamptz NOT NULL DEFAULT now(),"
            " actor text NOT NULL,"
            " reason text NOT NULL,"
            " action text NOT NULL,"
            " tokens text[] NOT NULL,"
            " succeeded integer NOT NULL,"
            " failed integer NOT NULL,"
            " detail jsonb,"
            " prev_hash text,"
            " row_hash text,"
            " note text,"
            " hash_version smallint)"
        ).format(audit_table),
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (prev_hash)").format(
            sql.Identifier(f"{t.audit}_prev_hash_key"), audit_table
        ),
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
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " marker text PRIMARY KEY,"
            " field text,"
            " erased_at timestamptz NOT NULL DEFAULT now(),"
            " audit_id bigint)"
        ).format(sql.Identifier(t.erasures)),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " old_token text NOT NULL,"
            " new_token text NOT NULL,"
            " field text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
            " PRIMARY KEY (old_token, new_token))"
        ).format(sql.Identifier(t.aliases)),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (new_token)").format(
            sql.Identifier(f"{t.aliases}_new_token_idx"), sql.Identifier(t.aliases)
        ),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " scope text PRIMARY KEY,"
            " version integer NOT NULL,"
            " fingerprint text NOT NULL,"
            " migrated_at timestamptz NOT NULL DEFAULT now(),"
            " migrated_by text NOT NULL DEFAULT session_user)"
        ).format(sql.Identifier(VERSION_TABLE)),
        *controlsql.control_statements(config),
        *vaultsql.inbox_statements(config),
    ]


def _ledger(conn: psycopg.Connection[Any], config: AppConfig, schema: str) -> None:
    """The partitioned ledger, the owner's retention and the maintenance function
    (connectors/postgres/ledger.py), then its partitions made current."""
    name = config.sink.ledger_table
    conn.execute(ledger.maintain_function_ddl(conn, name, schema))
    for statement in ledger.create_statements(name):
        conn.execute(statement)
    for statement in ledger.control_statements(name, config.sink.ledger_retention_days):
        conn.execute(statement)
    conn.execute(
        sql.SQL("SELECT {}()").format(sql.Identifier(schema, ledger.maintain_function(name)))
    )


def _trigger_once(trigger: str, table: str, function: str) -> sql.Composed:
    """A BEFORE INSERT row trigger, created only if missing: re-creating it at every start
    would lock the table against the pipelines still writing to it."""
    return sql.SQL(
        "DO $logins$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = {trigger}"
        " AND tgrelid = to_regclass(quote_ident({table}))) THEN EXECUTE format("
        "'CREATE TRIGGER %I BEFORE INSERT ON %I FOR EACH ROW EXECUTE FUNCTION %I()',"
        " {trigger}, {table}, {function}); END IF; END $logins$"
    ).format(trigger=sql.Literal(trigger), table=sql.Literal(table), function=sql.Literal(function))


def _unified_view(config: AppConfig, conn: psycopg.Connection) -> sql.Composed:
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


def _shape(config: AppConfig) -> list[tuple[str, str]]:
    return [(c.name, c.sql_type) for c in table_schema(config).row]


def schema_state(conn: psycopg.Connection[Any], config: AppConfig) -> SchemaState:
    """The recorded schema version against what this release and config need."""
    return state(conn, config, _shape(config))


def ensure_schema(conn: psycopg.Connection[Any], config: AppConfig, *, allow_migrate: bool) -> None:
    """At the flow's start: nothing if the schema is current (no DDL is attempted); else
    migrate if allowed and permitted, or raise SchemaError saying what to do."""
    found = schema_state(conn, config)
    if not conn.autocommit:
        conn.commit()
    if found.current:
        return
    if not allow_migrate:
        raise SchemaError(
            f"{found.describe()}; sink.migrate is false, so the flow does not migrate:"
            " run `logins migrate` as the owner (a member of logins_owner) or a superuser"
        )
    try:
        migrate(conn, config)
    except psycopg.errors.InsufficientPrivilege as exc:
        if not conn.autocommit:
            conn.rollback()
        user = conn.info.parameter_status("session_authorization") or "this role"
        raise SchemaError(
            f"{found.describe()}, and {user} may not migrate it ({exc.sqlstate}:"
            f" {exc.diag.message_primary}): run `logins migrate` as the owner (a member of"
            " logins_owner) or a superuser"
        ) from None


def _take_ownership(conn: psycopg.Connection[Any], config: AppConfig) -> None:
    """Hand every existing object of ours to logins_owner (the migrator must own it or be a
    superuser): the producer team's table, and whatever an earlier release's pipeline role
    created and so owned."""
    found = conn.execute(
        "SELECT x.kind, x.name FROM unnest(%s::text[], %s::text[]) AS x(kind, name)"
        " JOIN pg_class c ON c.oid = to_regclass(quote_ident(x.name))"
        " WHERE pg_get_userbyid(c.relowner) <> %s",
        (
            [k for k, _ in roles.object_names(config)],
            [n for _, n in roles.object_names(config)],
            roles.OWNER,
        ),
    ).fetchall()
    found += conn.execute(  # the ledger's partitions (connectors/postgres/ledger.py)
        "SELECT 'TABLE', c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = to_regclass(quote_ident(%s)) AND pg_get_userbyid(c.relowner) <> %s",
        (config.sink.ledger_table, roles.OWNER),
    ).fetchall()
    for kind, name in found:
        conn.execute(
            sql.SQL("ALTER {} {} OWNER TO {}").format(
                sql.SQL(kind), sql.Identifier(name), sql.Identifier(roles.OWNER)
            )
        )
    functions = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.oid = ANY(ARRAY["
        " to_regprocedure('logins_append_only()'), to_regprocedure('logins_audit_chained()'),"
        " to_regprocedure(quote_ident(%s) || '(text, text, text, integer, integer, jsonb)'),"
        " to_regprocedure(quote_ident(%s) || '()')])"
        " AND pg_get_userbyid(p.proowner) <> %s",
        (
            audit.append_function(config),
            ledger.maintain_function(config.sink.ledger_table),
            roles.OWNER,
        ),
    ).fetchall()
    for (signature,) in functions:
        conn.execute(
            sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(
                sql.SQL(signature),  # regprocedure's own, quoted text
                sql.Identifier(roles.OWNER),
            )
        )


def _prepare_roles(conn: psycopg.Connection[Any]) -> None:
    """Roles, and what the owner needs to create objects and the others to reach them: CREATE
    on the schema for the owner; CONNECT, TEMPORARY (the sink's stage tables) and USAGE for
    the others where PUBLIC does not already give them (a hardened database)."""
    for statement in roles.create_roles():
        conn.execute(statement)
    conn.execute(
        sql.SQL(
            "DO $logins$ DECLARE r text; BEGIN"
            " IF NOT has_schema_privilege({owner}, current_schema(), 'CREATE') THEN"
            "  EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO %I', current_schema(), {owner});"
            " END IF;"
            " FOREACH r IN ARRAY {others}::text[] LOOP"
            "  IF NOT has_schema_privilege(r, current_schema(), 'USAGE') THEN"
            "   EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), r); END IF;"
            "  IF NOT has_database_privilege(r, current_database(), 'CONNECT') THEN"
            "   EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), r);"
            "  END IF;"
            " END LOOP;"
            " IF NOT has_database_privilege({pipeline}, current_database(), 'TEMPORARY') THEN"
            "  EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %I', current_database(),"
            "  {pipeline}); END IF;"
            " END $logins$"
        ).format(
            owner=sql.Literal(roles.OWNER),
            others=sql.Literal(list(roles.GRANTEES)),
            pipeline=sql.Literal(roles.PIPELINE),
        )
    )


def migrate(conn: psycopg.Connection[Any], config: AppConfig) -> None:
    """Apply every migration in one transaction, serialised across workers and processes."""
    require_supported(conn)  # UnsupportedServer: an old server, refused before anything runs
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        _close_schema_to_public(conn)
        _prepare_roles(conn)
        _take_ownership(conn, config)
        cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(roles.OWNER)))
        got = cur.execute("SELECT current_schema()").fetchone()
        assert got is not None
        schema = str(got[0])
        recorded = schema_state(conn, config).have
        _sink_table(cur, table_schema(config))
        for statement in _statements(config):
            cur.execute(statement)
        _ledger(conn, config, schema)
        for version in sorted(UPGRADES):
            if recorded is not None and recorded < version <= schemaversion.SCHEMA_VERSION:
                UPGRADES[version](conn, config, schema)
        cur.execute(_unified_view(config, conn))
        cur.execute(append_function_ddl(conn, config, schema))
        for statement in vaultsql.function_ddl(conn, config, schema):
            cur.execute(statement)
        sequence = cur.execute(
            "SELECT pg_get_serial_sequence(%s, 'id')",
            (sql.Identifier(config.vault.audit_table).as_string(conn),),
        ).fetchone()
        assert sequence is not None and sequence[0] is not None
        columns = [c.name for c in table_schema(config).row]
        for statement in roles.grants(config, columns, schema, str(sequence[0])):
            cur.execute(statement)
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (scope, version, fingerprint) VALUES (%s, %s, %s)"
                " ON CONFLICT (scope) DO UPDATE SET"
                " version = GREATEST(EXCLUDED.version, {}.version),"
                " fingerprint = EXCLUDED.fingerprint, migrated_at = now(),"
                " migrated_by = session_user"
            ).format(sql.Identifier(VERSION_TABLE), sql.Identifier(VERSION_TABLE)),
            (config.sink.table, schemaversion.SCHEMA_VERSION, fingerprint(config, _shape(config))),
        )


def on_connect(config: AppConfig) -> Callable[[psycopg.Connection[Any]], None]:
    """What the sink runs on each new connection: the schema check, which migrates an older
    schema only if `sink.migrate` (else it stops, naming the versions and `logins migrate`)."""
    return functools.partial(ensure_schema, config=config, allow_migrate=config.sink.migrate)
