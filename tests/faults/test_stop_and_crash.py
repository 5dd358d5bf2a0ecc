"""Graceful stop and kill -9: nothing lost, nothing doubled, the queue ends empty."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import psycopg
import pytest

from tests.faults.conftest import Rig, ledger_size
from tests.faults.sqs_proxy import SqsFaultProxy
from tests.helpers import run_module, wait_for


def test_sigterm_commits_what_it_holds_and_exits_zero(rig: Rig, database_url: str) -> None:
    _, producer = rig.produce(1200, seed=51)
    env = rig.env(database_url, LOGINS_SHUTDOWN_TIMEOUT="20")
    flow = rig.start_flow(env, "-w", "2")
    wait_for(lambda: ledger_size(database_url) >= 200, 120, "200 committed messages")

    flow.proc.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert flow.wait(30) == 0, flow.output()[-3000:]
    assert time.monotonic() - stopped_at < 20
    assert "stop requested: source finished" in flow.output()
    # everything it had received was committed and deleted, or released to the queue
    assert rig.in_flight()[1] == 0

    rig.drain_and_check(database_url, env, producer)


@pytest.mark.parametrize("recovery", [False, True], ids=["no-recovery", "recovery"])
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_at_random_moments_then_restart(
    rig: Rig, database_url: str, tmp_path: Path, seed: int, recovery: bool
) -> None:
    rng = random.Random(seed)
    messages, producer = rig.produce(1500, seed=60 + seed)
    env = rig.env(database_url)
    args: tuple[str, ...] = ()
    if recovery:
        directory = tmp_path / "recovery"
        directory.mkdir()
        made = run_module(["bytewax.recovery", str(directory), "2"], timeout=60)
        assert made.returncode == 0, made.stderr
        args = ("-r", str(directory), "-s", "1", "-b", "0")
    kills = 0
    while producer.is_alive() and kills < 4:
        flow = rig.start_flow(env, "-w", "2", *args)
        time.sleep(rng.uniform(1.0, 6.0))
        assert flow.running(), flow.output()[-3000:]
        flow.kill()
        kills += 1
    outcome = rig.drain_and_check(database_url, env, producer, *args)
    assert len(outcome["rejected"]) == sum(m.kind == "malformed" for m in messages)
    assert kills >= 2


def test_kill_9_between_commit_and_delete(
    rig: Rig, database_url: str, proxy: SqsFaultProxy
) -> None:
    """SQS goes away: the batches being written commit, then their deletes hang in botocore's
    retries; kill -9 then. Committed-but-undeleted messages come back: no-op writes."""
    _, producer = rig.produce(800, seed=81)
    env = {**rig.env(database_url), "SQS_ENDPOINT_URL": proxy.endpoint_url}
    flow = rig.start_flow(env, "-w", "2")
    wait_for(lambda: ledger_size(database_url) >= 150, 120, "150 committed messages")

    # Each commit now takes 0.5 s more, so batches are being written when SQS goes away
    # (a fast sink could otherwise have committed and deleted everything it held).
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE TRIGGER slow_commit AFTER INSERT ON logins_ledger"
            " FOR EACH STATEMENT EXECUTE FUNCTION slow_commit()"
        )
    time.sleep(0.3)
    proxy.down()
    time.sleep(2)  # the batches in flight commit; their deletes cannot reach SQS
    flow.kill()
    sent_so_far, in_queue = len(producer.sent_ids), sum(rig.in_flight())
    committed = ledger_size(database_url)
    # more messages still in the queue than uncommitted ones: some were committed, not deleted
    assert in_queue > sent_so_far - committed
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER slow_commit ON logins_ledger")
    proxy.up()

    rig.drain_and_check(database_url, env, producer)
