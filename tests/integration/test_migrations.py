"""Tables from the declared schema, against a real PostgreSQL: created from the fields,
upgraded by adding columns only, a declared column of another type refused at start, and
the upgrade steps a future schema version will add run once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from connectors.postgres import migrations, schemaversion
from connectors.postgres.migrations import SchemaMismatch, ensure_schema, migrate
from connectors.postgres.schemaversion import SchemaError
from logins.core.config import AppConfig, ConfigError, load_config
from logins.core.config.models import LONGEST_SUFFIX, PG_NAME_MAX_BYTES
from tests.helpers import config_for, fetch

# The producer team's DDL exactly as published (DESIGN.md, README).
PUBLISHED_DDL = (
    "CREATE TABLE {name}(user_id varchar(128), device_type varchar(32),"
    " masked_ip varchar(256), masked_device_id varchar(256), locale varchar(32),"
    " app_version integer, create_date date)"
)
STREAM = """
source: {type: sqs, queue_url: "http://q"}
steps:
  - type: validate
    fields:
      name:  {type: string, max_length: 40}
      n:     {type: integer}
      x:     {type: number}
      flag:  {type: boolean}
      at:    {type: timestamp}
      plan:  {type: enum, values: [a, b]}
      v:     {type: version}
      email: {type: string, pii: true}
  - type: mask
    fields: {email: masked_email}
sink: {type: postgres, dsn: "%s", table: things}
tokens: {key_file: /k}
vault: {public_key_file: /v, table: things_vault}
"""


def columns(conn: Any, table: str) -> list[tuple[str, str]]:
    return [
        (name, kind)
        for name, kind in fetch(
            conn,
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
            " ORDER BY attnum",
            table,
        )
    ]


def stream(tmp_path: Path, database_url: str, text: str = STREAM) -> AppConfig:
    path = tmp_path / "things.yaml"
    path.write_text(text % database_url)
    return load_config({"LOGINS_CONFIG": str(path)})


def test_a_fresh_database_gets_the_published_ddl_for_the_shipped_config(
    flow_env: dict[str, str], database_url: str
) -> None:
    config = config_for(flow_env)
    with psycopg.connect(database_url) as conn:
        migrate(conn, config)
        conn.execute(PUBLISHED_DDL.format(name="published"))
        made = columns(conn, "user_logins")
        assert made[:7] == columns(conn, "published")  # same names, order and types
        assert made[7:] == [
            ("app_version_text", "text"),
            ("message_id", "text"),
            ("sent_at", "timestamp with time zone"),
            ("loaded_at", "timestamp with time zone"),
        ]
        tables = {r[0] for r in fetch(conn, "SELECT tablename FROM pg_tables")}
        assert {"user_logins_rejected", "user_logins_duplicates", "logins_ledger"} <= tables


def test_every_field_type_gets_its_column_type(tmp_path: Path, database_url: str) -> None:
    config = stream(tmp_path, database_url)
    with psycopg.connect(database_url) as conn:
        migrate(conn, config)
        migrate(conn, config)  # idempotent
        assert columns(conn, "things") == [
            ("name", "character varying(40)"),
            ("n", "bigint"),
            ("x", "double precision"),
            ("flag", "boolean"),
            ("at", "timestamp with time zone"),
            ("plan", "text"),
            ("v", "integer"),
            ("v_text", "text"),
            ("masked_email", "character varying(256)"),
            ("message_id", "text"),
            ("sent_at", "timestamp with time zone"),
            ("create_date", "date"),
            ("loaded_at", "timestamp with time zone"),
        ]
        tables = {r[0] for r in fetch(conn, "SELECT tablename FROM pg_tables")}
        assert {
            "things_rejected",
            "things_duplicates",
            "things_ledger",
            "things_vault",
            "things_erasures",
            "things_token_aliases",
        } <= tables


def test_an_existing_table_gains_the_declared_columns_and_keeps_its_own(
    tmp_path: Path, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE things (name varchar(40), legacy text)")
        conn.execute("INSERT INTO things VALUES ('a', 'kept')")
        conn.commit()
        migrate(conn, stream(tmp_path, database_url))
        made = columns(conn, "things")
        assert made[:2] == [("name", "character varying(40)"), ("legacy", "text")]
        assert ("flag", "boolean") in made and ("loaded_at", "timestamp with time zone") in made
        assert fetch(conn, "SELECT name, legacy FROM things") == [("a", "kept")]
        # the row from before the migration was not loaded by it: loaded_at NULL; a new row
        # gets the column's default
        assert fetch(conn, "SELECT loaded_at FROM things") == [(None,)]
        conn.execute("INSERT INTO things (name) VALUES ('b')")
        assert fetch(conn, "SELECT loaded_at IS NOT NULL FROM things WHERE name = 'b'") == [(True,)]


@pytest.mark.parametrize(
    ("existing", "mismatch"),
    [
        ("name text", "name is text, declared character varying(40)"),
        ("name varchar(20)", "name is character varying(20), declared character varying(40)"),
        ("n integer", "n is integer, declared bigint"),
        ("at timestamp", "at is timestamp without time zone, declared timestamp with time zone"),
    ],
)
def test_a_declared_column_of_another_type_stops_the_start(
    tmp_path: Path, database_url: str, existing: str, mismatch: str
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(f"CREATE TABLE things ({existing})")
        conn.commit()
        before = columns(conn, "things")
        with pytest.raises(SchemaMismatch) as info:
            migrate(conn, stream(tmp_path, database_url))
        assert str(info.value).startswith(f"table things: {mismatch}.")
        assert "never retype" in str(info.value)
        conn.rollback()
        assert columns(conn, "things") == before  # nothing added, nothing changed
        assert fetch(conn, "SELECT to_regclass('things_ledger')") == [(None,)]


def test_a_future_version_2_migration_runs_once_on_a_version_1_database(
    flow_env: dict[str, str], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mechanism a schema change will use: a step in UPGRADES, SCHEMA_VERSION raised; the
    version check stops a flow that may not migrate, `migrate` runs the step once as the
    owner and records the version; a database migrated at version 2 never sees it."""
    config = config_for(flow_env)
    with psycopg.connect(database_url) as conn:
        migrate(conn, config)
        assert fetch(conn, "SELECT version FROM logins_schema_version") == [(1,)]
    ran: list[tuple[str, str]] = []

    def to_version_2(conn: psycopg.Connection[Any], config: AppConfig, schema: str) -> None:
        user = conn.execute("SELECT current_user::text").fetchone()
        ran.append((schema, str(user[0]) if user else ""))
        conn.execute("ALTER TABLE user_logins ADD COLUMN added_in_v2 text")

    monkeypatch.setattr(schemaversion, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(migrations.UPGRADES, 2, to_version_2)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(SchemaError, match="schema version 1, older than the 2"):
            ensure_schema(conn, config, allow_migrate=False)
        ensure_schema(conn, config, allow_migrate=True)
        migrate(conn, config)  # again: the step is behind it
        assert ran == [("public", "logins_owner")]
        assert fetch(conn, "SELECT version FROM logins_schema_version") == [(2,)]
        assert ("added_in_v2", "text") in columns(conn, "user_logins")


def _names_yaml(longer: str = "") -> str:
    """Every configured table name at its limit (`longer`: that key one byte over it)."""
    names = {
        key: key.split(".")[1][0] * (PG_NAME_MAX_BYTES - len(suffix) + (key == longer))
        for key, suffix in LONGEST_SUFFIX.items()
    }
    sink = "".join(f"  {k.split('.')[1]}: {v}\n" for k, v in names.items() if k.startswith("sink"))
    vault = "".join(
        f"  {k.split('.')[1]}: {v}\n" for k, v in names.items() if k.startswith("vault")
    )
    return f"sink:\n{sink}  ledger_table: {'l' * 53}\nvault:\n{vault}"


def test_names_at_their_limits_are_made_whole_and_one_byte_more_is_refused(
    flow_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """PostgreSQL truncates a name over 63 bytes with a NOTICE only, and `CREATE ... IF NOT
    EXISTS` then skips an index whose truncated name is taken (a long audit table lost its
    unique prev_hash index so): each configured name is refused at load past the length at
    which its longest derived name still fits, and at that length nothing is truncated."""
    config = config_for(flow_env, tmp_path, _names_yaml())
    notices: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        migrate(conn, config)
        unique = fetch(
            conn,
            "SELECT count(*) FROM pg_index WHERE indrelid = to_regclass(%s) AND indisunique",
            config.vault.audit_table,
        )
    assert not [n for n in notices if "truncated" in n], notices
    assert unique[0][0] >= 1  # the audit chain's unique predecessor is there
    for key in LONGEST_SUFFIX:
        with pytest.raises(ConfigError, match=f"{key.split('.')[1]}: .* is longer than"):
            config_for(flow_env, tmp_path, _names_yaml(longer=key))
