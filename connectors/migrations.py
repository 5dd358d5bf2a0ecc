"""Idempotent schema migrations: safe on an empty database, on every start, from several
workers at once (an advisory lock serialises them), and on the producer team's existing
`user_logins` table with rows (columns are only ever added, never changed or dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from logins.config import AppConfig, MaskStep
from logins.vaultschema import tables

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
        *_vault_statements(config),
    ]
    return statements


def _vault_statements(config: AppConfig) -> list[sql.Composed | sql.SQL]:
    """Audit hash chain, erasure tombstones, rotation aliases (all additive and idempotent).

    * `pii_audit` gains `detail`, `prev_hash`, `row_hash`. Rows written before have no hash:
      the chain starts at the first hashed row (see logins/audit.py). From then on a row
      without a hash is refused, and no two rows may claim the same predecessor.
    * `pii_erasures` holds the tokens `logins forget` erased; a trigger on the vault skips
      an insert of such a token, so a later login with the same value does not re-seal it.
    * `pii_token_aliases` maps a token under an old token key to the same value's token
      under the new key (`logins rotate run`).
    * `user_logins_rejected.body_erased_at`: when `logins forget` erased a sealed body.
    """
    t = tables(config)
    audit = sql.Identifier(t.audit)
    erasures, aliases = sql.Identifier(t.erasures), sql.Identifier(t.aliases)
    skip_erased = sql.Identifier(f"{t.vault}_skip_erased")
    return [
        *(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                audit, sql.Identifier(name), sql.SQL(kind)
            )
            for name, kind in (("detail", "jsonb"), ("prev_hash", "text"), ("row_hash", "text"))
        ),
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (prev_hash)").format(
            sql.Identifier(f"{t.audit}_prev_hash_key"), audit
        ),
        sql.SQL(
            "CREATE OR REPLACE FUNCTION logins_audit_chained() RETURNS trigger"
            " LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.row_hash IS NULL OR NEW.prev_hash IS NULL THEN"
            " RAISE EXCEPTION 'table % is hash-chained: a row needs prev_hash and row_hash"
            " (written by an older logins? upgrade it)', TG_TABLE_NAME; END IF;"
            " RETURN NEW; END $$"
        ),
        _trigger_once("logins_audit_chained", t.audit, "logins_audit_chained"),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " token text PRIMARY KEY,"
            " field text,"
            " erased_at timestamptz NOT NULL DEFAULT now(),"
            " audit_id bigint)"
        ).format(erasures),
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF EXISTS (SELECT 1 FROM {} e WHERE e.token = NEW.token) THEN RETURN NULL; END IF;"
            " RETURN NEW; END $$"
        ).format(skip_erased, erasures),
        _trigger_once("logins_skip_erased", t.vault, f"{t.vault}_skip_erased"),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " old_token text NOT NULL,"
            " new_token text NOT NULL,"
            " field text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
            " PRIMARY KEY (old_token, new_token))"
        ).format(aliases),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (new_token)").format(
            sql.Identifier(f"{t.aliases}_new_token_idx"), aliases
        ),
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS body_erased_at timestamptz").format(
            sql.Identifier(t.rejected)
        ),
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


def migrate(conn: psycopg.Connection, config: AppConfig) -> None:
    """Apply every migration in one transaction, serialised across workers and processes."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        for statement in _statements(config):
            cur.execute(statement)
        cur.execute(_unified_view(config, conn))
