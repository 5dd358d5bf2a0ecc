"""Erasure (`logins forget`): nothing left in the database, with any key we hold, gives the
value back or ties the user to it.

A token is a deterministic function of the value: whoever holds the token key (the pipeline,
a revealer) can compute the token of every guess and look for it. So erasure must remove the
erased value's tokens from every table, not only its vault entry. In one transaction:

All of it is one call of the eraser's SECURITY DEFINER function `<prefix>forget`
(logins/core/vaultsql.py), one transaction that writes its own audit row:

1. it takes the erasure lock (a control row only the owner's functions can lock; a second
   erasure fails after a few seconds naming the login and pid that hold it). No table
   lock: the pipeline's inserts go on; one offering a token being erased waits only for
   the end of this call;
2. the tokens are expanded through the rotation aliases (old <-> new token of one value);
3. every masked column that holds one of them gets, instead, the value's *erasure marker*:
   `erased:` and 32 random hex digits, drawn for this erasure and derived from nothing.
   Rows that shared the value still share its marker, so counts and "same value" stay
   visible; no key turns a guess into the marker;
4. the aliases that link those tokens are deleted, then the vault entries (and any still in
   the pipeline's inbox);
5. the audit row (actor, why, the entries' random surrogate ids, counts: never a token) and
   one row per marker in `pii_erasures` (marker, field, when, audit id).

No tombstone holds the token, so nothing stops the value from being sealed again if it comes
back: a later login with the same ip is new data, with the ordinary token, and is not
linked to the marker.

By user (`--user-id U`): the tokens are the masked values of U's rows. A token that also
appears in another user's rows (a shared ip, a shared device) is kept unless
`include_shared`: erasing it would take the value from the other users too. Rows whose
user_id is NULL (rows that predate the pipeline) count as other users.

Rejected bodies are sealed whole, not tokenised, so nothing in the table says whose they are.
With the vault private key, `forget --user-id` opens them and erases the sealed body of each
one that names the user (`names_user` says exactly what matches). The row stays (message id,
reason, detail) with `sealed_body` emptied and `body_erased_at` set. Without the private key
they are not searched, and the result says how many were left; a body sealed to the key
that does not open with it (sealed for another message id, corrupted) is listed in
`rejected_unopened`, and `logins forget` exits 1 while there is one.
"""

from __future__ import annotations

import contextlib
import json
import re
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg
from nacl.exceptions import CryptoError
from psycopg import sql

from logins.core import controlsql, vaultsql
from logins.core.config import AppConfig, DedupeStep, MaskStep
from logins.core.tokens import is_token
from logins.core.vault import Opener, VaultError
from logins.core.vaultschema import VaultTables, tables
from logins.pii.reveal import UserSelector, unique, user_tokens


@dataclass
class Erasure:
    audit_id: int | None = None
    erased: list[str] = field(default_factory=list)  # tokens whose vault entry was deleted
    absent: list[str] = field(default_factory=list)  # not in the vault (erased before, or never)
    shared_kept: list[str] = field(default_factory=list)  # used by other users too: kept
    rejected_erased: list[str] = field(default_factory=list)  # message ids
    rejected_unsearched: int = 0  # sealed bodies not searched (no key, or another vault key)
    # message ids of bodies sealed to the key given that do not open with it (sealed for
    # another message id, corrupted): not searched, so they may still name the user
    rejected_unopened: list[str] = field(default_factory=list)
    rows_rewritten: int = 0  # masked cells that now hold an erasure marker
    aliases_deleted: int = 0
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


def _value_groups(
    conn: psycopg.Connection[Any], t: VaultTables, tokens: list[str]
) -> list[list[str]]:
    """The tokens grouped by value: each group a token and its aliases (one marker each)."""
    groups: list[list[str]] = []
    seen: set[str] = set()
    for token in unique(tokens):
        if token in seen:
            continue
        group = aliases_of(conn, t, [token])
        seen.update(group)
        groups.append(group)
    return groups


def forget_tokens(
    conn: psycopg.Connection[Any],
    config: AppConfig,
    *,
    tokens: list[str],
    reason: str,
    note: str | None = None,
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
    if dry_run:  # reads only
        groups = _value_groups(conn, t, tokens)
        everything = [tok for group in groups for tok in group]
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
        result.rejected_erased = list(rejected_ids or [])  # would be
        return result
    try:
        with conn.transaction():
            got = conn.execute(
                sql.SQL("SELECT {}(%s, %s, %s, %s, %s::jsonb)").format(
                    sql.Identifier(vaultsql.names(config)["forget"])
                ),
                (unique(tokens), list(rejected_ids or []), reason, note, json.dumps(detail or {})),
            ).fetchone()
    except psycopg.errors.LockNotAvailable as exc:
        raise controlsql.busy(exc) from None
    assert got is not None
    done: dict[str, Any] = got[0]
    result.audit_id = int(done["audit_id"])
    result.erased = list(done["erased"])
    result.absent = list(done["absent"])
    result.rows_rewritten = int(done["rows_rewritten"])
    result.aliases_deleted = int(done["aliases_deleted"])
    result.rejected_erased = list(done["rejected_erased"])
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
    note: str | None = None,
    opener: Opener | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Erasure:
    """Erase a user's values; `progress(done, total)` follows the search of the sealed
    rejected bodies (the long part: every body is opened)."""
    t = tables(config)
    result = Erasure()
    own = unique([tok for _, tok in user_tokens(conn, config, selector) if is_token(tok)])
    groups = [aliases_of(conn, t, [tok]) for tok in own]
    shared = shared_tokens(conn, t, selector, groups)
    chosen: list[str] = []
    for i, group in enumerate(groups):
        if i in shared and not include_shared:
            result.shared_kept += [own[i]]
        else:
            chosen += group
    searched = rejected_of_user(conn, t, user_id, opener, progress=progress)
    rejected_ids = searched.matched
    result.rejected_unsearched = searched.unsearched
    result.rejected_unopened = searched.unopened
    return forget_tokens(
        conn,
        config,
        tokens=unique(chosen),
        reason=reason,
        note=note,
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
) -> RejectedSearch:
    """Which rejected bodies name the user, and which could not be searched. Nothing is
    printed or kept: each body is opened, matched, and dropped. A body sealed to this key
    that does not open (sealed for another message id, corrupted) is never skipped in
    silence: its message id is in `unopened`."""
    table = sql.Identifier(t.rejected)
    if opener is None:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE octet_length(sealed_body) > 0").format(table)
        ).fetchone()
        return RejectedSearch(unsearched=int(row[0]) if row else 0)
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
    unopened: list[str] = []
    searched = 0
    after = ""
    word = user_pattern(user_id)
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
                unopened.append(message_id)
                continue
            if names_user(body, user_id, word):
                matched.append(message_id)
        searched += len(batch)
        if progress is not None:
            progress(searched, max(total, searched))
        if len(batch) < page:
            break
        after = batch[-1][0]
    return RejectedSearch(matched, int(other[0]) if other else 0, unopened)


@dataclass
class RejectedSearch:
    matched: list[str] = field(default_factory=list)  # message ids of bodies naming the user
    unsearched: int = 0  # bodies not searched: no private key, or sealed to another vault key
    unopened: list[str] = field(default_factory=list)  # sealed to this key, did not open


def pipeline_unreached(config: AppConfig) -> list[str]:
    """What an erasure cannot reach in the running flow (its memory and its recovery store),
    and when each ages out, from this config: `forget` prints it with the database's."""
    lines = []
    for step in config.steps:
        if isinstance(step, DedupeStep):
            window = step.window_seconds
            lines += [
                f"not reached: the flow's dedupe state (steps[{step.name}]): keyed fingerprints"
                " of the user's recent logins in the running flow's memory; a period's key and"
                f" slots are dropped at most ~3 x window_seconds ({_duration(3 * window)} here)"
                " after its last login while the flow runs, or at its next start",
                "not reached: the Bytewax recovery store (-r DIR, part-N.sqlite3) holds that"
                " state in its snapshots, out of them on the same schedule; superseded snapshot"
                " bytes stay in SQLite's free space (and its -wal file) until the store is"
                " vacuumed or rewritten, with the flow stopped (docs/operations.md, Recovery)",
            ]
    for step in config.steps:
        if isinstance(step, MaskStep) and step.seal_cache_size + step.seal_cache_overflow_tokens:
            lines.append(
                f"not reached: the flow's seal cache (steps[{step.name}]: up to"
                f" {step.seal_cache_size} tokens + {step.seal_cache_overflow_tokens} 8-byte"
                " hashes) still takes the erased tokens as sealed: a value that comes back is"
                " written without a vault entry until the flow restarts"
            )
    cached = config.tokens.cache_size
    if config.tokens.kms_key_id is not None and cached:
        lines.append(
            f"not reached: the flow's KMS token cache (tokens.cache_size {cached})"
            " holds recent values and their tokens in memory until evicted or the flow restarts"
        )
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"


def user_pattern(user_id: str) -> re.Pattern[str]:
    """The user id (folded: `_fold`) as a whole word: not inside a longer id, a number or a
    version. It is searched for in folded text."""
    return re.compile(r"(?<![\w.-])" + re.escape(_fold(user_id)) + r"(?![\w-]|\.\d)")


def names_user(body: str, user_id: str, word: re.Pattern[str] | None = None) -> bool:
    """Does this rejected body name the user? Over-matching erases a stranger's rejected
    body (junk, on a retention clock anyway); under-matching keeps the user's: so a body
    matches if, in it or in any text decoded from it (below), compared after `_fold`
    (NFKC and case folding on both sides: `jose\u0301` is `jos\u00e9`, `ALICE` is `alice`),

    * the user id occurs as a whole word (`user_pattern`): any key, any depth, every copy
      of a duplicated key, a number (`"user_id": 12345`), text that is not JSON at all; or
    * a JSON string (key or value, its escapes decoded: `"\\u0061lice"`) equals the user
      id, or a JSON number equals it as a number (`4.2e1` for "42").

    Decoded and searched the same way, with a work list instead of recursion: the string
    literal that starts at every unescaped double quote, up to the next one or the end of
    the text (a truncated body), its escapes decoded leniently (a bad escape is kept as
    written and does not sink the rest of the literal); and, twice at most along one chain,
    the text percent/form-decoded (`user_id=%61lice`). Nothing is parsed as a tree, so no
    nesting depth is too deep and a body that is not valid JSON is still searched. The
    literals of a text together are shorter than it, and a literal that holds a quote
    needs its escapes doubled per level, so the work is about n log n."""
    word = word or user_pattern(user_id)
    wanted = _fold(user_id)
    number = _as_number(wanted)
    pending, seen = [(body, 0)], {body}
    while pending:
        text, unquoted = pending.pop()
        folded = _fold(text)
        if word.search(folded):
            return True
        if number is not None and any(_as_number(n) == number for n in _NUMBER.findall(folded)):
            return True
        found = [(literal, unquoted) for literal in _literals(text)]
        if unquoted < _PERCENT_PASSES and _FORM.search(text):
            found.append((urllib.parse.unquote_plus(text, errors="replace"), unquoted + 1))
        for decoded, passes in found:
            if decoded in seen:  # compared and queued already
                continue
            if _fold(decoded) == wanted:
                return True
            seen.add(decoded)
            pending.append((decoded, passes))
    return False


def _fold(text: str) -> str:
    """NFKC, case folded, NFKC again (case folding can undo the normal form)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


# A JSON number standing alone: not part of a word, an id (`u-4711`) or a version (`4711.2`).
_NUMBER = re.compile(r"(?<![\w.-])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.])")
_FORM = re.compile(r"%[0-9A-Fa-f]{2}|\+")  # percent or form encoding
_PERCENT_PASSES = 2  # `%2561` is `%61` once decoded: a bound, not a loop per `25`


def _literals(text: str) -> Iterator[str]:
    """The string literal that starts at each unescaped double quote of `text` and ends at
    the next one (or at the end of the text), decoded leniently. Each character is in one
    literal at most (an escaped quote is searched once its literal is decoded)."""
    quotes = [m.start() for m in _QUOTE_OR_ESCAPE.finditer(text) if m.group() == '"']
    for start, end in zip(quotes, [*quotes[1:], len(text)], strict=False):
        yield _decode(text[start + 1 : end])


def _decode(inner: str) -> str:
    """A JSON string literal's content with its escapes decoded; where one is bad (`\\x`,
    a lone backslash at the end) it is kept as written and the rest is decoded all the same."""
    if "\\" not in inner:
        return inner
    with contextlib.suppress(ValueError):
        return str(_STRINGS.decode('"' + inner + '"'))  # the C decoder, where it can
    return _ESCAPE.sub(_unescape, inner)


def _unescape(match: re.Match[str]) -> str:
    high, low, code, simple = match.groups()
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
    if code is not None:
        return chr(int(code, 16))
    return _SIMPLE[simple]


_QUOTE_OR_ESCAPE = re.compile(r'\\.|"', re.DOTALL)
_ESCAPE = re.compile(
    r"\\(?:u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|u([0-9a-f]{4})|([\"\\/bfnrt]))",
    re.IGNORECASE,
)
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_STRINGS = json.JSONDecoder(strict=False)  # strict=False: control characters in a string


def _as_number(text: str) -> Decimal | None:
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return None if not number.is_finite() else number
