"""Embedded PostgreSQL: a real server on a loopback port, from the binaries bundled in the
``pgserver`` wheel (we run ``initdb`` and ``postgres`` ourselves, because
``pgserver.get_server`` only ever listens on a unix socket)."""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from logins.dev.embedded.server import HOST, LoopbackServer, PortTaken

__all__ = ["EmbeddedPostgres", "dsn_with_database"]

SUPERUSER = "postgres"  # the database role initdb creates; trust auth, no password

# PostgreSQL refuses to run as root. pgserver then runs it as a system account named
# "pgserver" (creating it with useradd); we share that account so both tools can coexist.
_ROOT_RUN_AS = "pgserver"
_ROOT_FALLBACK = "nobody"  # when useradd is missing (e.g. busybox images)

_START_TIMEOUT_S = 60.0


def dsn_with_database(dsn: str, dbname: str) -> str:
    """The same server and credentials as ``dsn``, another database; keeps URL DSNs as URLs."""
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


@dataclass(frozen=True)
class _Account:
    """The unprivileged OS account that runs the server when we are root."""

    name: str
    uid: int
    gid: int


def _server_account() -> _Account | None:
    """None unless we are root; then the account to drop to (created like pgserver does)."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd

    def lookup(name: str) -> _Account | None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return _Account(name, entry.pw_uid, entry.pw_gid)

    account = lookup(_ROOT_RUN_AS)
    if account is None:
        path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
        useradd = shutil.which("useradd", path=path)
        if useradd is not None:
            # A concurrent process may win the race; the lookup below settles it either way.
            subprocess.run(
                [useradd, "--system", "--user-group", "--no-create-home",
                 "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", _ROOT_RUN_AS],
                check=False, capture_output=True,
            )  # fmt: skip
            account = lookup(_ROOT_RUN_AS)
    if account is None:
        account = lookup(_ROOT_FALLBACK)
    if account is None:
        raise RuntimeError(
            f"running as root: PostgreSQL needs an unprivileged account, and neither "
            f"{_ROOT_RUN_AS!r} (useradd failed) nor {_ROOT_FALLBACK!r} exists"
        )
    return account


def _grant_search(path: Path) -> None:
    """Let the server account walk down to ``path``: add o+x (search, not list) where missing.

    Needed as root only: pytest's and mkdtemp's folders are 0700, and the server account must
    reach its data directory and the pgserver binaries through them.
    """
    for folder in reversed(path.parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _pgserver_bin_dir() -> Path:
    """pgserver's bundled ``bin`` folder, found without importing pgserver.

    Importing it would register its own atexit handler, take a lock file in the user's runtime
    directory and warn when XDG_RUNTIME_DIR is unset; we only need its binaries.
    """
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded PostgreSQL needs pgserver: pip install 'logins-etl[embedded]'"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not all((bin_dir / name).exists() for name in ("initdb", "postgres")):
        raise RuntimeError(f"pgserver is installed but has no PostgreSQL binaries in {bin_dir}")
    return bin_dir


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as gone (PID 1 in a container may not reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _cmdline(pid: int) -> str | None:
    """The command line of ``pid``, or None when it is gone or unknowable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None  # Linux: the process is gone
        result = subprocess.run(
            ["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False
        )
        return result.stdout.strip() or None
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or None


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


class EmbeddedPostgres(LoopbackServer):
    """A private PostgreSQL server (pgserver's binaries) in a folder, on TCP 127.0.0.1 only.

    The folder is the data directory; it is initialised on first start and reused afterwards.
    Auth is ``trust`` (a throwaway server bound to loopback only) and fsync is off: durability
    across an OS crash is worthless here, and it makes CREATE DATABASE much cheaper. Unix
    sockets are disabled, so every client goes through TCP as in production.

    The postmaster is our own child (not daemonised by ``pg_ctl``), so stop() waits for it and
    reaps it: pg_ctl's postmaster is adopted by PID 1, which in containers may never reap it.
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(port)
        self.data_dir = Path(data_dir).absolute()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid = os.getpid()
        self._account: _Account | None = None
        self._bin_dir: Path | None = None

    # -- lifecycle

    def start(self) -> Self:
        """Initialise the folder if needed and start; returns once the server accepts TCP."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        self._bin_dir = _pgserver_bin_dir()
        self._account = _server_account()
        self._prepare_folder()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER,
                      "--auth=trust", "--encoding=UTF8", "--locale=C",
                      "--no-sync", "--no-instructions")  # fmt: skip
        self._stop_leftover()
        self._listen(self._spawn)
        atexit.register(self._stop_at_exit)
        return self

    def stop(self) -> None:
        """Fast shutdown; returns once the postmaster, and so every backend, has exited."""
        proc, self._proc = self._proc, None
        atexit.unregister(self._stop_at_exit)
        if proc is None:
            return
        # SIGINT is PostgreSQL's "fast" shutdown: abort sessions, checkpoint, exit.
        # SIGQUIT is "immediate" (crash-like, WAL replay on next start); SIGKILL the last resort.
        for sig, grace_s in ((signal.SIGINT, 60.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace_s)
                return
        raise RuntimeError(f"PostgreSQL postmaster {proc.pid} did not exit")

    def restart(self) -> None:
        """Stop then start the same server on the same port: a database outage on demand."""
        self.stop()
        self.start()

    # -- what clients need

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while running (for fault tests and leak checks)."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/postgres"

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its DSN."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return dsn_with_database(self.dsn, name)

    # -- internals

    def _prepare_folder(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._account is None:
            return
        assert self._bin_dir is not None
        _grant_search(self.data_dir)  # on every start: a new pytest session resets its root to 0700
        _grant_search(self._bin_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            os.chown(self.data_dir, self._account.uid, self._account.gid)

    def _spawn(self, port: int) -> None:
        """Start the postmaster on `port`; wait until postmaster.pid says "ready" (as pg_ctl -w)."""
        assert self._bin_dir is not None
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [str(self._bin_dir / "postgres"), "-D", str(self.data_dir),
                "-h", HOST, "-p", str(port), "-k", "", "-c", "fsync=off"]  # fmt: skip
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,  # the server account may not be allowed into our cwd
                env=self._env(),
                start_new_session=True,  # a terminal's Ctrl-C is for us, not for the server
                **self._drop_privileges(),
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._ready(proc.pid):
            if proc.poll() is not None:
                log_text = self._log_since(log_offset)
                if "Address already in use" in log_text:
                    raise PortTaken(f"{HOST}:{port} is taken:\n{log_text}")
                raise RuntimeError(f"PostgreSQL exited with {proc.returncode}:\n{log_text}")
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"PostgreSQL not ready after {_START_TIMEOUT_S}s:\n"
                                   f"{self._log_since(log_offset)}")  # fmt: skip
            time.sleep(0.01)
        self._proc = proc

    def _ready(self, pid: int) -> bool:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        # Line 1 is the PID, line 8 the status, written once the sockets listen.
        return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"

    def _stop_leftover(self) -> None:
        """A server left on this folder by a killed process would block ours: stop it."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return
        cmdline = _cmdline(pid)
        if cmdline is None or "postgres" not in cmdline or str(self.data_dir) not in cmdline:
            return  # gone, or the PID now belongs to someone else; postgres handles stale files
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _wait_gone(pid, 10.0):
                return
        raise RuntimeError(f"a leftover PostgreSQL (PID {pid}) on {self.data_dir} will not exit")

    def _run(self, program: str, *args: str) -> None:
        """Run a bundled binary as the server account; raise with its output on failure."""
        assert self._bin_dir is not None
        result = subprocess.run(
            [str(self._bin_dir / program), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.data_dir,
            env=self._env(),
            timeout=_START_TIMEOUT_S,
            check=False,
            **self._drop_privileges(),
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} exited with {result.returncode}:\n{result.stdout}{result.stderr}"
            )

    def _drop_privileges(self) -> dict[str, Any]:
        if self._account is None:
            return {}
        return {"user": self._account.uid, "group": self._account.gid, "extra_groups": []}

    @staticmethod
    def _env() -> dict[str, str]:
        # Stable, English messages (we match "Address already in use"); no stray PG* settings.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _stop_at_exit(self) -> None:
        if os.getpid() == self._owner_pid:  # never from a forked child
            self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.data_dir)!r}, port={self._port}, pid={self.pid})"
