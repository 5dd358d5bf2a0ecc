"""The database server the benchmark writes to, and the CPU its processes use (/proc): the
whole server's, one backend's, or the backends of one database, sampled while a flow runs."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import psycopg
from psycopg import sql

from logins.dev.embedded import EmbeddedPostgres, dsn_with_database


class Server:
    """BENCH_DATABASE_URL's server (a superuser DSN), else an embedded one in the work folder."""

    def __init__(self, work: Path, admin_dsn: str | None, suffix: str = "") -> None:
        self._embedded: EmbeddedPostgres | None = None
        self.suffix = suffix  # appended to every database name (runs that share a server)
        if admin_dsn:
            self.admin_dsn = admin_dsn
        else:
            self._embedded = EmbeddedPostgres(work / "postgres").start()
            self.admin_dsn = self._embedded.dsn
        self.embedded = self._embedded is not None

    def describe(self) -> dict[str, str]:
        info: dict[str, str] = {}
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
                row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
                info[name] = str(row[0]) if row else "?"
        info["version"] = info.pop("server_version")
        info["where"] = "embedded (pgserver binaries, fsync off)" if self.embedded else "external"
        return info

    def _value(self, query: sql.Composable | str, *params: Any) -> Any:
        """`query` on an admin connection (autocommit): its first row's first column, if any."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            cur = conn.execute(query, params or None)  # type: ignore[arg-type]
            row = cur.fetchone() if cur.description else None
        return None if row is None else row[0]

    def fresh_database(self, name: str) -> str:
        self.drop_database(name)
        self._value(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name + self.suffix)))
        return dsn_with_database(self.admin_dsn, name + self.suffix)

    def drop_database(self, name: str) -> None:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        self._value(drop.format(sql.Identifier(name + self.suffix)))

    def wal_lsn(self) -> str:
        """The server's current WAL insert position (pg_current_wal_lsn()), as text."""
        return str(self._value("SELECT pg_current_wal_lsn()::text"))

    def wal_bytes(self, since: str) -> int:
        """WAL bytes written since the position `since` (pg_wal_lsn_diff): by the whole
        server, so other databases' writes in the meantime count too."""
        diff = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint"
        return int(self._value(diff, since))

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by the server's processes: the postmaster's own and reaped
        children's (a flow's backends, once they exit) plus its live children's. None if the
        server is not on this machine (or /proc is not readable)."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            try:  # while the backend lives: its parent is the postmaster
                postmaster = int(_stat(int(row[0]))[1])  # type: ignore[index]
            except (OSError, ValueError, IndexError):
                return None
        ticks = os.sysconf("SC_CLK_TCK")
        try:
            fields = _stat(postmaster)
            total = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    child = _stat(int(entry.name), missing_ok=True)
                    if child and int(child[1]) == postmaster:
                        total += int(child[11]) + int(child[12])
        except (OSError, ValueError, IndexError):
            return None
        return total / ticks

    @contextlib.contextmanager
    def measured(self, conn: psycopg.Connection[Any]) -> Iterator[dict[str, Any]]:
        """Around a block of statements on `conn`: its wall `seconds`, the `wal_bytes` the
        server wrote, the CPU seconds of the server (`server_cpu`) and of `conn`'s own backend
        (`backend_cpu`; None where /proc cannot tell)."""
        pid, got = conn.info.backend_pid, dict[str, Any]()
        wal, cpu, own = self.wal_lsn(), self.cpu_seconds(), backend_cpu_seconds(pid)
        started = time.perf_counter()
        yield got
        got["seconds"] = time.perf_counter() - started
        for key, before, after in (("server_cpu", cpu, self.cpu_seconds()),
                                   ("backend_cpu", own, backend_cpu_seconds(pid))):  # fmt: skip
            got[key] = None if before is None or after is None else after - before
        got["wal_bytes"] = self.wal_bytes(wal)

    def backends_cpu(self, database: str) -> BackendsCpu:
        """A sampler of the CPU used by the backends connected to `database` (of this server):
        unlike cpu_seconds, other databases' clients of a shared server do not count."""
        return BackendsCpu(self.admin_dsn, database + self.suffix)

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()


def backend_cpu_seconds(pid: int) -> float | None:
    """On-CPU time of one local process, in seconds, from /proc/PID/schedstat (nanoseconds;
    None if the process is gone or not on this machine)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


class Poller:
    """Used as `with`: `_poll()` runs on a daemon thread from the block's start to its end,
    when `_stop` is set and the thread joined."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        raise NotImplementedError


class BackendsCpu(Poller):
    """Polls, every `every` seconds until stopped, the backends connected to one database and
    their on-CPU time (/proc/PID/schedstat): `seconds` sums each backend's last reading, so
    the CPU a backend used in its last interval before it exited is missed (<= `every`)."""

    def __init__(self, admin_dsn: str, database: str, every: float = 0.1) -> None:
        self._admin_dsn, self._database, self._every = admin_dsn, database, every
        self._last: dict[int, float] = {}
        self.readable = True
        super().__init__()

    def _poll(self) -> None:
        with psycopg.connect(self._admin_dsn, autocommit=True) as conn:
            while True:
                pids = conn.execute(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self._database,),
                ).fetchall()
                for (pid,) in pids:
                    used = backend_cpu_seconds(int(pid))
                    if used is None:
                        self.readable = self.readable and pid in self._last
                    else:
                        self._last[int(pid)] = used
                if self._stop.wait(self._every):
                    break

    @property
    def seconds(self) -> float | None:
        return sum(self._last.values()) if self.readable and self._last else None


def _stat(pid: int, missing_ok: bool = False) -> list[str]:
    """/proc/PID/stat's fields after the command name: [state, ppid, ...] (index = field - 3)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if missing_ok:
            return []
        raise
    return text.rsplit(")", 1)[1].split()
