"""How long a start that cannot succeed takes to fail: `python -m bench.startfail`.

docs/operations.md promises that a permanent error (no such database, no such queue) ends the
start about as fast as a missing key file does. This runs `python -m bytewax.run flows.logins`
(the README's command) against an embedded PostgreSQL and moto's SQS, `--repeats` times each,
alternating the cases so that the machine's load falls on all of them alike, and prints each
case's median wall time and exit code.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import parser
from logins.core.keys import generate_keys
from logins.dev.embedded import EmbeddedPostgres, EmbeddedSqs, dsn_with_database
from logins.dev.env import service_env


def _run(env: dict[str, str]) -> tuple[float, int, str]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "flows.logins"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines() or [""]
    refusal = next((line for line in reversed(lines) if "cannot start" in line), lines[-1])
    return time.monotonic() - started, done.returncode, refusal


def main() -> None:
    args = parser("python -m bench.startfail", __doc__, repeats=3).parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedSqs() as sqs:
        keys = generate_keys(Path(tmp) / "keys")
        queue = sqs.create_queue("startfail")
        with EmbeddedPostgres(Path(tmp) / "pg") as pg:
            base = service_env(
                keys, database_url=pg.dsn, queue_url=queue, endpoint_url=sqs.endpoint_url
            )
            cases = {
                "missing key file": {"LOGINS_TOKEN_KEY_FILE": str(Path(tmp) / "absent.key")},
                "no such database": {"DATABASE_URL": dsn_with_database(pg.dsn, "nodb")},
                "no such queue": {"SQS_QUEUE_URL": f"{sqs.endpoint_url}/000000000000/gone"},
            }
            times: dict[str, list[float]] = {name: [] for name in cases}
            codes: dict[str, set[int]] = {name: set() for name in cases}
            said: dict[str, str] = {}
            for _ in range(args.repeats):
                for name, override in cases.items():
                    seconds, code, said[name] = _run({**base, **override})
                    times[name].append(seconds)
                    codes[name].add(code)
    load = os.getloadavg()[0]
    print(f"| start | median s ({args.repeats} runs) | exit | why (stderr) |")
    print("|---|---:|---|---|")
    for name in cases:
        median = statistics.median(times[name])
        print(f"| {name} | {median:.1f} | {sorted(codes[name])} | {said[name][:90]} |")
    print(f"\nload average (1 min) at the end: {load:.1f}")


if __name__ == "__main__":
    main()
