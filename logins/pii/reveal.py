"""Recovering original values from the vault, each opening on record first.

The audit row (the database login, why, when, which vault entries by their surrogate ids,
how many opened) is committed before any value is returned, whatever the connection it is
handed: in autocommit mode it commits on its own, on a connection that is not in autocommit
mode `reveal` commits it itself, and a connection already inside a transaction is refused
(committing that would commit the caller's own changes; rolling back after the values were
returned would lose the row). Each value is checked twice: the sealed box must name the same
field and token, and recomputing the token from the value with the token key must give the
token back. An erasure marker (what `logins forget` leaves instead of a token) is answered
with the date of its erasure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from logins.core import audit, vaultsql
from logins.core.config import AppConfig
from logins.core.tokens import Tokenizer
from logins.core.vault import Opener, VaultError
from logins.core.vaultschema import tables

NOT_IN_VAULT = "not in the vault (never sealed, or erased)"
ERASED_PREFIX = "erased:"  # what `logins forget` leaves in a masked column (logins/pii/erasure.py)


@dataclass(frozen=True)
class Revealed:
    token: str
    field: str | None
    value: str | None
    error: str | None


def unique(tokens: list[str]) -> list[str]:
    """The tokens in their first order, each once."""
    return list(dict.fromkeys(tokens))


def reveal(
    conn: psycopg.Connection[Any],
    config: AppConfig,
    *,
    opener: Opener,
    tokenizer: Tokenizer,
    tokens: list[str],
    reason: str,
    note: str | None = None,
    detail: dict[str, Any] | None = None,
) -> list[Revealed]:
    """The values of `tokens`, after their audit row was committed."""
    if not reason.strip():
        raise ValueError("a reason is required to reveal a value")
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError(
            "reveal() commits its audit row before it returns a value, so it needs a connection"
            " that is not inside a transaction: commit or roll back first"
        )
    tokens = unique(tokens)
    vaultsql.flush(conn, config)
    found = {
        token: (str(entry_id), field, bytes(sealed), key_id)
        for entry_id, token, field, sealed, key_id in conn.execute(
            sql.SQL(
                "SELECT entry_id, token, field, sealed, vault_key_id FROM {} WHERE token = ANY(%s)"
            ).format(sql.Identifier(config.vault.table)),
            (tokens,),
        )
    }
    erased = _erasures(conn, config, [t for t in tokens if t.startswith(ERASED_PREFIX)])
    results = [
        _open_one(token, found.get(token), erased.get(token), opener, tokenizer) for token in tokens
    ]
    succeeded = sum(1 for r in results if r.error is None)
    audit.record(
        conn,
        config,
        note=note,
        reason=reason,
        action="reveal",
        succeeded=succeeded,
        failed=len(results) - succeeded,
        detail={
            **(detail or {}),
            "asked": len(tokens),
            "entries": [found[t][0] for t in tokens if t in found],
        },
    )
    if not conn.autocommit:
        conn.commit()  # the reads above opened a transaction: the audit row was only in it
    return results


def _erasures(
    conn: psycopg.Connection[Any], config: AppConfig, tokens: list[str]
) -> dict[str, tuple[datetime, str | None]]:
    if not tokens:
        return {}
    return {
        token: (at, field)
        for token, at, field in conn.execute(
            sql.SQL("SELECT marker, erased_at, field FROM {} WHERE marker = ANY(%s)").format(
                sql.Identifier(tables(config).erasures)
            ),
            (tokens,),
        )
    }


def _open_one(
    token: str,
    entry: tuple[str, str, bytes, str] | None,
    erased: tuple[datetime, str | None] | None,
    opener: Opener,
    tokenizer: Tokenizer,
) -> Revealed:
    if entry is None:
        if erased is not None:
            day = erased[0].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            return Revealed(token, erased[1], None, f"erased on {day} (logins forget)")
        return Revealed(token, None, None, NOT_IN_VAULT)
    _, field, sealed, key_id = entry
    if key_id != opener.key_id:
        return Revealed(
            token,
            field,
            None,
            f"sealed to vault key {key_id}, but this private key is {opener.key_id}"
            " (a vault rekey in progress? use that key)",
        )
    try:
        value = opener.open(sealed, field=field, token=token)
    except VaultError as exc:
        return Revealed(token, field, None, str(exc))
    if not tokenizer.verify(token, field, value):
        return Revealed(token, field, None, "the opened value does not match its token")
    return Revealed(token, field, value, None)


@dataclass(frozen=True)
class UserSelector:
    """How a user's rows are found: by `user_id`, or by its token if user_id is masked."""

    column: str
    values: list[str]
    recorded_as: str  # what the audit row names (never a raw PII value)


def user_selector(config: AppConfig, tokenizer: Tokenizer, user_id: str) -> UserSelector:
    masked = tables(config).masked
    if "user_id" in masked:
        candidates = tokenizer.tokens_all_keys("user_id", user_id)
        return UserSelector(masked["user_id"], candidates, candidates[0])
    return UserSelector("user_id", [user_id], user_id)


def user_tokens(
    conn: psycopg.Connection[Any], config: AppConfig, selector: UserSelector
) -> list[tuple[str, str]]:
    """(column, token) of every masked value in the user's rows of the sink table (erasure
    markers included: reveal says when they were erased)."""
    t = tables(config)
    found: list[tuple[str, str]] = []
    for column in t.masked.values():
        for (token,) in conn.execute(
            sql.SQL(
                "SELECT DISTINCT {col} FROM {table} WHERE {user} = ANY(%s) AND {col} IS NOT NULL"
                " ORDER BY 1"
            ).format(
                col=sql.Identifier(column),
                table=sql.Identifier(t.sink),
                user=sql.Identifier(selector.column),
            ),
            (selector.values,),
        ):
            found.append((column, token))
    return found
