"""The audit trail of vault actions: append-only, and tamper-evident by a hash chain.

Every action on the vault (reveal, forget, rotate, rekey) writes one row here before
anything is shown or changed: who (`actor`), when (`at`), why (`reason`), what (`action`,
`tokens`, `detail`) and how many succeeded or failed. A trigger refuses UPDATE, DELETE and
TRUNCATE. A superuser can still disable the trigger, so each row also carries

    prev_hash = row_hash of the row before it (in id order)
    row_hash  = SHA-256( prev_hash + "\\n" + canonical JSON of the row's fields )

Canonical JSON: the keys id, at (UTC, ISO 8601 with microseconds), actor, reason, action,
tokens, succeeded, failed, detail; sorted keys, no spaces, UTF-8. Inserts are serialised by
`pg_advisory_xact_lock(AUDIT_LOCK_ID)` and take their id inside that lock, so the chain is
linear in id order; a unique index on prev_hash refuses a fork whatever a client does.

Rows written before the chain existed (a table upgraded in place) have no hash. The chain
starts at the first hashed row, whose prev_hash is the *genesis* digest: SHA-256 over
"logins-audit-v1\\n" and the canonical JSON of every earlier row, each followed by "\\n".
So an edit or deletion of those older rows after the upgrade is detected too; what happened
to them before the upgrade cannot be. After the first hashed row, a row without a hash is
refused by a trigger, and `verify` reports one it finds (the trigger was disabled).

`verify` recomputes the chain. An edited row fails its own hash; a deleted row breaks its
successor's prev_hash; rows deleted from the end of the table leave no trace in the chain,
which is why `verify` prints the head (id and hash) for the operator to record elsewhere,
and checks recorded heads (`--anchor ID:HASH`) on later runs. Someone able to rewrite the
table can recompute every hash after their edit: only such an external anchor exposes that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import sql

from logins.config import AppConfig

AUDIT_LOCK_ID = 7_417_302  # pg_advisory_xact_lock key that serialises audit inserts
GENESIS = b"logins-audit-v1\n"
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _utc(self.at),
            "actor": self.actor,
            "reason": self.reason,
            "action": self.action,
            "tokens": list(self.tokens),
            "succeeded": self.succeeded,
            "failed": self.failed,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "row_hash": self.row_hash,
        }


def _utc(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def canonical(row: AuditRow) -> bytes:
    """The bytes a row's hash covers: every field except the two hashes."""
    fields = row.as_dict()
    del fields["prev_hash"], fields["row_hash"]
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def row_hash(prev_hash: str, row: AuditRow) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + canonical(row)).hexdigest()


def genesis(legacy_rows: Sequence[AuditRow] = ()) -> str:
    """prev_hash of the first hashed row: commits to every row written before the chain."""
    digest = hashlib.sha256(GENESIS)
    for row in legacy_rows:
        digest.update(canonical(row) + b"\n")
    return digest.hexdigest()


def _from_db(values: tuple[Any, ...]) -> AuditRow:
    data = dict(zip(_COLUMNS, values, strict=True))
    data["tokens"] = list(data["tokens"] or [])
    return AuditRow(**data)


def _select(config: AppConfig) -> sql.Composed:
    return sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS),
        sql.Identifier(config.vault.audit_table),
    )


def record(
    conn: psycopg.Connection[Any],
    config: AppConfig,
    *,
    actor: str,
    reason: str,
    action: str,
    tokens: Sequence[str] = (),
    succeeded: int = 0,
    failed: int = 0,
    detail: dict[str, Any] | None = None,
) -> AuditRow:
    """Append one row to the chain and commit it (or, inside the caller's transaction, commit
    with it: then the action and its audit row are one atomic change)."""
    if not reason.strip():
        raise ValueError("a reason is required")
    if not actor.strip():
        raise ValueError("an actor is required")
    table = sql.Identifier(config.vault.audit_table)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK_ID,))
        head = conn.execute(
            sql.SQL(
                "SELECT row_hash FROM {} WHERE row_hash IS NOT NULL ORDER BY id DESC LIMIT 1"
            ).format(table)
        ).fetchone()
        if head is not None:
            prev = str(head[0])
        else:
            legacy = [
                _from_db(r) for r in conn.execute(sql.SQL("{} ORDER BY id").format(_select(config)))
            ]
            prev = genesis(legacy)
        got = conn.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')), clock_timestamp()",
            (table.as_string(conn),),
        ).fetchone()
        assert got is not None
        row = AuditRow(
            id=int(got[0]),
            at=got[1],
            actor=actor,
            reason=reason,
            action=action,
            tokens=list(tokens),
            succeeded=succeeded,
            failed=failed,
            detail=detail,
            prev_hash=prev,
        )
        # The detail is stored as jsonb; hash what reading it back will give.
        row = AuditRow(**{**row.__dict__, "detail": _jsonb_round_trip(detail)})
        row = AuditRow(**{**row.__dict__, "row_hash": row_hash(prev, row)})
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                table,
                sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS),
                sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)),
            ),
            (
                row.id,
                row.at,
                row.actor,
                row.reason,
                row.action,
                row.tokens,
                row.succeeded,
                row.failed,
                None if row.detail is None else json.dumps(row.detail),
                row.prev_hash,
                row.row_hash,
            ),
        )
    return row


def _jsonb_round_trip(detail: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if detail is None else json.loads(json.dumps(detail))


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
    legacy_rows: int = 0  # rows before the chain started (no hash)
    first_chained_id: int | None = None
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
    legacy = hashlib.sha256(GENESIS)
    expected: str | None = None  # the prev_hash the next hashed row must carry
    previous_id: int | None = None

    def bad(row_id: int, problem: str) -> Verification:
        result.bad_id, result.problem = row_id, f"row {row_id}: {problem}"
        return result

    for row in rows(conn, config):
        result.rows += 1
        if expected is None and row.row_hash is None:
            result.legacy_rows += 1
            legacy.update(canonical(row) + b"\n")
            previous_id = row.id
            continue
        if expected is None:
            expected = legacy.hexdigest()
            result.first_chained_id = row.id
            before = (
                f"the {result.legacy_rows} rows before the chain started"
                if result.legacy_rows
                else "the start of the chain"
            )
        else:
            before = f"the hash of row {previous_id}, the row before it"
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
