"""The schema version the migrations record, and the check the flow and the CLI make at start.

`logins migrate` ends by writing one row per pipeline (keyed by its sink table) into
`logins_schema_version`: the version of the migrations (`SCHEMA_VERSION`) and a fingerprint
of what this configuration needs (table names, the sink's columns). A flow whose role cannot
run DDL reads that row and nothing else: on a current schema it starts without attempting a
migration; on an older one it migrates only if `sink.migrate` is true (and its role may),
else it stops naming the versions and the command to run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from logins.core.config import AppConfig
from logins.core.vaultschema import tables

VERSION_TABLE = "logins_schema_version"
# 1: the first release (0.1.0). A change of schema raises it and adds the step from the
# version before to connectors/postgres/migrations.py's UPGRADES.
SCHEMA_VERSION = 1


class SchemaError(RuntimeError):
    """The database schema is not what this version needs, and cannot be made so here."""


def fingerprint(config: AppConfig, columns: list[tuple[str, str]]) -> str:
    """What a migration for this config creates: names and the sink table's columns."""
    t = tables(config)
    shape = {
        "tables": [t.sink, t.rejected, t.vault, t.audit, t.aliases, t.erasures],
        "ledger": config.sink.ledger_table,
        "duplicates": config.sink.duplicates_table,
        "columns": columns,
        "masked": sorted(t.masked.items()),
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class SchemaState:
    have: int | None  # None: never migrated by a release that records versions
    need: int
    same_shape: bool  # the recorded fingerprint is this config's

    @property
    def current(self) -> bool:
        return self.have is not None and (
            self.have > self.need or (self.have == self.need and self.same_shape)
        )

    def describe(self) -> str:
        if self.have is None:
            return f"no schema version recorded (this release needs version {self.need})"
        if self.have < self.need:
            return f"schema version {self.have}, older than the {self.need} this release needs"
        return (
            f"schema version {self.have} was migrated for another configuration (tables or"
            " columns differ)"
        )


def state(
    conn: psycopg.Connection[Any], config: AppConfig, columns: list[tuple[str, str]]
) -> SchemaState:
    """Read the recorded version; needs only SELECT on the version table (every role has it)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return SchemaState(None, SCHEMA_VERSION, False)
    row = conn.execute(
        sql.SQL("SELECT version, fingerprint FROM {} WHERE scope = %s").format(
            sql.Identifier(VERSION_TABLE)
        ),
        (config.sink.table,),
    ).fetchone()
    if row is None:
        return SchemaState(None, SCHEMA_VERSION, False)
    return SchemaState(int(row[0]), SCHEMA_VERSION, row[1] == fingerprint(config, columns))
