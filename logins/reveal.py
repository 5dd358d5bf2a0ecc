"""Recovering original values from the vault, each opening on record first.

The audit row (who, why, when, which tokens, how many opened) is committed before any value
is returned, so a value can never be seen without its audit row. Each value is checked
twice: the sealed box must name the same field and token, and recomputing the token from
the value with the token key must give the token back.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from logins.config import AppConfig
from logins.tokens import Tokenizer
from logins.vault import Opener, VaultError


@dataclass(frozen=True)
class Revealed:
    token: str
    field: str | None
    value: str | None
    error: str | None


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def reveal(
    conn: psycopg.Connection[Any],
    config: AppConfig,
    *,
    opener: Opener,
    tokenizer: Tokenizer,
    tokens: list[str],
    reason: str,
    actor: str,
) -> list[Revealed]:
    if not reason.strip():
        raise ValueError("a reason is required to reveal a value")
    found = {
        token: (field, bytes(sealed))
        for token, field, sealed in conn.execute(
            sql.SQL("SELECT token, field, sealed FROM {} WHERE token = ANY(%s)").format(
                sql.Identifier(config.vault.table)
            ),
            (tokens,),
        )
    }
    results = [_open_one(token, found.get(token), opener, tokenizer) for token in tokens]
    succeeded = sum(1 for r in results if r.error is None)
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (actor, reason, action, tokens, succeeded, failed)"
                " VALUES (%s, %s, 'reveal', %s, %s, %s)"
            ).format(sql.Identifier(config.vault.audit_table)),
            (actor, reason, tokens, succeeded, len(results) - succeeded),
        )
    return results


def _open_one(
    token: str, entry: tuple[str, bytes] | None, opener: Opener, tokenizer: Tokenizer
) -> Revealed:
    if entry is None:
        return Revealed(token, None, None, "not in the vault (never sealed, or erased)")
    field, sealed = entry
    try:
        value = opener.open(sealed, field=field, token=token)
    except VaultError as exc:
        return Revealed(token, field, None, str(exc))
    if not tokenizer.verify(token, field, value):
        return Revealed(token, field, None, "the opened value does not match its token")
    return Revealed(token, field, value, None)
