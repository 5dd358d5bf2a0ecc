"""The audit trail of vault actions: append-only, tamper-evident by a hash chain, written only
through a SECURITY DEFINER function, and anchored outside the database.

Every action on the vault (reveal, forget, rotate, rekey, purge) writes one row: who
(`actor`: the authenticated database login, `session_user`, never a name someone typed), a
free-text `note` (the CLI's `--actor`), when (`at`), why (`reason`), what (`action`,
`detail`: vault entry ids and counts, never a token or a value) and how many succeeded or
failed. Nobody but the owner may INSERT: rows are appended by `<audit table>_append(...)`
(logins/core/auditsql.py), which takes the chain's lock, the id and the time, sets the actor
and computes the hash itself, and which only the owner's function of each action calls
(logins/core/vaultsql.py: a revealer's `<audit table>_reveal` writes reveal rows only). A
trigger refuses UPDATE, DELETE and TRUNCATE. The table's owner (or a superuser) can still
disable the trigger, so each row also carries

    prev_hash = row_hash of the row before it (in id order)
    row_hash  = SHA-256( prev_hash + "\\n" + canonical form of the row )

The canonical form (`hash_version` 2, the label of the one form there is): "logins-audit-v2",
id, at (UTC, `YYYY-MM-DDTHH:MM:SS.ffffffZ`), actor, note, reason, action, tokens (a JSON
array), succeeded, failed, detail (jsonb's own text form), each as a 4-byte big-endian
length and its UTF-8 bytes (length -1 for NULL), so PostgreSQL and Python compute the same
bytes. The first row's prev_hash is the *genesis* digest, SHA-256 of "logins-audit-v1\\n".
A row without a hash is refused by a trigger, and `verify` reports one it finds (the
trigger was disabled).

`verify` recomputes the chain. An edited row fails its own hash; a deleted row breaks its
successor's prev_hash. Whoever can rewrite the table (its owner, a superuser) can recompute
every hash after an edit, or delete the newest rows: only a head recorded outside the
database exposes that, which is what `logins audit anchor` (logins/core/anchor.py) writes, signed,
and `verify --anchor` checks.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import sql

from logins.core.config import AppConfig

GENESIS = b"logins-audit-v1\n"
V2_TAG = "logins-audit-v2"
ACTIONS = ("reveal", "forget", "rotate", "rekey", "purge")
_COLUMNS = (
    "id",
    "at",
    "actor",
    "reason",
    "action",
    "tokens",
    "succeeded",
    "failed",
    "detail",
    "prev_hash",
    "row_hash",
    "note",
    "hash_version",
)


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    reason: str
    action: str
    tokens: list[str]
    succeeded: int
    failed: int
    detail: dict[str, Any] | None = None
    prev_hash: str | None = None
    row_hash: str | None = None
    note: str | None = None
    hash_version: int | None = None
    detail_text: str | None = None  # the stored jsonb as PostgreSQL prints it (version 2)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _utc(self.at),
            "actor": self.actor,
            "note": self.note,
            "reason": self.reason,
            "action": self.action,
            "tokens": list(self.tokens),
            "succeeded": self.succeeded,
            "failed": self.failed,
            "detail": self.detail,
            "hash_version": self.hash_version,
            "prev_hash": self.prev_hash,
            "row_hash": self.row_hash,
        }


def _utc(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def v2_fields(row: AuditRow) -> list[str | None]:
    """The fields a version-2 hash covers, as text, in order (logins/core/auditsql.py: the same)."""
    return [
        V2_TAG,
        str(row.id),
        row.at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        row.actor,
        row.note,
        row.reason,
        row.action,
        json.dumps(list(row.tokens), separators=(",", ":"), ensure_ascii=False),
        str(row.succeeded),
        str(row.failed),
        row.detail_text,
    ]


def canonical_v2(row: AuditRow) -> bytes:
    """Each field as a 4-byte big-endian length and its UTF-8 bytes; -1 for NULL."""
    out = bytearray()
    for text in v2_fields(row):
        if text is None:
            out += struct.pack(">i", -1)
        else:
            data = text.encode("utf-8")
            out += struct.pack(">i", len(data)) + data
    return bytes(out)


def row_hash(prev_hash: str, row: AuditRow) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + canonical_v2(row)).hexdigest()


def genesis() -> str:
    """prev_hash of the first row."""
    return hashlib.sha256(GENESIS).hexdigest()


def _from_db(values: tuple[Any, ...]) -> AuditRow:
    data = dict(zip((*_COLUMNS, "detail_text"), values, strict=True))
    data["tokens"] = list(data["tokens"] or [])
    return AuditRow(**data)


def _select(config: AppConfig) -> sql.Composed:
    return sql.SQL("SELECT {}, {}::text FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS),
        sql.Identifier("detail"),
        sql.Identifier(config.vault.audit_table),
    )


def append_function(config: AppConfig) -> str:
    """The SECURITY DEFINER function that alone may append to the audit table (called by the
    owner's functions of each action, logins/core/vaultsql.py; no role may call it)."""
    return f"{config.vault.audit_table}_append"


def reveal_function(config: AppConfig) -> str:
    """The revealer's append function: it writes `reveal` rows and nothing else."""
    return f"{config.vault.audit_table}_reveal"


def record(
    conn: psycopg.Connection[Any],
    config: AppConfig,
    *,
    reason: str,
    action: str,
    note: str | None = None,
    succeeded: int = 0,
    failed: int = 0,
    detail: dict[str, Any] | None = None,
) -> AuditRow:
    """Append one row. A `reveal` row goes through the revealer's function; any other action
    through the owner's generic one (only the owner and a superuser may call it: the vault
    roles' other actions write their rows inside the function that makes the change). In
    autocommit mode it is committed on return; inside the caller's transaction it commits
    (or rolls back) with it. The actor is the database login, always."""
    if not reason.strip():
        raise ValueError("a reason is required")
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    encoded = None if detail is None else json.dumps(detail)
    columns = sql.SQL(
        "SELECT audit_id, audit_at, audit_actor, audit_prev_hash, audit_row_hash, audit_detail"
    )
    with conn.transaction():
        if action == "reveal":
            got = conn.execute(
                sql.SQL("{} FROM {}(%s, %s, %s, %s, %s::jsonb)").format(
                    columns, sql.Identifier(reveal_function(config))
                ),
                (reason, note, succeeded, failed, encoded),
            ).fetchone()
        else:
            got = conn.execute(
                sql.SQL("{} FROM {}(%s, %s, %s, %s, %s, %s::jsonb)").format(
                    columns, sql.Identifier(append_function(config))
                ),
                (action, reason, note, succeeded, failed, encoded),
            ).fetchone()
    assert got is not None
    stored = None if got[5] is None else json.loads(got[5])
    return AuditRow(
        id=int(got[0]),
        at=got[1],
        actor=str(got[2]),
        reason=reason,
        action=action,
        tokens=[],
        succeeded=succeeded,
        failed=failed,
        detail=stored,
        prev_hash=got[3],
        row_hash=got[4],
        note=note,
        hash_version=2,
        detail_text=got[5],
    )


def rows(conn: psycopg.Connection[Any], config: AppConfig, page: int = 2000) -> Iterator[AuditRow]:
    """Every row in id order, read page by page."""
    after = -(2**63)
    while True:
        batch = conn.execute(
            sql.SQL("{} WHERE id > %s ORDER BY id LIMIT %s").format(_select(config)),
            (after, page),
        ).fetchall()
        for values in batch:
            yield _from_db(values)
        if len(batch) < page:
            return
        after = batch[-1][0]


def latest(conn: psycopg.Connection[Any], config: AppConfig, limit: int) -> list[AuditRow]:
    return [
        _from_db(r)
        for r in conn.execute(
            sql.SQL("{} ORDER BY id DESC LIMIT %s").format(_select(config)), (limit,)
        )
    ]


@dataclass
class Verification:
    rows: int = 0
    head_id: int | None = None
    head_hash: str | None = None
    bad_id: int | None = None
    problem: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def verify(
    conn: psycopg.Connection[Any], config: AppConfig, anchors: dict[int, str] | None = None
) -> Verification:
    """Recompute the chain; stop at the first bad row. `anchors` are (id -> row_hash) heads
    recorded earlier: each must still be there with that hash."""
    anchors = dict(anchors or {})
    result = Verification()
    expected = genesis()  # the prev_hash the next row must carry
    previous_id: int | None = None

    def bad(row_id: int, problem: str) -> Verification:
        result.bad_id, result.problem = row_id, f"row {row_id}: {problem}"
        return result

    for row in rows(conn, config):
        result.rows += 1
        before = (
            "the start of the chain"
            if previous_id is None
            else f"the hash of row {previous_id}, the row before it"
        )
        if row.row_hash is None or row.prev_hash is None:
            return bad(row.id, "has no hash: inserted bypassing the chain (trigger disabled)")
        if row.prev_hash != expected:
            gap = (
                f" (ids {previous_id + 1}..{row.id - 1} are missing)"
                if previous_id is not None and row.id - previous_id > 1
                else ""
            )
            return bad(
                row.id,
                f"its prev_hash is not {before}: a row before it was deleted or changed{gap}",
            )
        if row_hash(row.prev_hash, row) != row.row_hash:
            return bad(row.id, "its contents do not match its hash: the row was edited")
        if row.id in anchors and anchors.pop(row.id) != row.row_hash:
            return bad(row.id, "its hash differs from the recorded anchor: the chain was rewritten")
        expected, previous_id = row.row_hash, row.id
        result.head_id, result.head_hash = row.id, row.row_hash
    if anchors:
        missing = min(anchors)
        result.bad_id = missing
        result.problem = (
            f"row {missing}: recorded as an anchor but no longer in the table: rows were deleted"
        )
        return result
    _check_sequence(conn, config, result, previous_id or 0)
    return result


def _check_sequence(
    conn: psycopg.Connection[Any], config: AppConfig, result: Verification, last_id: int
) -> None:
    """Ids are taken inside the chain's lock, so the sequence is at the last row's id unless an
    insert failed, or rows were deleted from the end. Only a warning: it can be either."""
    table = sql.Identifier(config.vault.audit_table).as_string(conn)
    try:
        with conn.transaction():
            name = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table,)).fetchone()
            if name is None or name[0] is None:
                return
            got = conn.execute(
                sql.SQL("SELECT last_value, is_called FROM {}").format(
                    sql.SQL(name[0])  # already a quoted, qualified name from PostgreSQL
                )
            ).fetchone()
    except psycopg.Error:
        return
    if got is None or not got[1]:
        return
    if int(got[0]) > last_id:
        result.warnings.append(
            f"the id sequence is at {got[0]} but the last row is {last_id or 'none'}: rows "
            "after it were deleted, or an audit insert failed (compare with a recorded anchor)"
        )
