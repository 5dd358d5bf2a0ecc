"""The PostgreSQL versions logins supports: 13 to 18 (`make compat-test` runs the schema, role
and sink tests on 13, 14, 17 and 18; `make test` on 16).

An older server fails the migrations with errors that look transient or cryptic (12 has no
built-in `gen_random_uuid()`: 42883), so each entry point (the start-up checks of the flow and
of `logins check --connect`, and `logins migrate`) refuses it first, in words, at once. libpq
reports the version on connecting (`server_version_num`): no query is needed.
"""

from __future__ import annotations

from typing import Any

import psycopg

MINIMUM = 130000  # server_version_num of 13.0
MINIMUM_TEXT = "13"


class UnsupportedServer(RuntimeError):
    """A PostgreSQL older than MINIMUM: nothing will work on it, so nothing is tried."""


def version_text(server_version_num: int) -> str:
    """`110013` -> `11.13`; `90624` -> `9.6.24` (before 10, the major had two parts)."""
    major, rest = divmod(server_version_num, 10000)
    if major >= 10:
        return f"{major}.{rest}"
    return f"{major}.{rest // 100}.{rest % 100}"


def refusal(server_version_num: int) -> str | None:
    """Why this server cannot be used, or None when it can."""
    if server_version_num >= MINIMUM:
        return None
    return (
        f"PostgreSQL {MINIMUM_TEXT} or later is required (this server is"
        f" {version_text(server_version_num)})"
    )


def require_supported(conn: psycopg.Connection[Any]) -> None:
    """Raise UnsupportedServer on a server older than 13."""
    problem = refusal(conn.info.server_version)
    if problem is not None:
        raise UnsupportedServer(problem)
