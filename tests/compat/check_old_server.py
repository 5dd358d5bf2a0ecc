"""Against a real PostgreSQL older than 13 (`make compat-test` starts an 11.13): the flow,
`logins check --connect` and `logins migrate` each exit 2 within seconds with "PostgreSQL 13
or later is required (this server is 11.13)", and create nothing. Collected only by
tests/compat/pgversions.py (the file name keeps `make test` from collecting it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from connectors.postgres.serverversion import MINIMUM, version_text
from logins.dev.embedded import EmbeddedSqs
from tests.helpers import REPO, make_keys, service_env

BIN = Path(sys.executable).parent


def test_an_old_server_is_refused_at_once_by_the_flow_check_and_migrate(
    tmp_path: Path, pg_admin_dsn: str, queue_url: str, sqs: EmbeddedSqs
) -> None:
    with psycopg.connect(pg_admin_dsn) as conn:
        number = conn.info.server_version
    assert number < MINIMUM, f"this check needs a server older than 13, not {number}"
    expected = f"PostgreSQL 13 or later is required (this server is {version_text(number)})"
    keys = make_keys(tmp_path / "keys")
    env = {
        **os.environ,
        **service_env(
            keys, database_url=pg_admin_dsn, queue_url=queue_url, endpoint_url=sqs.endpoint_url
        ),
    }
    for command in (
        [str(BIN / "logins"), "check", "--connect"],
        [str(BIN / "logins"), "migrate"],
        [sys.executable, "-m", "bytewax.run", "flows.logins"],
    ):
        started = time.monotonic()
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        seconds = time.monotonic() - started
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert expected in done.stdout + done.stderr, (command, done.stdout, done.stderr)
        assert seconds < 15, (command, seconds)  # not the 20 s of retries a transient error gets
        print(f"{' '.join(command[-2:])}: exit 2 after {seconds:.1f} s: {expected}")
    with psycopg.connect(pg_admin_dsn) as conn:
        assert conn.execute("SELECT to_regclass('user_logins')").fetchone() == (None,)
