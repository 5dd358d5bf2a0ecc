"""What every part of the benchmark shares: the work folder, keys, the dataset, the database
server, fresh databases, and running a flow as a subprocess while watching its memory."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.generated import write_dataset
from bench.server import Server
from connectors.postgres.migrations import migrate
from logins.core.config import AppConfig
from logins.core.keys import generate_keys
from logins.dev.env import service_env

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
UNUSED_QUEUE = "http://unused.invalid/000000000000/bench"  # the in-process source needs none
WORK = ROOT / "bench" / ".work"
SHORT = {"messages": "-n", "workers": "-w"}  # the short options every command shares


def parser(prog: str, doc: str | None, **options: Any) -> argparse.ArgumentParser:
    """Every bench command's options: `--name` per keyword (underscores as dashes; `-n` and `-w`
    for messages and workers), typed by its default (False: a flag; None: text); a (default,
    help) pair also gives its help."""
    p = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name, value in options.items():
        default, text = value if isinstance(value, tuple) else (value, None)
        flags = [f"--{name.replace('_', '-')}", *([SHORT[name]] if name in SHORT else [])]
        if default is False:
            p.add_argument(*flags, action="store_true", help=text)
        else:
            kind = str if default is None else type(default)
            p.add_argument(*flags, default=default, type=kind, help=text)
    return p


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def git() -> dict[str, Any]:
    """The commit that runs, and whether the work tree differs from it."""

    def run(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()

    return {
        "commit": run("rev-parse", "--short", "HEAD"),
        "dirty": bool(run("status", "--porcelain")),
    }


def stamp(command: str) -> dict[str, Any]:
    """Where a measurement's figures come from: its command, start, commit and load average
    (`finish` adds the load at the end and the seconds it took)."""
    return {
        "command": command,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git(),
        "load_average": [os.getloadavg()[0]],
        "_t0": time.time(),
    }


def finish(record: dict[str, Any]) -> dict[str, Any]:
    record["load_average"].append(os.getloadavg()[0])
    record["seconds"] = round(time.time() - record.pop("_t0"), 1)
    return record


@dataclass(frozen=True)
class Rig:
    """What a measurement runs on: the database server, the work folder, the key files, and
    the dataset file."""

    server: Server
    work: Path
    keys: dict[str, Path]
    data: Path


@contextlib.contextmanager
def session(work: Path, shared: bool = True) -> Iterator[tuple[Server, dict[str, Path]]]:
    """The work folder, the keys and the database server of one command. `shared`: its
    databases are named for this process, so that runs sharing a server do not collide."""
    work.mkdir(parents=True, exist_ok=True)
    suffix = f"_{os.getpid()}" if shared else ""
    server = Server(work, os.environ.get("BENCH_DATABASE_URL") or None, suffix)
    try:
        yield server, keys(work)
    finally:
        server.stop()


# --- inputs ----------------------------------------------------------------------------------


def keys(work: Path) -> dict[str, Path]:
    folder = work / "keys"
    if (folder / "token.key").exists():
        return {n: folder / n for n in ("token.key", "vault.pub", "vault.key")}
    return generate_keys(folder)


def dataset(work: Path, n: int, seed: int) -> tuple[Path, float | None]:
    """The dataset file for (n, seed), written once; returns it and the seconds writing took."""
    path = work / f"logins-{n}-seed{seed}.blocks"
    if path.exists():
        return path, None
    started = time.perf_counter()
    partial = path.with_suffix(".partial")
    write_dataset(partial, n, seed=seed)
    partial.rename(path)
    return path, time.perf_counter() - started


# --- the flow's environment and schema -------------------------------------------------------


def flow_env(
    keyfiles: dict[str, Path],
    database_url: str,
    queue_url: str = UNUSED_QUEUE,
    endpoint_url: str = "http://localhost:4566",  # config/local.yaml's default
    **extra: str,
) -> dict[str, str]:
    """The operator contract's variables (logins.dev.env.service_env, plus the caller's) for a
    flow subprocess, in this environment without its LOGINS_, BENCH_ and PG variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOGINS_", "BENCH_", "PG"))}
    return env | service_env(
        keyfiles, database_url=database_url, queue_url=queue_url, endpoint_url=endpoint_url,
        LOGINS_LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT), **extra,
    )  # fmt: skip


def prepare_schema(database_url: str, config: AppConfig) -> None:
    """The flow's own migrations, then (in this benchmark database only) the ledger's
    `committed_at` default becomes clock_timestamp(): the time the row was written, not the
    start of its transaction (now()), so latency is measured to the write, not to the start
    of the batch's transaction."""
    with psycopg.connect(database_url) as conn:
        migrate(conn, config)
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} ALTER COLUMN committed_at SET DEFAULT clock_timestamp()"
            ).format(sql.Identifier(config.sink.ledger_table))
        )
        conn.commit()


# --- running a flow --------------------------------------------------------------------------


@dataclass
class ProcessResult:
    returncode: int
    wall_seconds: float
    cpu_seconds: float  # user + system of the flow process
    peak_rss_mb: float  # ru_maxrss (= VmHWM at exit)
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (s since start, MB)
    log_path: Path | None = None


def _status_mb(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_process(
    argv: Sequence[str], env: dict[str, str], log_path: Path, timeout: float
) -> ProcessResult:
    """Run `argv`, sampling its RSS every 0.1 s; peak RSS and CPU time come from wait4."""
    samples: list[tuple[float, float]] = []
    with log_path.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.1):
                rss = _status_mb(proc.pid, "VmRSS:")
                if rss is not None:
                    samples.append((time.perf_counter() - started, rss))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    return ProcessResult(
        returncode=proc.returncode,
        wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        rss_samples=samples,
        log_path=log_path,
    )


def tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- reading the ledger ----------------------------------------------------------------------


@dataclass
class Ledger:
    total: int
    outcomes: dict[str, int]
    first_sent: float | None  # epoch seconds
    first_commit: float | None
    last_commit: float | None
    vault_entries: int


def read_ledger(database_url: str, config: AppConfig) -> Ledger:
    sink = config.sink
    with psycopg.connect(database_url) as conn:
        outcomes: dict[str, int] = dict(
            conn.execute(
                sql.SQL("SELECT outcome, count(*) FROM {} GROUP BY outcome").format(
                    sql.Identifier(sink.ledger_table)
                )
            ).fetchall()
        )
        row = conn.execute(
            sql.SQL(
                "SELECT extract(epoch FROM min(sent_at)), extract(epoch FROM min(committed_at)),"
                " extract(epoch FROM max(committed_at)) FROM {}"
            ).format(sql.Identifier(sink.ledger_table))
        ).fetchone()
        vault = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(config.vault.table))
        ).fetchone()
    assert row is not None and vault is not None
    first_sent, first_commit, last_commit = (None if v is None else float(v) for v in row)
    return Ledger(
        sum(outcomes.values()), outcomes, first_sent, first_commit, last_commit, int(vault[0])
    )


def as_dict(obj: Any) -> Any:
    """Dataclasses (nested), tuples and paths as plain data for results.json."""

    def plain(o: Any) -> Any:
        return asdict(o) if is_dataclass(o) and not isinstance(o, type) else str(o)

    return json.loads(json.dumps(obj, default=plain))
