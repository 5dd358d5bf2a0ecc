"""Bytewax's own scaling and recovery flags work with the flow: `-i/-a` (a cluster of
processes) and `-r/-s/-b` (recovery, which snapshots the dedupe state)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from logins.dev.embedded import EmbeddedSqs, free_port
from logins.dev.generator import generate
from logins.dev.seed import send_bodies
from tests.helpers import ledger_from_dsn, make_keys, service_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path, database_url: str, queue_url: str, sqs: EmbeddedSqs) -> dict[str, str]:
    keys = make_keys(tmp_path / "keys")
    return {
        **os.environ,
        **service_env(
            keys,
            database_url=database_url,
            queue_url=queue_url,
            endpoint_url=sqs.endpoint_url,
            LOGINS_STOP_WHEN_IDLE="2",
        ),
    }


def flow(*args: str) -> list[str]:
    return [sys.executable, "-m", "bytewax.run", "flows.logins", *args]


def test_a_cluster_of_two_processes(
    env: dict[str, str], sqs: EmbeddedSqs, queue_url: str, database_url: str
) -> None:
    messages = generate(150, seed=31)
    sent = send_bodies(sqs.client(), queue_url, (m.body for m in messages))
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    procs = [
        subprocess.Popen(
            flow("-i", str(i), "-a", addresses),
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    outcome = ledger_from_dsn(database_url, sent)
    assert len(outcome["rejected"]) == sum(m.kind == "malformed" for m in messages)


def test_recovery_flags_snapshot_state_and_resume(
    env: dict[str, str], sqs: EmbeddedSqs, queue_url: str, database_url: str, tmp_path: Path
) -> None:
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init = subprocess.run(
        [sys.executable, "-m", "bytewax.recovery", str(recovery), "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    messages = generate(120, seed=41)
    sent = send_bodies(sqs.client(), queue_url, (m.body for m in messages[:60]))
    args = ("-w", "2", "-r", str(recovery), "-s", "1", "-b", "0")
    first = subprocess.run(
        flow(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert any(recovery.iterdir())

    sent += send_bodies(sqs.client(), queue_url, (m.body for m in messages[60:]))
    resumed = subprocess.run(
        flow(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    outcome = ledger_from_dsn(database_url, sent)
    assert len(outcome["rejected"]) == sum(m.kind == "malformed" for m in messages)
    # message 90 resends one sent in the first run: only the recovered dedupe state knows it
    first_run = {m.body for m in messages[:60]}
    assert messages[90].kind == "resend" and messages[90].body in first_run
    assert len(outcome["duplicate"]) == sum(m.kind == "resend" for m in messages)
