"""The sink table's columns from the declared fields (connectors/postgres/schema.py), and the sink's
table names derived from `sink.table`."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.postgres.schema import table_schema
from logins.core.config import AppConfig, ConfigError, load_config

ENV = {
    "SQS_QUEUE_URL": "http://q",
    "LOGINS_TOKEN_KEY_FILE": "/keys/token.key",
    "LOGINS_VAULT_PUBLIC_KEY_FILE": "/keys/vault.pub",
    "DATABASE_URL": "postgresql://db/x",
}
# The producer team's DDL, as published (README, DESIGN), then what the pipeline adds.
PUBLISHED = [
    ("user_id", "varchar(128)"),
    ("device_type", "varchar(32)"),
    ("masked_ip", "varchar(256)"),
    ("masked_device_id", "varchar(256)"),
    ("locale", "varchar(32)"),
    ("app_version", "integer"),
    ("create_date", "date"),
]
ADDED = [
    ("app_version_text", "text"),
    ("message_id", "text"),
    ("sent_at", "timestamptz"),
    ("loaded_at", "timestamptz"),
]

EVERY_TYPE = """
source: {type: sqs, queue_url: "http://q"}
steps:
  - type: validate
    fields:
      name:   {type: string, max_length: 40}
      n:      {type: integer}
      x:      {type: number}
      flag:   {type: boolean}
      at:     {type: timestamp}
      plan:   {type: enum, values: [a, b]}
      v:      {type: version, column: client_version}
      email:  {type: string, pii: true}
      renamed: {type: integer, column: other_name}
  - type: mask
    fields: {email: masked_email}
sink: {type: postgres, dsn: "postgresql://db/x", table: things}
tokens: {key_file: /k}
vault: {public_key_file: /v}
"""


def load(tmp_path: Path, text: str) -> AppConfig:
    path = tmp_path / "stream.yaml"
    path.write_text(text)
    return load_config({**ENV, "LOGINS_CONFIG": str(path)})


def test_the_shipped_logins_table_is_the_published_ddl_then_the_added_columns() -> None:
    schema = table_schema(load_config(ENV))
    assert [(c.name, c.sql_type) for c in schema.ddl] == PUBLISHED + ADDED


def test_every_type_maps_to_its_column(tmp_path: Path) -> None:
    schema = table_schema(load(tmp_path, EVERY_TYPE))
    assert [(c.name, c.sql_type, c.key) for c in schema.row] == [
        ("name", "varchar(40)", "name"),
        ("n", "bigint", "n"),
        ("x", "double precision", "x"),
        ("flag", "boolean", "flag"),
        ("at", "timestamptz", "at"),
        ("plan", "text", "plan"),
        ("client_version", "integer", "v"),
        ("client_version_text", "text", "v_text"),
        ("masked_email", "varchar(256)", "masked_email"),
        ("other_name", "bigint", "renamed"),
        ("message_id", "text", None),
        ("sent_at", "timestamptz", None),
        ("create_date", "date", None),
    ]
    assert [c.name for c in schema.ddl][-1] == "loaded_at"
    assert {c.catalog_type for c in schema.ddl} >= {
        "character varying(40)",
        "timestamp with time zone",
        "double precision",
    }


def test_companion_tables_default_to_the_table_name(tmp_path: Path) -> None:
    sink = load(tmp_path, EVERY_TYPE).sink
    assert (sink.rejected_table, sink.duplicates_table, sink.ledger_table) == (
        "things_rejected",
        "things_duplicates",
        "things_ledger",
    )
    named = load(tmp_path, EVERY_TYPE.replace("table: things}", "table: t, ledger_table: l}"))
    assert (named.sink.rejected_table, named.sink.ledger_table) == ("t_rejected", "l")


def test_the_shipped_logins_config_keeps_todays_table_names() -> None:
    sink = load_config(ENV).sink
    assert (sink.table, sink.rejected_table, sink.duplicates_table, sink.ledger_table) == (
        "user_logins",
        "user_logins_rejected",
        "user_logins_duplicates",
        "logins_ledger",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("renamed: {type: integer, column: other_name}", "renamed: {type: integer, column: n}"),
            r"fields\.renamed: column 'n' is also written by field 'n'",
        ),
        (
            ("renamed: {type: integer, column: other_name}", "sent_at: {type: timestamp}"),
            r"fields\.sent_at: column 'sent_at' is also written by the delivery",
        ),
        (
            ("v:      {type: version, column: client_version}", "v: {type: version, column: n_x}"),
            None,  # n_x and n_x_text: no clash
        ),
        (
            ("v:      {type: version, column: client_version}", "v: {type: version, column: plan}"),
            r"fields\.v: column 'plan' is also written by field 'plan'",
        ),
        (
            ("column: other_name}", "column: client_version_text}"),
            r"fields\.renamed: column 'client_version_text' is also written by field 'v'",
        ),
        (
            ("renamed: {type: integer, column: other_name}", f"r: {{column: {'c' * 64}}}"),
            "longer than PostgreSQL's 63-byte names",
        ),
        (
            ("table: things}", "table: things, published_columns: [name, nope]}"),
            r"sink\.published_columns: 'nope' is not a column",
        ),
    ],
)
def test_column_clashes_and_bad_names_are_config_errors(
    tmp_path: Path, change: tuple[str, str], message: str | None
) -> None:
    text = EVERY_TYPE.replace(*change)
    assert text != EVERY_TYPE
    config = load(tmp_path, text)
    if message is None:
        table_schema(config)
        return
    with pytest.raises(ConfigError, match=message):
        table_schema(config)


def test_a_published_column_of_a_field_masked_later_keeps_its_type(tmp_path: Path) -> None:
    text = EVERY_TYPE.replace(
        "table: things}", "table: things, published_columns: [email, name]}"
    ).replace(
        "email:  {type: string, pii: true}", "email:  {type: string, max_length: 99, pii: true}"
    )
    schema = table_schema(load(tmp_path, text))
    assert [(c.name, c.sql_type, c.key) for c in schema.ddl[:2]] == [
        ("email", "varchar(99)", None),  # nothing writes it: new rows leave it NULL
        ("name", "varchar(40)", "name"),
    ]
    assert "email" not in [c.name for c in schema.row]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "steps:\n  - type: validate\n    fields: {age: {type: integer, pii: true}}\n"
            "  - type: mask\n    fields: {age: masked_age}\n",
            "steps.mask.fields.age: a integer cannot be masked",
        ),
        (
            "steps:\n  - type: validate\n    fields: {ip: {pii: true, column: x}}\n"
            "  - type: mask\n    fields: {ip: masked_ip}\n",
            "steps.validate.fields.ip.column: a masked field's column is its token column",
        ),
        ("sink: {table: logins_ledger}", "the sink's tables must differ"),
        (
            "sink: {published_columns: [user_id, user_id]}",
            r"published_columns: \['user_id'\] listed more than once",
        ),
    ],
)
def test_masking_and_naming_policy(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(f"extends: {Path('config/local.yaml').resolve()}\n{yaml_text}")
    with pytest.raises(ConfigError, match=message):
        load_config({**ENV, "LOGINS_CONFIG": str(path)})
