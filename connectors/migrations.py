"""Idempotent schema migrations: safe on an empty database, on every start, from several
workers at once (an advisory lock serialises them), and on the producer team's existing
`user_logins` table with rows (columns are only ever added, never changed or dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from logins.config import AppConfig, MaskStep

# The analysts' table as the producer team published it: every column stays, with its type.
ANALYST_COLUMNS = (
    ("user_id", "varchar(128)"),
    ("device_type", "varchar(32)"),
    ("masked_ip", "varchar(256)"),
    ("masked_device_id", "varchar(256)"),
    ("locale", "varchar(32)"),
    ("app_version", "integer"),
    ("create_date", "date"),
)
LOCK_ID = 7_417_301  # pg_advisory_xact_lock key for migrations


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str


def row_columns(config: AppConfig) -> list[Column]:
    """The columns the sink writes for a row, in COPY order: the schema's fields after masking,
    then the delivery's columns. Version fields give an integer and its exact text."""
    masked: dict[str, str] = {}
    for step in config.steps:
        if isinstance(step, MaskStep):
            masked.update(step.fields)
    columns = []
    for name, spec in config.validate_step.fields.items():
        if name in masked:
            columns.append(Column(masked[name], "varchar(256)"))
        elif spec.type == "version":
            columns += [Column(name, "integer"), Column(f"{name}_text", "text")]
        else:
            columns.append(Column(name, "text"))
    return [
        *columns,
        Column("message_id", "text"),
        Column("sent_at", "timestamptz"),
        Column("create_date", "date"),
    ]


def _statements(config: AppConfig) -> list[sql.Composed | sql.SQL]:
    sink, vault = config.sink, config.vault
    table = sql.Identifier(sink.table)
    analyst = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in ANALYST_COLUMNS
    )
    existing = {n for n, _ in ANALYST_COLUMNS}
    added = [c for c in row_columns(config) if c.name not in existing]
    statements: list[sql.Composed | sql.SQL] = [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, analyst),
        *(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                table, sql.Identifier(c.name), sql.SQL(c.sql_type)
            )
            for c in added
        ),
        sql.SQL(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS loaded_at timestamptz DEFAULT now()"
        ).format(table),
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (message_id)").format(
            sql.Identifier(f"{sink.table}_message_id_key"), table
        ),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " message_id text PRIMARY KEY,"
            " outcome text NOT NULL CHECK (outcome IN ('row', 'rejected', 'duplicate')),"
            " sent_at timestamptz,"
            " committed_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(sink.ledger_table)),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " message_id text PRIMARY KEY,"
            " reason text NOT NULL,"
            " detail text NOT NULL,"
            " sealed_body bytea NOT NULL,"
            " vault_key_id text NOT NULL,"
            " sent_at timestamptz,"
            " create_date date,"
            " receive_count integer,"
            " rejected_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(sink.rejected_table)),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " message_id text PRIMARY KEY,"
            " duplicate_of text NOT NULL,"
            " sent_at timestamptz,"
            " create_date date,"
            " recorded_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(sink.duplicates_table)),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " token text PRIMARY KEY,"
            " field text NOT NULL,"
            " sealed bytea NOT NULL,"
            " vault_key_id text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(vault.table)),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " id bigserial PRIMARY KEY,"
            " at timestamptz NOT NULL DEFAULT now(),"
            " actor text NOT NULL,"
            " reason text NOT NULL,"
            " action text NOT NULL,"
            " tokens text[] NOT NULL,"
            " succeeded integer NOT NULL,"
            " failed integer NOT NULL)"
        ).format(sql.Identifier(vault.audit_table)),
        sql.SQL(
            "CREATE OR REPLACE FUNCTION logins_append_only() RETURNS trigger"
            " LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME; END $$"
        ),
        sql.SQL("DROP TRIGGER IF EXISTS logins_append_only ON {}").format(
            sql.Identifier(vault.audit_table)
        ),
        sql.SQL(
            "CREATE TRIGGER logins_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {}"
            " FOR EACH STATEMENT EXECUTE FUNCTION logins_append_only()"
        ).format(sql.Identifier(vault.audit_table)),
    ]
    return statements


def migrate(conn: psycopg.Connection, config: AppConfig) -> None:
    """Apply every migration in one transaction, serialised across workers and processes."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        for statement in _statements(config):
            cur.execute(statement)
