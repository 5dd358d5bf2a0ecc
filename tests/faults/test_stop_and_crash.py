"""Graceful stop and kill -9: nothing lost, nothing doubled, the queue ends empty."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from logins.dev.embedded import EmbeddedSqs
from logins.dev.generator import generate
from tests.faults.conftest import FlowProcess, drain, in_flight, ledger_size, wait_until
from tests.faults.producer import PacedProducer
from tests.faults.sqs_proxy import SqsFaultProxy
from tests.helpers import ledger_from_dsn


def test_sigterm_commits_what_it_holds_and_exits_zero(
    fault_env: Callable[..., dict[str, str]],
    start_flow: Callable[..., FlowProcess],
    database_url: str,
    sqs: EmbeddedSqs,
    queue_url: str,
) -> None:
    messages = generate(1200, seed=51)
    producer = PacedProducer(sqs.client(), queue_url, [m.body for m in messages])
    producer.start()
    env = fault_env(database_url, LOGINS_SHUTDOWN_TIMEOUT="20")
    flow = start_flow(env, "-w", "2")
    wait_until(lambda: ledger_size(database_url) >= 200, 120, "200 committed messages")

    flow.proc.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert flow.wait(30) == 0, flow.output()[-3000:]
    assert time.monotonic() - stopped_at < 20
    assert "stop requested: source finished" in flow.output()
    # everything it had received was committed and deleted, or released to the queue
    assert in_flight(sqs, queue_url)[1] == 0

    sent = drain(start_flow, env, producer)
    ledger_from_dsn(database_url, sent)
    assert in_flight(sqs, queue_url) == (0, 0)


@pytest.mark.parametrize("recovery", [False, True], ids=["no-recovery", "recovery"])
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_at_random_moments_then_restart(
    fault_env: Callable[..., dict[str, str]],
    start_flow: Callable[..., FlowProcess],
    database_url: str,
    sqs: EmbeddedSqs,
    queue_url: str,
    tmp_path: Path,
    seed: int,
    recovery: bool,
) -> None:
    rng = random.Random(seed)
    messages = generate(1500, seed=60 + seed)
    producer = PacedProducer(sqs.client(), queue_url, [m.body for m in messages])
    producer.start()
    env = fault_env(database_url)
    args: tuple[str, ...] = ()
    if recovery:
        directory = tmp_path / "recovery"
        directory.mkdir()
        subprocess.run(
            [sys.executable, "-m", "bytewax.recovery", str(directory), "2"], check=True, timeout=60
        )
        args = ("-r", str(directory), "-s", "1", "-b", "0")
    kills = 0
    while producer.is_alive() and kills < 4:
        flow = start_flow(env, "-w", "2", *args)
        time.sleep(rng.uniform(1.0, 6.0))
        assert flow.running(), flow.output()[-3000:]
        flow.kill()
        kills += 1
    sent = drain(start_flow, env, producer, *args)
    outcome = ledger_from_dsn(database_url, sent)
    assert len(outcome["rejected"]) == sum(m.kind == "malformed" for m in messages)
    assert in_flight(sqs, queue_url) == (0, 0)
    assert kills >= 2


def test_kill_9_between_commit_and_delete(
    fault_env: Callable[..., dict[str, str]],
    start_flow: Callable[..., FlowProcess],
    database_url: str,
    sqs: EmbeddedSqs,
    queue_url: str,
    proxy: SqsFaultProxy,
) -> None:
    """SQS goes away: the batches being written commit, then their deletes hang in botocore's
    retries; kill -9 then. Committed-but-undeleted messages come back: no-op writes."""
    messages = generate(800, seed=81)
    producer = PacedProducer(sqs.client(), queue_url, [m.body for m in messages])
    producer.start()
    env = {**fault_env(database_url), "SQS_ENDPOINT_URL": proxy.endpoint_url}
    flow = start_flow(env, "-w", "2")
    wait_until(lambda: ledger_size(database_url) >= 150, 120, "150 committed messages")

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
    sent_so_far, in_queue = len(producer.sent_ids), sum(in_flight(sqs, queue_url))
    committed = ledger_size(database_url)
    # more messages still in the queue than uncommitted ones: some were committed, not deleted
    assert in_queue > sent_so_far - committed
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER slow_commit ON logins_ledger")
    proxy.up()

    sent = drain(start_flow, env, producer)
    ledger_from_dsn(database_url, sent)
    assert in_flight(sqs, queue_url) == (0, 0)
