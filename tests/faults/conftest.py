"""Fixtures for fault tests: keys, a PostgreSQL of the test's own (so it can be stopped),
and the flow as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from logins.dev.embedded import EmbeddedPostgres, EmbeddedSqs
from tests.faults.producer import PacedProducer
from tests.faults.sqs_proxy import SqsFaultProxy
from tests.helpers import REPO, make_keys, private_data_dir, service_env, wait_for


@pytest.fixture(scope="session")
def fault_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_keys(tmp_path_factory.mktemp("fault-keys") / "k")


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
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "flows.logins", *args],
            env={**os.environ, **env},
            cwd=REPO,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
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
    fault_keys: dict[str, Path], sqs: EmbeddedSqs, queue_url: str, tmp_path: Path
) -> Callable[..., dict[str, str]]:
    """The contract's variables for `database_url`, with short visibility for fast recovery."""

    def env(database_url: str, yaml_text: str = "", **extra: str) -> dict[str, str]:
        values = service_env(
            fault_keys,
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
        wait_for(
            lambda flow=flow: "start-up check" in flow.output() or not flow.running(),
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


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def in_flight(sqs: EmbeddedSqs, queue_url: str) -> tuple[int, int]:
    attrs = sqs.client().get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


@pytest.fixture
def flow_env_faults(
    fault_keys: dict[str, Path], database_url: str, queue_url: str, sqs: EmbeddedSqs
) -> dict[str, str]:
    """The contract's variables for an in-process run in batch mode."""
    return service_env(
        fault_keys,
        database_url=database_url,
        queue_url=queue_url,
        endpoint_url=sqs.endpoint_url,
        LOGINS_STOP_WHEN_IDLE="2",
    )


@pytest.fixture
def proxy(sqs: EmbeddedSqs) -> Iterator[SqsFaultProxy]:
    """A fault-injecting proxy in front of moto; point SQS_ENDPOINT_URL at it."""
    server = SqsFaultProxy(sqs.endpoint_url, seed=7)
    yield server
    server.close()
