"""`logins run` as an operator runs it: the flow through Bytewax's runner, its metrics port
checked first (for `python -m bytewax.run flows.logins` too), and a progress line per
interval with the counts as JSON fields."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from logins.dev.embedded import EmbeddedSqs, free_port
from logins.dev.generator import generate
from logins.dev.seed import send_bodies
from tests.helpers import REPO, make_keys, service_env

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

START_S = 30.0  # the check comes before the configuration: ~3 s here, room for a loaded machine


def test_a_held_metrics_port_stops_both_entry_points_with_exit_2_naming_it(
    tmp_path: Path,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        # No configuration at all: were the port not checked first, this would fail on it.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOGINS_", "BYTEWAX_"))}
        env["LOGINS_CONFIG"] = str(tmp_path / "no-such.yaml")
        commands = {
            "logins run": (
                [sys.executable, "-m", "logins", "run", "--metrics-port", str(port)],
                {},
            ),
            "bytewax.run": (
                [sys.executable, "-m", "bytewax.run", "flows.logins", "-w", "2"],
                {"BYTEWAX_DATAFLOW_API_ENABLED": "1", "BYTEWAX_DATAFLOW_API_PORT": str(port)},
            ),
        }
        started = time.monotonic()
        processes = {
            name: subprocess.Popen(
                command,
                env={**env, **extra},
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, (command, extra) in commands.items()
        }
        for name, process in processes.items():
            _, err = process.communicate(timeout=120)
            seconds = time.monotonic() - started
            assert process.returncode == 2, (name, err[-2000:])
            assert seconds < START_S, (name, seconds)
            held_by = (
                f"logins: cannot start: the metrics port {port} is in use by pid {os.getpid()} ("
            )
            assert held_by in err, (name, err)
            assert "no-such.yaml" not in err, (name, err)  # stopped before the configuration


@pytest.fixture
def env(tmp_path: Path, database_url: str, queue_url: str, sqs: EmbeddedSqs) -> dict[str, str]:
    keys = make_keys(tmp_path / "keys")
    return service_env(
        keys,
        database_url=database_url,
        queue_url=queue_url,
        endpoint_url=sqs.endpoint_url,
        LOGINS_LOG_FORMAT="json",
    )


def test_logins_run_runs_the_flow_with_metrics_and_progress_lines(
    env: dict[str, str], sqs: EmbeddedSqs, queue_url: str, database_url: str, tmp_path: Path
) -> None:
    messages = generate(60, seed=7)
    send_bodies(sqs.client(), queue_url, (m.body for m in messages))
    port = free_port()
    command = [sys.executable, "-m", "logins", "run", "-w", "2", "--metrics-port", str(port)]
    command += ["--stop-when-idle", "3", "--progress-interval", "0.5"]
    process = subprocess.Popen(
        command,
        env={k: v for k, v in {**os.environ, **env}.items() if not k.startswith("BYTEWAX_")},
        cwd=tmp_path,  # Bytewax's API cache goes to the temporary directory, not here
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    scraped = ""
    deadline = time.monotonic() + 120
    while process.poll() is None and not scraped and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
                scraped = page.read().decode()
        except OSError:
            time.sleep(0.2)
    _, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    assert process.returncode == 0, err[-3000:]
    assert "logins_messages_total" in scraped  # served on --metrics-port

    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    checks = [(line["check"], line["ok"]) for line in lines if "check" in line]
    assert checks == [("sqs", True), ("postgres", True)]
    progress = [line for line in lines if line["logger"] == "logins.progress"]
    assert len(progress) >= 2, err[-3000:]
    fields = ("rate", "committed", "rows", "rejected", "duplicates", "held", "queue_visible")
    for line in progress:
        assert all(name in line for name in fields), line
        assert line["msg"].startswith("progress: ")
    last = progress[-1]
    expected = {
        "committed": len(messages),
        "rows": sum(m.kind == "valid" for m in messages),
        "rejected": sum(m.kind == "malformed" for m in messages),
        "duplicates": sum(m.kind == "resend" for m in messages),
        "held": 0,
    }
    assert {k: last[k] for k in expected} == expected
    assert any(line["rate"] > 0 for line in progress)
    assert any(line["queue_visible"] is not None for line in progress)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT count(*) FROM user_logins").fetchone()
    assert rows == (expected["rows"],)
    assert not (tmp_path / "dataflow.json").exists()
