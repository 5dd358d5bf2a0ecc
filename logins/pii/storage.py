"""The storage step of erasure: rewrite the tables erasure changed, so that the erased bytes
leave the tables' files.

`forget` UPDATEs masked cells and DELETEs vault entries and aliases; `forget --user-id` and
`purge` empty sealed rejected bodies. PostgreSQL writes a new tuple version and leaves the
old one in its page; VACUUM marks that space free but does not zero it, so the erased values'
tokens, ciphertexts and sealed bodies stay in the table's files, and in every base backup or
disk snapshot taken later, until new rows happen to overwrite them.

`VACUUM (FULL, ANALYZE)` writes each table anew, into new files holding only its live
tuples, with its TOAST table and every index rebuilt; the old files are unlinked when it
commits. ANALYZE refreshes `pg_statistic`, whose most-common values can hold tokens. The
price: each table is locked (ACCESS EXCLUSIVE) while it is rewritten, so the pipeline's
inserts and the analysts' reads wait, and the disk needs room for a second copy of it
(bench/storage_rewrite.py measures it). Only the tables' owner may do it (a login granted
`logins_owner`, or a superuser; VACUUM skips other tables with a mere warning, so this
checks first and refuses).

Not reached by any of this: WAL (the server's pg_wal until its segments are recycled after a
checkpoint; a WAL archive and base backups until their retention drops them), replicas'
own copies, and the blocks the unlinked files occupied on the disk (a filesystem does not
zero freed blocks): `unreached` says which of these apply to the server at hand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from logins.core.config import AppConfig
from logins.core.vaultschema import tables


class StorageError(Exception):
    """A rewrite that cannot run here; the message says who can run it."""


@dataclass(frozen=True)
class Rewritten:
    table: str
    bytes_before: int  # pg_total_relation_size: the table, its TOAST and its indexes
    bytes_after: int
    seconds: float


def erased_tables(config: AppConfig) -> list[str]:
    """The tables whose rows erasure and retention change: the sink (masked cells), the
    rejected bodies, the vault, the rotation aliases."""
    t = tables(config)
    return [t.sink, t.rejected, t.vault, t.aliases]


def rewrite(
    conn: psycopg.Connection[Any],
    config: AppConfig,
    only: list[str] | None = None,
    lock_timeout_seconds: float = 30,
) -> list[Rewritten]:
    """VACUUM (FULL, ANALYZE) each erased table (or `only` those of them), as their owner.
    `conn` must be in autocommit mode: VACUUM cannot run inside a transaction."""
    names = erased_tables(config)
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise StorageError(f"not a table erasure changes: {unknown} (these are: {names})")
    names = [n for n in names if not only or n in only]
    owners = dict(
        conn.execute(
            "SELECT n, pg_has_role(current_user, c.relowner, 'USAGE')"
            " FROM unnest(%s::text[]) AS n JOIN pg_class c ON c.oid = to_regclass(quote_ident(n))",
            (names,),
        ).fetchall()
    )
    missing = [n for n in names if n not in owners]
    if missing:
        raise StorageError(f"no such table: {missing} (run `logins migrate` first)")
    refused = [n for n in names if not owners[n]]
    if refused:
        who = conn.execute("SELECT current_user").fetchone()
        raise StorageError(
            f"{who[0] if who else 'this login'} does not own {refused}: rewriting a table needs"
            " its owner. Run `logins storage rewrite` with DATABASE_URL of a login granted"
            " logins_owner (or a superuser)"
        )
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{lock_timeout_seconds}s",))
    done = []
    for name in names:
        before = _size(conn, name)
        started = time.perf_counter()
        conn.execute(sql.SQL("VACUUM (FULL, ANALYZE) {}").format(sql.Identifier(name)))
        done.append(Rewritten(name, before, _size(conn, name), time.perf_counter() - started))
    return done


def _size(conn: psycopg.Connection[Any], table: str) -> int:
    got = conn.execute("SELECT pg_total_relation_size(to_regclass(quote_ident(%s)))", (table,))
    row = got.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


_SETTINGS = ("archive_mode", "checkpoint_timeout", "max_wal_size", "wal_keep_size")


def unreached(conn: psycopg.Connection[Any], rewritten: bool = False) -> list[str]:
    """What an erasure (and the rewrite, if `rewritten`) did not reach on this server, and
    when each ages out, from the server's own settings."""
    settings = dict(
        conn.execute(
            "SELECT n, current_setting(n) FROM unnest(%s::text[]) AS n", (list(_SETTINGS),)
        ).fetchall()
    )
    lines = []
    if not rewritten:
        lines.append(
            "not reached: the tables' files keep the erased bytes in freed space until they are"
            " rewritten: run `logins storage rewrite` as the tables' owner (docs/vault.md,"
            " The storage step)"
        )
    lines.append(
        "not reached: the server's WAL (pg_wal) holds the erased values' old rows until its"
        " segments are recycled after a checkpoint (here checkpoint_timeout"
        f" {settings['checkpoint_timeout']}, max_wal_size {settings['max_wal_size']},"
        f" wal_keep_size {settings['wal_keep_size']})"
    )
    archive = settings["archive_mode"]
    lines.append(
        f"not reached: archive_mode is {archive}: "
        + (
            "the WAL archive and base backups keep them until your backup retention drops them"
            if archive != "off"
            else "base backups and disk snapshots taken before the rewrite keep them until your"
            " backup retention drops them"
        )
        + "; replicas keep them as the primary does"
    )
    return lines
