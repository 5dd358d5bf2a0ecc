"""Fixtures for fault tests: a PostgreSQL of the test's own (so it can be stopped), the flow as
a subprocess, and the rig that produces to the queue, drains it and checks the ledger."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from logins.dev.embedded import EmbeddedPostgres, EmbeddedSqs
from logins.dev.generator import GeneratedMessage, generate
from tests.faults.producer import PacedProducer
from tests.faults.sqs_proxy import SqsFaultProxy
from tests.helpers import (
    REPO,
    ledger_from_dsn,
    private_data_dir,
    service_env,
    start_module,
    wait_for,
)


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A server only this test uses, so the test may stop and restart it."""
    with private_data_dir() as data_dir, EmbeddedPostgres(data_dir) as server:
        yield server


class FlowProcess:
    """`python -m bytewax.run flows.logins ...` with its output in files (no pipe to fill)."""

    def __init__(self, env: dict[str, str], args: tuple[str, ...], log_dir: Path) -> None:
        self.log = log_dir / f"flow-{time.monotonic_ns()}.log"
        self._handle = self.log.open("w")
        self.proc: subprocess.Popen[bytes] = start_module(
            ["bytewax.run", "flows.logins", *args],
            env,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            text=False,
        )

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._handle.flush()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def output(self) -> str:
        self._handle.flush()
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.running():
            self.kill()
        self._handle.close()


@pytest.fixture
def start_flow(tmp_path: Path) -> Iterator[Callable[..., FlowProcess]]:
    started: list[FlowProcess] = []

    def start(env: dict[str, str], *args: str) -> FlowProcess:
        flow = FlowProcess(env, args, tmp_path)
        started.append(flow)
        return flow

    yield start
    for flow in started:
        flow.stop()


@pytest.fixture
def fault_env(
    keys: dict[str, Path], sqs: EmbeddedSqs, queue_url: str, tmp_path: Path
) -> Callable[..., dict[str, str]]:
    """The contract's variables for `database_url`, with short visibility for fast recovery."""

    def env(database_url: str, yaml_text: str = "", **extra: str) -> dict[str, str]:
        values = service_env(
            keys,
            database_url=database_url,
            queue_url=queue_url,
            endpoint_url=sqs.endpoint_url,
            **extra,
        )
        path = tmp_path / "fault.yaml"
        path.write_text(
            f"extends: {REPO / 'config/local.yaml'}\nsource:\n  visibility_timeout: 4\n" + yaml_text
        )
        return {**values, "LOGINS_CONFIG": str(path)}

    return env


def drain(
    start_flow: Callable[..., FlowProcess],
    env: dict[str, str],
    producer: PacedProducer,
    *args: str,
    running: Sequence[FlowProcess] = (),
) -> list[str]:
    """Runs the flow as a service (`running`, or one started here) until the producer has sent
    everything, stops it with SIGTERM (it must exit 0), then a last run in batch mode takes
    what is left and ends once the queue is empty; returns the ids sent.

    Batch mode starts only after the last send: its idle window ("the queue was empty for 3 s")
    must not end a run while the producer, stalled on a loaded machine, still has messages."""
    flows = list(running) or [start_flow(env, "-w", "2", *args)]
    sent = producer.finish()
    for flow in flows:
        # A service is stopped once it runs: a SIGTERM while Python is still importing (the
        # producer may have finished before this flow even started) meets no handler yet.
        def started(flow: FlowProcess = flow) -> bool:
            return "start-up check" in flow.output() or not flow.running()

        wait_for(
            started,
            60,
            "the flow's start-up checks (its signal handlers installed)",
        )
        flow.proc.send_signal(signal.SIGTERM)
    for flow in flows:
        assert flow.wait(60) == 0, flow.output()[-3000:]
    final = start_flow({**env, "LOGINS_STOP_WHEN_IDLE": "3"}, "-w", "2", *args)
    assert final.wait(240) == 0, final.output()[-3000:]
    return sent


def ledger_size(database_url: str) -> int:
    try:
        with psycopg.connect(database_url, connect_timeout=3) as conn:
            row = conn.execute("SELECT count(*) FROM logins_ledger").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


@pytest.fixture
def flow_env_faults(flow_env: dict[str, str]) -> dict[str, str]:
    """The contract's variables for an in-process run in batch mode (tests/conftest.py's
    flow_env), idle for 2 s before it stops."""
    return {**flow_env, "LOGINS_STOP_WHEN_IDLE": "2"}


@dataclass
class Rig:
    """What a fault test with the flow as a subprocess drives: this test's queue on moto, the
    flows it started (stopped at its end) and the contract's variables (`fault_env`)."""

    sqs: EmbeddedSqs
    queue_url: str
    start_flow: Callable[..., FlowProcess]
    env: Callable[..., dict[str, str]]

    def produce(self, n: int, seed: int) -> tuple[list[GeneratedMessage], PacedProducer]:
        """`n` generated logins, and the producer started here that sends them at a pace."""
        messages = generate(n, seed=seed)
        producer = PacedProducer(self.sqs.client(), self.queue_url, [m.body for m in messages])
        producer.start()
        return messages, producer

    def drain_and_check(
        self,
        database_url: str,
        env: dict[str, str],
        producer: PacedProducer,
        *args: str,
        running: Sequence[FlowProcess] = (),
    ) -> dict[str, set[str]]:
        """`drain`, then: every id sent in exactly one outcome, and none left in the queue."""
        sent = drain(self.start_flow, env, producer, *args, running=running)
        outcome = ledger_from_dsn(database_url, sent)
        assert self.in_flight() == (0, 0)
        return outcome

    def in_flight(self) -> tuple[int, int]:
        """Messages in the queue: (visible, received and not yet deleted)."""
        attrs = self.sqs.client().get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )


@pytest.fixture
def rig(
    sqs: EmbeddedSqs,
    queue_url: str,
    start_flow: Callable[..., FlowProcess],
    fault_env: Callable[..., dict[str, str]],
) -> Rig:
    return Rig(sqs, queue_url, start_flow, fault_env)


@pytest.fixture
def proxy(sqs: EmbeddedSqs) -> Iterator[SqsFaultProxy]:
    """A fault-injecting proxy in front of moto; point SQS_ENDPOINT_URL at it."""
    server = SqsFaultProxy(sqs.endpoint_url, seed=7)
    yield server
    server.close()
