"""A command's database session: connected as whoever the DSN names, on a schema this
release understands, with `--actor` as a note (the audit records the login itself)."""

from __future__ import annotations

from typing import Any

import click
import psycopg

from connectors.postgres.migrations import schema_state
from logins.cli.common import Unusable, connect
from logins.core.config import AppConfig

NOTE = click.option(
    "--actor",
    "note",
    default=None,
    help="A free-text note for the audit row (a ticket, a name). Who acted is recorded as"
    " the database login, whatever this says.",
)


def checked_connect(config: AppConfig) -> psycopg.Connection[Any]:
    """An autocommit connection, once the recorded schema version is current."""
    conn = connect(config)
    try:
        found = schema_state(conn, config)
    except psycopg.Error as exc:
        conn.close()
        raise Unusable(f"cannot read the schema version: {exc}") from None
    if not found.current:
        conn.close()
        raise Unusable(
            f"the database schema is not what this command needs ({found.describe()}):"
            " run `logins migrate` as the owner (a member of logins_owner) or a superuser"
        )
    return conn
