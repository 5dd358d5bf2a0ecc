"""Retention of sealed rejected bodies (`logins purge`, run daily from cron).

A rejected message is kept sealed whole so that someone with the vault key can see what the
producer sent. That is diagnosis, not a record to keep: after `sink.rejected_retention_days`
its sealed body is emptied, like an erased one (`body_erased_at` set; the row keeps its
message id, reason and detail, so the ledger's counts still add up). One transaction with
its audit row (action `purge`: how many, the cutoff), made by the eraser's SECURITY DEFINER
function `<prefix>purge` (logins/core/vaultsql.py): the eraser cannot UPDATE the table, nor
choose the retention (the owner's, in `logins_control`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from logins.core import controlsql, vaultsql
from logins.core.config import AppConfig
from logins.core.vaultschema import tables


@dataclass
class Purge:
    retention_days: int
    cutoff: datetime
    purged: int = 0
    audit_id: int | None = None
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "cutoff": self.cutoff.isoformat()}


def purge_rejected(
    conn: psycopg.Connection[Any],
    config: AppConfig,
    *,
    days: int,
    reason: str,
    note: str | None = None,
    dry_run: bool = False,
) -> Purge:
    """Empty every sealed rejected body older than the owner's retention (by `rejected_at`):
    the setting `logins migrate` wrote from `sink.rejected_retention_days`, whatever `days`
    says (a dry run, which only reads, counts with `days`). The result names the retention
    the function used."""
    if days < 1:
        raise ValueError("the retention must be at least one day")
    table = sql.Identifier(tables(config).rejected)
    if not dry_run:  # the eraser's function: the change and its audit row, one transaction
        try:
            with conn.transaction():
                got = conn.execute(
                    sql.SQL("SELECT {}(%s, %s)").format(
                        sql.Identifier(vaultsql.names(config)["purge"])
                    ),
                    (reason, note),
                ).fetchone()
        except psycopg.errors.LockNotAvailable as exc:  # names the holder, and how to end it
            raise controlsql.busy(exc) from None
        assert got is not None
        done: dict[str, Any] = got[0]
        return Purge(
            int(done["retention_days"]),
            datetime.fromisoformat(done["cutoff"]),
            purged=int(done["purged"]),
            audit_id=int(done["audit_id"]),
        )
    where = sql.SQL("rejected_at < %(cutoff)s AND octet_length(sealed_body) > 0")
    with conn.transaction():
        got = conn.execute("SELECT now() - make_interval(days => %s)", (days,)).fetchone()
        assert got is not None
        result = Purge(days, got[0], dry_run=True)
        counted = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table, where),
            {"cutoff": result.cutoff},
        ).fetchone()
        result.purged = int(counted[0]) if counted else 0
    return result
