"""`make demo`: the whole product on a fresh machine with nothing but Python.

Starts moto's SQS server and a private PostgreSQL, generates keys, seeds sample logins, runs
`python -m bytewax.run flows.logins -w N` as an operator would (environment variables only)
until the queue is drained (with its progress; the flow's log goes to .demo/flow.log), prints
a report and stops what it started. Its state is left in
.demo/ for a look afterwards and wiped at the next run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from logins.core.config import load_config
from logins.core.keys import generate_keys
from logins.core.progress import progress
from logins.core.stats import collect
from logins.dev.embedded import EmbeddedPostgres, EmbeddedSqs
from logins.dev.env import service_env
from logins.dev.generator import generate
from logins.dev.seed import send_bodies

QUEUE = "login-queue"


def say(text: str = "") -> None:
    print(text, flush=True)


def run_demo(count: int, workers: int, seed: int, workdir: Path = Path(".demo")) -> int:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    keys = generate_keys(workdir / "keys")
    say(f"1/5 keys: token key and vault key pair in {workdir / 'keys'} (demo only)")
    with EmbeddedPostgres(workdir / "postgres") as postgres, EmbeddedSqs() as sqs:
        say(f"2/5 services: PostgreSQL at {postgres.dsn}, SQS (moto) at {sqs.endpoint_url}")
        queue_url = sqs.create_queue(QUEUE, VisibilityTimeout="30")
        messages = generate(count, seed=seed)
        send_bodies(sqs.client(), queue_url, (m.body for m in messages))
        kinds = Counter(m.kind for m in messages)
        say(f"3/5 seeded {count} messages: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
        contract = service_env(
            keys, database_url=postgres.dsn, queue_url=queue_url, endpoint_url=sqs.endpoint_url
        )
        env = {**os.environ, **contract, "LOGINS_STOP_WHEN_IDLE": "2"}
        command = [sys.executable, "-m", "bytewax.run", "flows.logins", "-w", str(workers)]
        say(f"4/5 running: {' '.join(command[1:])} (until the queue is drained)")
        log_path = workdir / "flow.log"
        started = time.monotonic()
        client = sqs.client()
        code = _drain(command, env, log_path, client, queue_url, count)
        say(
            f"    flow exited with {code} after {time.monotonic() - started:.1f}s (log: {log_path})"
        )
        if code != 0:
            say(log_path.read_text(errors="replace")[-3000:])
            return code
        config = load_config(env)
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            left = _left(client, queue_url)
            ok = _report(conn, config, env, keys, expected=count, left=left)
    say("    servers stopped.")
    return 0 if ok else 1


def _drain(
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    client: Any,
    queue_url: str,
    count: int,
) -> int:
    """Run the flow, its log in a file, and show meanwhile how much of the queue is done."""
    deadline = time.monotonic() + 600
    with log_path.open("w") as log, progress("drain: messages done", total=count) as bar:
        flow = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    code = flow.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
                        raise
                    bar.update(_done(count, client, queue_url))
                    continue
                bar.update(_done(count, client, queue_url))
                return code
        finally:
            if flow.poll() is None:
                flow.kill()
                flow.wait()


def _done(count: int, client: Any, queue_url: str) -> int:
    """Messages of the `count` seeded that left the queue; moto's approximate counts can
    briefly exceed what was sent, which is no progress below zero."""
    return max(0, count - _left(client, queue_url))


def _left(client: Any, queue_url: str) -> int:
    """Messages still in the queue: visible or in flight (received, not yet deleted)."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
    return sum(int(v) for v in attrs["Attributes"].values())


def _report(
    conn: Any, config: Any, env: dict[str, str], keys: dict[str, Path], *, expected: int, left: int
) -> bool:
    """The counts (which must add up to `expected`, with `left` messages still in the queue),
    sample rows, one reveal and the audit rows it made."""
    stats = collect(conn, config)
    adds_up = stats.messages == expected and left == 0
    say("5/5 report")
    say(
        f"    messages sent {expected} = rows {stats.rows} + rejected {stats.rejected}"
        f" + duplicates {stats.duplicates} -> {'adds up' if adds_up else 'DOES NOT ADD UP'};"
        f" left in queue: {left}"
    )
    say(
        "    rejected by reason: "
        + ", ".join(f"{r} {n}" for r, n in stats.rejected_by_reason.items())
    )
    say(
        "    distinct tokens: "
        + ", ".join(f"{c} {n}" for c, n in stats.distinct_tokens.items())
        + f"; vault entries: {stats.vault_entries}"
    )
    rows = conn.execute(
        sql.SQL(
            "SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version,"
            " app_version_text, create_date FROM {} ORDER BY sent_at LIMIT 5"
        ).format(sql.Identifier(config.sink.table))
    ).fetchall()
    say(
        "    sample rows (user_id, device_type, masked_ip, masked_device_id, locale,"
        " app_version, app_version_text, create_date):"
    )
    for row in rows:
        say("      " + " | ".join("null" if v is None else str(v) for v in row))
    token = rows[0][2]
    command = [
        "logins",
        "reveal",
        token,
        "--private-key-file",
        str(keys["vault.key"]),
        "--reason",
        "demo: show how recovery works",
        "--actor",
        "demo",
    ]
    say(f"    $ {shlex.join(command)}")
    shown = subprocess.run(
        [sys.executable, "-m", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    for line in (shown.stdout or shown.stderr).strip().splitlines():
        say("      " + line)
    say(f"    audit rows in {config.vault.audit_table}: {_audit_rows(conn, config)}")
    return adds_up and shown.returncode == 0


def _audit_rows(conn: Any, config: Any) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(config.vault.audit_table))
    ).fetchone()
    return int(row[0])
