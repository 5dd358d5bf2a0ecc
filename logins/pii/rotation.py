"""Key rotation: a new token key (`rotate_tokens`) and a new vault key pair (`rekey`).

Token key. The token key file's first line is the active key; older lines stay so their
tokens still verify. After a new key is prepended and the pipelines restarted, new rows
carry new tokens. `rotate_tokens` walks the vault for entries whose token is under another
key and, for each, opens the value, computes its token under the active key, seals a new
entry for that token and records the alias (old token -> new token). Batches are keyset
pages, each its own transaction, written with ON CONFLICT DO NOTHING; an entry whose alias
to the active key exists is skipped, so a run can be stopped and started again at any time.

Vault key pair. `rekey` re-seals every vault entry and every sealed rejected body from the
old key pair to a new public key: only rows still marked with the old vault_key_id, in
keyset batches, each its own transaction, so it too resumes where it stopped.

Both write an audit row before the first change, one per batch (in the batch's transaction,
with what it wrote) and one with the counts at the end. The rotator changes nothing itself:
each batch is one call of its SECURITY DEFINER function (`<prefix>rotate`, `<prefix>rekey`,
logins/core/vaultsql.py), which writes the entries or re-sealed rows and the audit row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from nacl.exceptions import CryptoError
from nacl.public import PublicKey
from psycopg import sql
from psycopg.types.json import Jsonb
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from logins.core import vaultsql
from logins.core.config import AppConfig
from logins.core.keys import vault_key_id
from logins.core.tokens import Tokenizer, key_id_of
from logins.core.vault import Opener, Sealer, VaultError
from logins.core.vaultschema import tables

Progress = Callable[[int, int], None]  # (rows walked so far, rows to walk): logins.core.progress


@dataclass
class RotationResult:
    to_key_id: str
    rotated: int = 0  # entries that got a new token (alias written)
    failed: int = 0  # entries that could not be opened or verified
    failures: list[str] = field(default_factory=list)  # "token: why", the first few
    remaining: int = 0  # entries under an old key still without an alias to the active key

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _note(result: RotationResult | RekeyResult, what: str) -> None:
    result.failed += 1
    if len(result.failures) < 20:
        result.failures.append(what)


_PENDING = (
    "FROM {vault} v WHERE split_part(v.token, '.', 1) <> %(active)s"
    " AND NOT EXISTS (SELECT 1 FROM {aliases} a WHERE a.old_token = v.token"
    " AND split_part(a.new_token, '.', 1) = %(active)s)"
)


def pending_rotation(conn: psycopg.Connection[Any], config: AppConfig, active: str) -> int:
    t = tables(config)
    query = sql.SQL("SELECT count(*) " + _PENDING).format(
        vault=sql.Identifier(t.vault), aliases=sql.Identifier(t.aliases)
    )
    return _number(conn, query, {"active": active})


@dataclass
class _Run:
    """One rotation or rekey: its audited calls share the connection, the operator's reason
    and note; its walk reports each batch to `progress` against `total`."""

    conn: psycopg.Connection[Any]
    config: AppConfig
    reason: str
    note: str | None
    batch_size: int = 500
    progress: Progress | None = None
    total: int = 0
    walked: int = 0

    def call(
        self,
        function: str,
        detail: dict[str, Any],
        args: tuple[Any, ...],
        *,
        succeeded: int = 0,
        failed: int = 0,
    ) -> int:
        """One call of the rotator's function `function` (its audit row written with it), in
        its own transaction. A call that meets a running erasure (its lock held longer than
        the wait) is tried again, up to 10 times. Returns what the function counted."""
        values = (self.reason, self.note, Jsonb(detail), succeeded, failed, *args)
        query = sql.SQL("SELECT {}({})").format(
            sql.Identifier(vaultsql.names(self.config)[function]),
            sql.SQL(", ").join(sql.Placeholder() for _ in values),
        )
        for attempt in Retrying(
            retry=retry_if_exception_type(psycopg.errors.LockNotAvailable),
            stop=stop_after_attempt(10),
            reraise=True,
        ):
            with attempt, self.conn.transaction():
                got = self.conn.execute(query, values).fetchone()
                return int(got[0]) if got else 0
        raise AssertionError("unreachable: tenacity reraises the last attempt's error")

    def batches(self, query: sql.Composed, params: dict[str, Any]) -> Iterator[list[Any]]:
        """The rows of `query` (ordered by its first column, with `%(after)s` and `%(n)s`) in
        batches, each read after the last key of the one before: resumable, and rows the
        caller changed in between are not read twice. Progress is told after each batch."""
        after = ""
        while rows := self.conn.execute(
            query, {**params, "after": after, "n": self.batch_size}
        ).fetchall():
            yield rows
            after = rows[-1][0]
            self.walked += len(rows)
            if self.progress:
                self.progress(self.walked, max(self.total, self.walked))


def rotate_tokens(
    conn: psycopg.Connection[Any],
    config: AppConfig,
    *,
    opener: Opener,
    tokenizer: Tokenizer,
    reason: str,
    note: str | None = None,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> RotationResult:
    t = tables(config)
    active = tokenizer.key_id
    sealer = Sealer(opener.public_key)
    result = RotationResult(to_key_id=active)
    run = _Run(conn, config, reason, note, batch_size, progress)
    vaultsql.flush(conn, config)
    run.total = pending = pending_rotation(conn, config, active)
    _rotate_call(
        run,
        {
            "phase": "start",
            "to_token_key": active,
            "known_token_keys": tokenizer.key_ids,
            "pending": pending,
        },
    )
    select = sql.SQL(
        "SELECT v.token, v.field, v.sealed, v.vault_key_id " + _PENDING + " AND v.token > %(after)s"
        " ORDER BY v.token LIMIT %(n)s"
    ).format(vault=sql.Identifier(t.vault), aliases=sql.Identifier(t.aliases))
    for batch in run.batches(select, {"active": active}):
        opened: list[tuple[str, str, str]] = []  # (old token, field, value)
        for token, field_name, sealed, key_id in batch:
            if key_id != opener.key_id:
                _note(result, f"{token}: sealed to vault key {key_id}, not {opener.key_id}")
                continue
            try:
                opened.append(
                    (token, field_name, opener.open(bytes(sealed), field=field_name, token=token))
                )
            except VaultError as exc:
                _note(result, str(exc))
        # One batch per key (with a KMS key: concurrent GenerateMacs), not a call per entry.
        verified = tokenizer.verify_many(opened)
        for (token, _, _), ok in zip(opened, verified, strict=True):
            if not ok:
                _note(
                    result,
                    f"{token}: does not verify (token key {key_id_of(token)} not configured?)",
                )
        good = [item for item, ok in zip(opened, verified, strict=True) if ok]
        news = tokenizer.tokens([(field_name, value) for _, field_name, value in good])
        seals = sealer.batch()  # one data key per chunk (docs/vault.md)
        new_entries = [
            (new, field_name, seals.seal(field_name, new, value), sealer.key_id)
            for (_, field_name, value), new in zip(good, news, strict=True)
        ]
        aliases = [(old, new, f) for (old, f, _), new in zip(good, news, strict=True)]
        if aliases:
            result.rotated += _rotate_call(
                run,
                {"phase": "batch", "to_token_key": active},
                old=[old for old, _, _ in aliases],
                new=[new for new, _, _, _ in new_entries],
                sealed=[sealed for _, _, sealed, _ in new_entries],
                key_ids=[key_id for _, _, _, key_id in new_entries],
            )
    result.remaining = pending_rotation(conn, config, active)
    _rotate_call(
        run,
        {"phase": "done", "to_token_key": active, "remaining": result.remaining},
        succeeded=result.rotated,
        failed=result.failed,
    )
    return result


def _rotate_call(
    run: _Run,
    detail: dict[str, Any],
    *,
    succeeded: int = 0,
    failed: int = 0,
    old: list[str] | None = None,
    new: list[str] | None = None,
    sealed: list[bytes] | None = None,
    key_ids: list[str] | None = None,
) -> int:
    """A batch of the token rotation (a new entry and an alias for each old token still in
    the vault; an entry erased meanwhile does not come back), or its start or done row.
    Returns the entries rotated."""
    args = (old or [], new or [], sealed or [], key_ids or [])
    return run.call("rotate", detail, args, succeeded=succeeded, failed=failed)


def _rekey_call(
    run: _Run,
    detail: dict[str, Any],
    *,
    succeeded: int = 0,
    failed: int = 0,
    rejected: bool = False,
    rows: list[tuple[str, bytes]] | None = None,
    from_key: str = "",
    to_key: str = "",
) -> int:
    """Re-sealed vault entries (by token) or rejected bodies (by message id) of a rekey, or
    its start or done row. Returns the rows re-sealed."""
    keys, bodies = [k for k, _ in rows or []], [b for _, b in rows or []]
    args = (rejected, keys, bodies, from_key, to_key)
    return run.call("rekey", detail, args, succeeded=succeeded, failed=failed)


@dataclass
class RekeyResult:
    from_key_id: str
    to_key_id: str
    vault_rekeyed: int = 0
    rejected_rekeyed: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    remaining_vault: int = 0
    remaining_rejected: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _remaining(conn: psycopg.Connection[Any], table: str, key_id: str) -> int:
    return _count(conn, table, "vault_key_id = %s", (key_id,))


def rekey(
    conn: psycopg.Connection[Any],
    config: AppConfig,
    *,
    old: Opener,
    new_public: PublicKey,
    reason: str,
    note: str | None = None,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> RekeyResult:
    t = tables(config)
    sealer = Sealer(new_public)
    if sealer.key_id == old.key_id:
        raise ValueError("the new public key is the old key pair's: nothing to re-seal")
    result = RekeyResult(from_key_id=old.key_id, to_key_id=vault_key_id(new_public))
    run = _Run(conn, config, reason, note, batch_size, progress)
    vaultsql.flush(conn, config)
    to_vault = _remaining(conn, t.vault, old.key_id)
    to_rejected = _remaining(conn, t.rejected, old.key_id)
    run.total = to_vault + to_rejected
    keys = {"from_vault_key": old.key_id, "to_vault_key": sealer.key_id}
    _rekey_call(
        run,
        {"phase": "start", **keys, "vault_entries": to_vault, "rejected_bodies": to_rejected},
    )
    select_vault = sql.SQL(
        "SELECT token, field, sealed FROM {} WHERE vault_key_id = %(key)s AND token > %(after)s"
        " ORDER BY token LIMIT %(n)s"
    ).format(sql.Identifier(t.vault))
    for batch in run.batches(select_vault, {"key": old.key_id}):
        updates: list[tuple[str, bytes]] = []
        seals = sealer.batch()  # one data key per chunk (docs/vault.md)
        for token, field_name, sealed in batch:
            try:
                value = old.open(bytes(sealed), field=field_name, token=token)
            except VaultError as exc:
                _note(result, str(exc))
                continue
            updates.append((token, seals.seal(field_name, token, value)))
        if updates:
            result.vault_rekeyed += _rekey_call(
                run,
                {"phase": "batch", "table": t.vault, **keys},
                rows=updates,
                from_key=old.key_id,
                to_key=sealer.key_id,
            )
    select_rejected = sql.SQL(
        "SELECT message_id, sealed_body FROM {} WHERE vault_key_id = %(key)s"
        " AND message_id > %(after)s ORDER BY message_id LIMIT %(n)s"
    ).format(sql.Identifier(t.rejected))
    for batch in run.batches(select_rejected, {"key": old.key_id}):
        updates = []
        seals = sealer.batch()
        for message_id, sealed in batch:
            body = bytes(sealed)
            if body:  # an erased body (logins forget) has nothing to re-seal
                try:
                    text = old.open_rejected(body, message_id=message_id)
                except (VaultError, CryptoError, ValueError) as exc:
                    _note(result, f"message {message_id}: {type(exc).__name__}")
                    continue
                body = seals.seal_rejected(message_id, text)
            updates.append((message_id, body))
        if updates:
            result.rejected_rekeyed += _rekey_call(
                run,
                {"phase": "batch", "table": t.rejected, **keys},
                rejected=True,
                rows=updates,
                from_key=old.key_id,
                to_key=sealer.key_id,
            )
    result.remaining_vault = _remaining(conn, t.vault, old.key_id)
    result.remaining_rejected = _remaining(conn, t.rejected, old.key_id)
    _rekey_call(
        run,
        {
            "phase": "done",
            **keys,
            "remaining_vault": result.remaining_vault,
            "remaining_rejected": result.remaining_rejected,
        },
        succeeded=result.vault_rekeyed + result.rejected_rekeyed,
        failed=result.failed,
    )
    return result


@dataclass
class VaultStatus:
    entries_by_keys: dict[str, int]  # "<token key id>/<vault key id>" -> count
    rejected_by_vault_key: dict[str, int]
    rejected_bodies_erased: int
    aliases: int
    erasures: int
    pending_rotation: int | None  # entries not yet rotated to the active token key

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status(
    conn: psycopg.Connection[Any], config: AppConfig, active_token_key: str | None
) -> VaultStatus:
    t = tables(config)

    def pairs(query: sql.Composed) -> dict[str, int]:
        return {str(k): int(n) for k, n in conn.execute(query)}

    return VaultStatus(
        entries_by_keys=pairs(
            sql.SQL(
                "SELECT split_part(token, '.', 1) || '/' || vault_key_id, count(*) FROM {}"
                " GROUP BY 1 ORDER BY 1"
            ).format(sql.Identifier(t.vault))
        ),
        rejected_by_vault_key=pairs(
            sql.SQL(
                "SELECT vault_key_id, count(*) FROM {} WHERE octet_length(sealed_body) > 0"
                " GROUP BY 1 ORDER BY 1"
            ).format(sql.Identifier(t.rejected))
        ),
        rejected_bodies_erased=_count(conn, t.rejected, "octet_length(sealed_body) = 0"),
        aliases=_count(conn, t.aliases),
        erasures=_count(conn, t.erasures),
        pending_rotation=(
            None if active_token_key is None else pending_rotation(conn, config, active_token_key)
        ),
    )


def _count(
    conn: psycopg.Connection[Any], table: str, where: str = "true", params: tuple[Any, ...] = ()
) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
        sql.Identifier(table), sql.SQL(where)
    )
    return _number(conn, query, params or None)


def _number(conn: psycopg.Connection[Any], query: sql.Composed, params: Any = None) -> int:
    """The one number a count query returns."""
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0
