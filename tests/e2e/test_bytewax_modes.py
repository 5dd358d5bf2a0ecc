"""Bytewax's own scaling and recovery flags work with the flow: `-i/-a` (a cluster of
processes) and `-r/-s/-b` (recovery, which snapshots the dedupe state)."""

from __future__ import annotations

from pathlib import Path

import pytest

from logins.dev.embedded import EmbeddedSqs, free_port
from logins.dev.generator import generate
from logins.dev.seed import send_bodies
from tests.helpers import ledger_from_dsn, run_module, start_module

FLOW = ["bytewax.run", "flows.logins"]


@pytest.fixture
def env(flow_env: dict[str, str]) -> dict[str, str]:
    return {**flow_env, "LOGINS_STOP_WHEN_IDLE": "2"}


def test_a_cluster_of_two_processes(
    env: dict[str, str], sqs: EmbeddedSqs, queue_url: str, database_url: str
) -> None:
    messages = generate(150, seed=31)
    sent = send_bodies(sqs.client(), queue_url, (m.body for m in messages))
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    procs = [start_module([*FLOW, "-i", str(i), "-a", addresses], env) for i in range(2)]
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
    init = run_module(["bytewax.recovery", str(recovery), "1"], timeout=60)
    assert init.returncode == 0, init.stderr
    messages = generate(120, seed=41)
    sent = send_bodies(sqs.client(), queue_url, (m.body for m in messages[:60]))
    args = ["-w", "2", "-r", str(recovery), "-s", "1", "-b", "0"]
    first = run_module([*FLOW, *args], env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert any(recovery.iterdir())

    sent += send_bodies(sqs.client(), queue_url, (m.body for m in messages[60:]))
    resumed = run_module([*FLOW, *args], env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    outcome = ledger_from_dsn(database_url, sent)
    assert len(outcome["rejected"]) == sum(m.kind == "malformed" for m in messages)
    # message 90 resends one sent in the first run: only the recovered dedupe state knows it
    first_run = {m.body for m in messages[:60]}
    assert messages[90].kind == "resend" and messages[90].body in first_run
    assert len(outcome["duplicate"]) == sum(m.kind == "resend" for m in messages)
