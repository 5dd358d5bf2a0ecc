"""Queue outage and throttling, with real network faults: the flow retries and loses nothing.

The flow runs as an operator runs it (`python -m bytewax.run flows.logins -w 2`, batch mode)
with SQS_ENDPOINT_URL pointing at a fault-injecting proxy in front of moto. A producer writes
straight to moto while the flow drains the queue. Each run must end with exit 0, the exact
ledger (every id SQS assigned in exactly one outcome table), an empty queue, and no raw PII
in the flow's output.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from logins.dev.embedded import EmbeddedSqs
from logins.dev.generator import GeneratedMessage, generate
from tests.faults.producer import PacedProducer
from tests.faults.sqs_proxy import SqsFaultProxy
from tests.helpers import REPO, ledger_from_dsn, service_env, start_module

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

MESSAGES = 400
FLOW_TIMEOUT_S = 120  # well above a good run (~20-40 s); a hang fails instead of blocking
QUEUE_COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


@dataclass
class Run:
    messages: list[GeneratedMessage]
    sent_ids: list[str]
    returncode: int
    output: str  # stdout + stderr of the flow
    seconds: float
    notes: dict[str, float] = field(default_factory=dict)

    def warnings(self) -> dict[str, int]:
        """The flow's WARNING lines by message, without their variable tail."""
        found: dict[str, int] = {}
        for line in self.output.splitlines():
            if " WARNING " in line:
                text = line.split(" WARNING ", 1)[1].split(":", 1)[0]
                found[text] = found.get(text, 0) + 1
        return found


# What a test does while the flow runs: (the producer, the flow's process, the run so far).
During = Callable[[PacedProducer, "subprocess.Popen[bytes]", Run], None]


def assert_no_loss(run: Run, database_url: str, sqs: EmbeddedSqs, queue_url: str) -> dict[str, int]:
    assert run.returncode == 0, run.output[-3000:]
    assert len(run.sent_ids) == MESSAGES
    outcome = ledger_from_dsn(database_url, run.sent_ids)
    figures = {kind: len(ids) for kind, ids in outcome.items()}
    kinds = [m.kind for m in run.messages]
    assert figures == {
        "row": kinds.count("valid"),
        "rejected": kinds.count("malformed"),
        "duplicate": kinds.count("resend"),
    }
    attrs = sqs.client().get_queue_attributes(QueueUrl=queue_url, AttributeNames=QUEUE_COUNTS)
    assert {k: int(v) for k, v in attrs["Attributes"].items()} == dict.fromkeys(QUEUE_COUNTS, 0)
    raw = {
        json.loads(m.body)[name]
        for m in run.messages
        if m.kind == "valid"
        for name in ("ip", "device_id")
    }
    assert [v for v in raw if v in run.output] == [], "raw PII in the flow's output"
    return figures


def report(name: str, run: Run, figures: dict[str, int], proxy: SqsFaultProxy) -> None:
    """One line per run, shown with `pytest -s`: what was injected and what it cost."""
    print(
        f"\n[{name}] {MESSAGES} messages in {run.seconds:.1f}s; ledger {figures}; "
        f"proxy {proxy.snapshot()}; deliveries {sum(proxy.deliveries.values())} "
        f"(redelivered {proxy.redelivered()}, lost in cuts {proxy.lost_messages}); "
        f"flow warnings {run.warnings()}; {run.notes}"
    )


@pytest.fixture
def flow_through_proxy(
    tmp_path: Path,
    keys: dict[str, Path],
    database_url: str,
    queue_url: str,
    sqs: EmbeddedSqs,
    proxy: SqsFaultProxy,
) -> Callable[..., Run]:
    """`run(name, seed, during=None, source_yaml="")`: feeds MESSAGES generated logins to moto
    while the flow drains them through the proxy (`during` runs meanwhile; `source_yaml`: the
    source's settings over the local config), then `assert_no_loss` and `report`."""

    def run(name: str, seed: int, during: During | None = None, source_yaml: str = "") -> Run:
        messages = generate(MESSAGES, seed=seed)
        producer = PacedProducer(sqs.client(), queue_url, [m.body for m in messages], max_depth=60)
        env = service_env(
            keys, database_url=database_url, queue_url=queue_url, endpoint_url=proxy.endpoint_url
        )
        if source_yaml:  # a file layered over the local config, as an operator would write one
            custom = tmp_path / "faults.yaml"
            custom.write_text(f"extends: {REPO / 'config' / 'local.yaml'}\nsource:\n{source_yaml}")
            env["LOGINS_CONFIG"] = str(custom)
        # moto's queue URL names moto's own port: only the endpoint goes through the proxy.
        assert str(proxy.port) not in queue_url
        flow_run = Run(messages, [], -1, "", 0.0)
        started = time.monotonic()
        producer.start()
        while not producer.sent_ids and producer.is_alive():  # never start on an empty queue
            time.sleep(0.02)
        log_path = tmp_path / "flow.log"
        with log_path.open("wb") as log:
            process = start_module(
                ["bytewax.run", "flows.logins", "-w", "2"],
                {**env, "LOGINS_STOP_WHEN_IDLE": "3"},
                stdout=log,
                stderr=subprocess.STDOUT,
                text=False,
            )
            try:
                if during is not None:
                    during(producer, process, flow_run)
                flow_run.sent_ids = producer.finish(timeout=FLOW_TIMEOUT_S)
                flow_run.returncode = process.wait(
                    timeout=max(1.0, started + FLOW_TIMEOUT_S - time.monotonic())
                )
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        flow_run.seconds = time.monotonic() - started
        flow_run.output = log_path.read_text(errors="replace")
        figures = assert_no_loss(flow_run, database_url, sqs, queue_url)
        report(name, flow_run, figures, proxy)
        return flow_run

    return run


@pytest.mark.parametrize(
    ("name", "inject", "seed", "counter"),
    [
        ("throttling 30%", lambda proxy: proxy.throttle(0.30), 31, "throttled"),
        ("503 20%", lambda proxy: proxy.fail(0.20, status=503), 32, "failed"),
    ],
    ids=["throttling", "server-errors"],
)
def test_throttling_and_server_errors_are_retried_without_loss(
    flow_through_proxy: Callable[..., Run],
    proxy: SqsFaultProxy,
    name: str,
    inject: Callable[[SqsFaultProxy], None],
    seed: int,
    counter: str,
) -> None:
    inject(proxy)
    flow_through_proxy(name, seed)
    assert proxy.total(counter) > 0
    assert proxy.total("forwarded") > 0


def test_outage_the_flow_waits_and_loses_nothing(
    flow_through_proxy: Callable[..., Run], proxy: SqsFaultProxy
) -> None:
    def outage(producer: PacedProducer, process: subprocess.Popen[bytes], run: Run) -> None:
        deadline = time.monotonic() + 60
        while len(producer.sent_ids) < MESSAGES // 3:
            assert time.monotonic() < deadline and producer.is_alive(), "producer stalled"
            assert process.poll() is None, "the flow ended before the outage"
            time.sleep(0.02)
        forwarded = proxy.total("forwarded")
        proxy.down()
        down_at = time.monotonic()
        time.sleep(5)
        assert process.poll() is None, "the flow exited during the outage"
        assert proxy.total("forwarded") == forwarded  # nothing got through
        proxy.up()
        up_at = time.monotonic()
        assert process.poll() is None, "the flow exited during the outage"
        while proxy.total("forwarded") == forwarded and time.monotonic() < up_at + 60:
            time.sleep(0.05)
        run.notes = {
            "down_s": round(up_at - down_at, 1),
            "first_call_after_up_s": round(time.monotonic() - up_at, 2),
            "sent_before_outage": len(producer.sent_ids),
        }

    # A ReceiveMessage that moto answered while the cut dropped its response leaves those
    # messages in flight until their visibility timeout: 60 s by default, which would make
    # this run ~70 s. 20 s keeps it short and still shows that they come back and count once.
    flow_through_proxy("outage 5s", 33, during=outage, source_yaml="  visibility_timeout: 20\n")
    assert proxy.total("closed") > 0  # the outage really cut the flow's connections
