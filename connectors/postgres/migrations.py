"""Idempotent schema migrations: safe on an empty database, run again, from several workers
at once (an advisory lock serialises them), and on an existing sink table with rows such as
the producer team's `user_logins` (columns are only ever added, never retyped or dropped).
The sink table's columns come from the declared fields (connectors/postgres/schema.py).

Run by the owner (a login granted `logins_owner`) or a superuser. In one transaction: create
the NOLOGIN roles if missing (connectors/postgres/roles.py; needs CREATEROLE the first time),
hand every existing object to `logins_owner`, then, as `logins_owner` (SET LOCAL ROLE), create
what is missing in its current form (connectors/postgres/ddl.py), run the upgrade steps from
the recorded schema version (`UPGRADES`; none yet: version 1 is the first release), re-create
the functions (logins/core/auditsql.py, logins/core/vaultsql.py) and re-apply every grant, and
record the schema version (connectors/postgres/schemaversion.py). The flow calls `ensure_schema`:
nothing at all when the recorded version is current, so a role that cannot run DDL starts
fine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from connectors.postgres import ddl, ledger, roles, schemaversion
from connectors.postgres.ddl import SchemaMismatch
from connectors.postgres.schema import table_schema
from connectors.postgres.schemaversion import (
    VERSION_TABLE,
    SchemaError,
    SchemaState,
    fingerprint,
    state,
)
from connectors.postgres.serverversion import require_supported
from logins.core import audit, vaultsql
from logins.core.auditsql import append_function_ddl
from logins.core.config import AppConfig

__all__ = ["LOCK_ID", "SchemaMismatch", "migrate", "on_connect"]

LOCK_ID = 7_417_301  # pg_advisory_xact_lock key for migrations

Upgrade = Callable[[psycopg.Connection[Any], AppConfig, str], None]
# The steps from one schema version to the next: `UPGRADES[n]` takes a database recorded at
# version n - 1 to version n, run by `migrate` (as the owner, in its transaction, with the
# schema's name) after connectors/postgres/ddl.py has created whatever is missing in its current
# form, for every n above the recorded version up to SCHEMA_VERSION. A fresh database gets
# the current form and no step. Version 1 is the first release, so there is none yet.
UPGRADES: dict[int, Upgrade] = {}


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
        ddl.sink_table(cur, table_schema(config))
        for statement in ddl.statements(config):
            cur.execute(statement)
        _ledger(conn, config, schema)
        for version in sorted(UPGRADES):
            if recorded is not None and recorded < version <= schemaversion.SCHEMA_VERSION:
                UPGRADES[version](conn, config, schema)
        cur.execute(ddl.unified_view(config, conn))
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
