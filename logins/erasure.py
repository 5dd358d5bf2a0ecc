"""Erasure (`logins forget`): delete vault entries so their values are gone for good.

The tokens stay in every table, so duplicate counts and joins keep working; only the sealed
value is deleted. In one transaction, in this order:

1. the vault table is locked against inserts (SHARE ROW EXCLUSIVE; the pipeline waits a
   moment), so a pipeline batch cannot re-seal a value while it is being erased;
2. the tokens are expanded through the rotation aliases (old <-> new token of one value), so
   erasing either erases both;
3. the audit row is written (who, why, which tokens, how many erased);
4. the vault rows are deleted and each token gets a tombstone in `pii_erasures`. A trigger on
   the vault skips any later insert of a tombstoned token: when the same value arrives
   again, the pipeline's token for it is unchanged but its value is not sealed again.

By user (`--user-id U`): the tokens are the masked values of U's rows. A token that also
appears in another user's rows (a shared ip, a shared device) is kept unless
`include_shared`: erasing it would take the value from the other users too. Rows whose
user_id is NULL (rows that predate the pipeline) count as other users.

Rejected bodies are sealed whole, not tokenised, so nothing in the table says whose they are.
With the vault private key, `forget --user-id` opens them and erases the sealed body of each
one that names the user (a JSON string value equal to the user id anywhere in the body, or,
for a body that is not JSON, the user id as a whole word). The row stays (message id, reason,
detail) with `sealed_body` emptied and `body_erased_at` set. Without the private key they
are not searched, and the result says how many were left.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from nacl.exceptions import CryptoError
from psycopg import sql

from logins import audit
from logins.config import AppConfig
from logins.reveal import UserSelector, unique, user_tokens
from logins.tokens import is_token
from logins.vault import Opener, VaultError
from logins.vaultschema import VaultTables, tables


@dataclass
class Erasure:
    audit_id: int | None = None
    erased: list[str] = field(default_factory=list)  # vault entries deleted
    absent: list[str] = field(default_factory=list)  # not in the vault (erased before, or never)
    shared_kept: list[str] = field(default_factory=list)  # used by other users too: kept
    rejected_erased: list[str] = field(default_factory=list)  # message ids
    rejected_unsearched: int = 0  # sealed bodies not searched (no key, or another vault key)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def aliases_of(conn: psycopg.Connection[Any], t: VaultTables, tokens: Iterable[str]) -> list[str]:
    """`tokens` and every token linked to one of them by a rotation alias, transitively."""
    known = unique(list(tokens))
    frontier = list(known)
    while frontier:
        linked = conn.execute(
            sql.SQL(
                "SELECT new_token FROM {a} WHERE old_token = ANY(%(t)s)"
                " UNION SELECT old_token FROM {a} WHERE new_token = ANY(%(t)s)"
            ).format(a=sql.Identifier(t.aliases)),
            {"t": frontier},
        ).fetchall()
        frontier = [tok for (tok,) in linked if tok not in known]
        known += unique(frontier)
    return known


def forget_tokens(
    conn: psycopg.Connection[Any],
    config: AppConfig,
    *,
    tokens: list[str],
    reason: str,
    actor: str,
    detail: dict[str, Any] | None = None,
    rejected_ids: list[str] | None = None,
    result: Erasure | None = None,
    dry_run: bool = False,
) -> Erasure:
    bad = [tok for tok in tokens if not is_token(tok)]
    if bad:
        raise ValueError(f"not a token (<key_id>.<32 hex>): {bad[:3]}")
    t = tables(config)
    result = result or Erasure()
    result.dry_run = dry_run
    with conn.transaction():
        if not dry_run:
            conn.execute(
                sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(t.vault))
            )
        everything = aliases_of(conn, t, tokens)
        present = {
            tok
            for (tok,) in conn.execute(
                sql.SQL("SELECT token FROM {} WHERE token = ANY(%s)").format(
                    sql.Identifier(t.vault)
                ),
                (everything,),
            )
        }
        result.erased = [tok for tok in everything if tok in present]
        result.absent = [tok for tok in everything if tok not in present]
        if dry_run:
            result.rejected_erased = list(rejected_ids or [])  # would be
            return result
        row = audit.record(
            conn,
            config,
            actor=actor,
            reason=reason,
            action="forget",
            tokens=everything,
            succeeded=len(result.erased),
            failed=len(result.absent),
            detail={
                **(detail or {}),
                "rejected_bodies_erased": len(rejected_ids or []),
            },
        )
        result.audit_id = row.id
        conn.execute(
            sql.SQL(
                "INSERT INTO {e} (token, field, audit_id)"
                " SELECT x.token, v.field, %(audit)s FROM unnest(%(t)s::text[]) AS x(token)"
                " LEFT JOIN {v} v ON v.token = x.token"
                " ON CONFLICT (token) DO NOTHING"
            ).format(e=sql.Identifier(t.erasures), v=sql.Identifier(t.vault)),
            {"t": everything, "audit": row.id},
        )
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE token = ANY(%s)").format(sql.Identifier(t.vault)),
            (result.erased,),
        )
        if rejected_ids:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET sealed_body = ''::bytea, body_erased_at = now()"
                    " WHERE message_id = ANY(%s)"
                ).format(sql.Identifier(t.rejected)),
                (rejected_ids,),
            )
            result.rejected_erased = list(rejected_ids)
    return result


def shared_tokens(
    conn: psycopg.Connection[Any],
    t: VaultTables,
    selector: UserSelector,
    groups: list[list[str]],
) -> set[int]:
    """Indexes of the groups (one value's tokens, old and new) found in other users' rows."""
    tokens = [tok for group in groups for tok in group]
    seen: set[str] = set()
    for column in t.masked.values():
        seen |= {
            tok
            for (tok,) in conn.execute(
                sql.SQL(
                    "SELECT DISTINCT {col} FROM {table} WHERE {col} = ANY(%s)"
                    " AND ({user} IS NULL OR {user} <> ALL(%s))"
                ).format(
                    col=sql.Identifier(column),
                    table=sql.Identifier(t.sink),
                    user=sql.Identifier(selector.column),
                ),
                (tokens, selector.values),
            )
        }
    return {i for i, group in enumerate(groups) if seen.intersection(group)}


def forget_user(
    conn: psycopg.Connection[Any],
    config: AppConfig,
    *,
    selector: UserSelector,
    user_id: str,
    include_shared: bool,
    reason: str,
    actor: str,
    opener: Opener | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Erasure:
    """Erase a user's values; `progress(done, total)` follows the search of the sealed
    rejected bodies (the long part: every body is opened)."""
    t = tables(config)
    result = Erasure()
    own = unique([tok for _, tok in user_tokens(conn, config, selector)])
    groups = [aliases_of(conn, t, [tok]) for tok in own]
    shared = shared_tokens(conn, t, selector, groups)
    chosen: list[str] = []
    for i, group in enumerate(groups):
        if i in shared and not include_shared:
            result.shared_kept += [own[i]]
        else:
            chosen += group
    rejected_ids, result.rejected_unsearched = rejected_of_user(
        conn, t, user_id, opener, progress=progress
    )
    return forget_tokens(
        conn,
        config,
        tokens=unique(chosen),
        reason=reason,
        actor=actor,
        detail={
            "user": selector.recorded_as,
            "include_shared": include_shared,
            "shared_kept": len(result.shared_kept),
        },
        rejected_ids=rejected_ids,
        result=result,
        dry_run=dry_run,
    )


def rejected_of_user(
    conn: psycopg.Connection[Any],
    t: VaultTables,
    user_id: str,
    opener: Opener | None,
    page: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[str], int]:
    """(message ids of rejected bodies that name the user, how many bodies were not searched).
    Nothing is printed or kept: each body is opened, matched, and dropped."""
    table = sql.Identifier(t.rejected)
    if opener is None:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE octet_length(sealed_body) > 0").format(table)
        ).fetchone()
        return [], int(row[0]) if row else 0
    other = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM {} WHERE octet_length(sealed_body) > 0 AND vault_key_id <> %s"
        ).format(table),
        (opener.key_id,),
    ).fetchone()
    to_search = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM {} WHERE octet_length(sealed_body) > 0 AND vault_key_id = %s"
        ).format(table),
        (opener.key_id,),
    ).fetchone()
    total = int(to_search[0]) if to_search else 0
    matched: list[str] = []
    searched = 0
    after = ""
    word = re.compile(r"(?<![\w.-])" + re.escape(user_id) + r"(?![\w-])")
    while True:
        batch = conn.execute(
            sql.SQL(
                "SELECT message_id, sealed_body FROM {} WHERE vault_key_id = %s"
                " AND octet_length(sealed_body) > 0 AND message_id > %s"
                " ORDER BY message_id LIMIT %s"
            ).format(table),
            (opener.key_id, after, page),
        ).fetchall()
        for message_id, sealed in batch:
            try:
                body = opener.open_rejected(bytes(sealed), message_id=message_id)
            except (VaultError, CryptoError, ValueError):
                continue
            if names_user(body, user_id, word):
                matched.append(message_id)
        searched += len(batch)
        if progress is not None:
            progress(searched, max(total, searched))
        if len(batch) < page:
            break
        after = batch[-1][0]
    return matched, int(other[0]) if other else 0


def names_user(body: str, user_id: str, word: re.Pattern[str] | None = None) -> bool:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        word = word or re.compile(r"(?<![\w.-])" + re.escape(user_id) + r"(?![\w-])")
        return word.search(body) is not None
    return _json_has(parsed, user_id)


def _json_has(value: Any, wanted: str) -> bool:
    if isinstance(value, str):
        return value == wanted
    if isinstance(value, dict):
        return any(_json_has(k, wanted) or _json_has(v, wanted) for k, v in value.items())
    if isinstance(value, list):
        return any(_json_has(v, wanted) for v in value)
    return False
