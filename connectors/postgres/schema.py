"""The sink table's columns, from the declared fields: one mapping, read by the migrations
(which create and upgrade the table) and by the sink (its COPY plan).

    string    -> varchar(max_length)     timestamp -> timestamptz
    integer   -> bigint                  enum      -> text
    number    -> double precision        version   -> integer + <column>_text (text)
    boolean   -> boolean                 masked    -> its token column, varchar(256)

After the fields come the delivery's columns (`message_id`, `sent_at`, `create_date`) and
`loaded_at`. `sink.published_columns` puts a published DDL's columns first, in its order
(the shipped logins config lists the producer team's `user_logins`); the rest follow in the
schema's order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from logins.core.config import AppConfig, ConfigError, FieldSpec, MaskStep

__all__ = ["COLUMN_TYPES", "Column", "TableSchema", "table_schema"]

MASKED_SQL_TYPE = "varchar(256)"  # a token is `<key id>.<32 hex>`; room for long key ids
_SQL_TYPES = {
    "integer": "bigint",
    "number": "double precision",
    "boolean": "boolean",
    "timestamp": "timestamptz",
    "enum": "text",
    "version": "integer",
}
# Per field type, its column as the docs state it (docs/configuration.md is generated from it).
COLUMN_TYPES = {
    "string": "varchar(max_length)",
    **_SQL_TYPES,
    "version": "integer + <column>_text text",
}
# How PostgreSQL's format_type() prints the types above (what the catalog says a column is).
_CATALOG_NAMES = {"varchar": "character varying", "timestamptz": "timestamp with time zone"}
_MAX_IDENTIFIER_BYTES = 63  # PostgreSQL truncates longer names (NAMEDATALEN - 1)


@dataclass(frozen=True)
class Column:
    """A column of the sink table; `key` is the key of `Event.fields` that fills it (None:
    the delivery fills it, or nothing does)."""

    name: str
    sql_type: str  # as written in DDL: varchar(128), bigint, timestamptz, ...
    key: str | None = None
    default: str | None = None  # a DDL default expression (fixed text, never data)

    @property
    def copy_type(self) -> str:
        """The type name for binary COPY (psycopg's `set_types`): without a length."""
        return self.sql_type.split("(", 1)[0]

    @property
    def catalog_type(self) -> str:
        """The type as `format_type()` prints it, to compare with an existing column."""
        base, paren, rest = self.sql_type.partition("(")
        return _CATALOG_NAMES.get(base, base) + paren + rest


DELIVERY = (
    Column("message_id", "text"),
    Column("sent_at", "timestamptz"),
    Column("create_date", "date"),
)
LOADED_AT = Column("loaded_at", "timestamptz", default="now()")


@dataclass(frozen=True)
class TableSchema:
    """The sink table: `row` is what the sink writes per row, in COPY order (the fields'
    columns, then the delivery's); `ddl` is every column of the table in creation order."""

    table: str
    row: tuple[Column, ...]
    ddl: tuple[Column, ...]

    @property
    def field_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.row if c.key is not None)


def _masked(config: AppConfig) -> dict[str, str]:
    masked: dict[str, str] = {}
    for step in config.steps:
        if isinstance(step, MaskStep):
            masked.update(step.fields)
    return masked


def _field_columns(name: str, spec: FieldSpec, token_column: str | None) -> Iterator[Column]:
    if token_column is not None:
        yield Column(token_column, MASKED_SQL_TYPE, key=token_column)
        return
    column = spec.column or name
    if spec.type == "string":
        yield Column(column, f"varchar({spec.max_length})", key=name)
    else:
        yield Column(column, _SQL_TYPES[spec.type], key=name)
    if spec.type == "version":
        yield Column(f"{column}_text", "text", key=f"{name}_text")


def table_schema(config: AppConfig) -> TableSchema:
    """The sink table's columns for `config`; a ConfigError names a clash or a bad name."""
    fields = config.validate_step.fields
    where = f"steps.{config.validate_step.name}.fields"
    masked = _masked(config)
    owner: dict[str, str] = {c.name: "the delivery" for c in (*DELIVERY, LOADED_AT)}
    row: list[Column] = []
    for name, spec in fields.items():
        for column in _field_columns(name, spec, masked.get(name)):
            if column.name in owner:
                other = owner[column.name]
                raise ConfigError(
                    f"{where}.{name}: column {column.name!r} is also written by {other}"
                )
            if len(column.name.encode()) > _MAX_IDENTIFIER_BYTES:
                raise ConfigError(
                    f"{where}.{name}: column {column.name!r} is longer than PostgreSQL's"
                    f" {_MAX_IDENTIFIER_BYTES}-byte names"
                )
            owner[column.name] = f"field {name!r}"
            row.append(column)
    row += DELIVERY
    ddl = _ddl_order(config, row, fields, masked)
    return TableSchema(table=config.sink.table, row=tuple(row), ddl=tuple(ddl))


def _ddl_order(
    config: AppConfig,
    row: list[Column],
    fields: Mapping[str, FieldSpec],
    masked: Mapping[str, str],
) -> list[Column]:
    """The published columns first, then the rest of the row, then `loaded_at`. A published
    column may be a masked field's clear column (a field masked after the table was
    published): it keeps its declared type, and new rows leave it NULL."""
    known = {c.name: c for c in (*row, LOADED_AT)}
    for name, spec in fields.items():
        if name in masked:
            for column in _field_columns(name, spec, None):
                known.setdefault(column.name, Column(column.name, column.sql_type))
    first: list[Column] = []
    for name in config.sink.published_columns:
        if name not in known:
            raise ConfigError(
                f"sink.published_columns: {name!r} is not a column of the declared fields,"
                " the mask step's token columns or the delivery's"
                f" (known: {', '.join(sorted(known))})"
            )
        first.append(known[name])
    listed = {c.name for c in first}
    return [*first, *(c for c in (*row, LOADED_AT) if c.name not in listed)]
