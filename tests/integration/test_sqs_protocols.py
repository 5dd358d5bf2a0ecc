"""Both SQS protocols, against a loopback server that behaves like the producer team's image.

LocalStack before 3.0 refuses SQS's JSON protocol (HTTP 500 "Operation detection failed. Missing
Action in request for query-protocol service") and serves the query protocol. The proxy of
tests/faults/sqs_proxy.py does exactly that with `refuse_json()`, answering with LocalStack
2.3.2's own body, and forwards query calls to moto, which speaks both. `make localstack2-test`
runs the flow once against a real LocalStack 2.3.2 (tests/localstack2/).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from connectors.sqs import protocol as sqs_protocol
from connectors.sqs.protocol import QueryProtocolRequired, make_client
from connectors.sqs.source import (
    InFlight,
    QueueCounts,
    SqsAcker,
    _SqsPartition,
    sqs_client,
    to_message,
)
from logins.cli import main
from logins.core.config import SqsSourceConfig
from logins.dev.embedded import EmbeddedSqs
from logins.dev.generator import generate
from logins.dev.seed import send_bodies
from tests.faults.sqs_proxy import SqsFaultProxy
from tests.helpers import ledger_from_dsn, make_keys, queue_total, run_module, service_env

pytestmark = pytest.mark.integration

SWITCH_LOG = "refused the JSON protocol"


@pytest.fixture
def query_only(sqs: EmbeddedSqs) -> Iterator[SqsFaultProxy]:
    """An endpoint that speaks only the query protocol, as LocalStack 2.x does."""
    proxy = SqsFaultProxy(sqs.endpoint_url)
    proxy.refuse_json()
    yield proxy
    proxy.close()
    sqs_protocol.forget_detected()


def client_for(proxy: SqsFaultProxy, protocol: sqs_protocol.Protocol) -> sqs_protocol.SqsClient:
    return make_client(
        protocol,
        endpoint_url=proxy.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def source_config(proxy: SqsFaultProxy, queue_url: str, **extra: object) -> SqsSourceConfig:
    return SqsSourceConfig.model_validate(
        {"type": "sqs", "queue_url": queue_url, "endpoint_url": proxy.endpoint_url, **extra}
    )


def test_the_vendored_model_is_used_by_the_query_client_only() -> None:
    query = make_client("query", region_name="us-east-1")
    json_ = make_client("json", region_name="us-east-1")
    assert query.meta.service_model.protocol == "query"
    assert json_.meta.service_model.protocol == "json"
    # botocore's own sessions, made after the query client, still load the JSON model
    assert boto3.session.Session().client("sqs", "us-east-1").meta.service_model.protocol == "json"


def test_auto_switches_once_on_the_first_call(
    query_only: SqsFaultProxy, queue_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(query_only, "auto")
    assert client.protocol == "json"
    with caplog.at_level(logging.WARNING, logger="connectors.sqs.protocol"):
        attrs = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
        assert client.protocol == "query"
        client.send_message(QueueUrl=queue_url, MessageBody="one")
        again = client_for(query_only, "auto")  # a new client for the same endpoint
        assert again.protocol == "query"
        again.send_message(QueueUrl=queue_url, MessageBody="two")
    assert "QueueArn" in attrs["Attributes"]
    # one refused JSON call (botocore did not retry it), everything else in the query protocol
    assert query_only.snapshot() == {
        "refused_json:GetQueueAttributes": 1,
        "forwarded:GetQueueAttributes": 1,
        "forwarded:SendMessage": 2,
    }
    assert [r.getMessage() for r in caplog.records].count(
        f"SQS at {query_only.endpoint_url} {SWITCH_LOG} (HTTP 500 'Operation detection failed',"
        " as LocalStack before 3.0 does): using the query protocol from now on"
    ) == 1


def test_forced_json_says_what_to_change(query_only: SqsFaultProxy, queue_url: str) -> None:
    client = client_for(query_only, "json")
    with pytest.raises(QueryProtocolRequired) as caught:
        client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
    assert "speaks only the query protocol" in str(caught.value)
    assert "Missing Action in request for query-protocol service" in str(caught.value)
    assert "Set source.protocol to auto or query" in str(caught.value)
    assert query_only.snapshot() == {"refused_json:GetQueueAttributes": 1}  # not retried


def test_forced_query_never_tries_json(query_only: SqsFaultProxy, queue_url: str) -> None:
    client = client_for(query_only, "query")
    client.send_message(QueueUrl=queue_url, MessageBody="x")
    assert query_only.snapshot() == {"forwarded:SendMessage": 1}


def test_every_call_of_the_source_and_acker_in_the_query_protocol(
    query_only: SqsFaultProxy, sqs: EmbeddedSqs, queue_url: str
) -> None:
    """Receive (with its attribute names), delete, visibility changes, the idle check."""
    send_bodies(sqs.client(), queue_url, [f"body {i}" for i in range(15)])
    config = source_config(query_only, queue_url, visibility_timeout=30)
    client = sqs_client(config)
    received = client.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
    )["Messages"]
    assert all(
        {"SentTimestamp", "ApproximateReceiveCount"} <= set(m["Attributes"]) for m in received
    )
    inflight = InFlight(config)
    acker = SqsAcker(config, inflight, client)
    messages = [to_message(m, 0.0) for m in received]
    assert acker.extend(messages) == []
    assert acker.release(messages[:3], after_seconds=0) == 0
    assert acker.delete(messages[3:]) == 0
    idle = config.model_copy(update={"stop_when_idle": 0.01})
    partition = _SqsPartition(idle, 0, inflight, QueueCounts(idle))
    try:
        # the counts thread the partition started may be mid-read (then read() gives None at
        # once rather than wait): ask until this call is the one that reads
        deadline = time.monotonic() + 10
        while (reading := partition._counts.read(max_age=0)) is None:
            assert time.monotonic() < deadline, "the queue counts were never read"
            time.sleep(0.05)
        assert any(reading.values())  # 3 released + 5 never received
        assert partition._queue_is_empty(max_age=60) is False
    finally:
        partition.close()
    counts = query_only.snapshot()
    for operation in (
        "ReceiveMessage",
        "ChangeMessageVisibilityBatch",
        "DeleteMessageBatch",
        "GetQueueAttributes",
    ):
        assert counts.get(f"forwarded:{operation}", 0) > 0, (operation, counts)
    assert counts["refused_json:ReceiveMessage"] == 1
    assert sum(n for k, n in counts.items() if k.startswith("refused_json:")) == 1


def test_generate_and_check_connect_in_the_query_protocol(
    query_only: SqsFaultProxy,
    queue_url: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()
    sent = runner.invoke(
        main,
        ["generate", "-n", "25", "--queue-url", queue_url,
         "--endpoint-url", query_only.endpoint_url],
    )  # fmt: skip
    assert sent.exit_code == 0, sent.output
    assert f"sent 25 messages to {queue_url}" in sent.output
    keys = make_keys(tmp_path / "keys")
    env = service_env(
        keys, database_url=database_url, queue_url=queue_url, endpoint_url=query_only.endpoint_url
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    checked = runner.invoke(main, ["check", "--connect"])
    assert checked.exit_code == 0, checked.output
    sqs_line = next(line for line in checked.output.splitlines() if line.startswith("ok   sqs"))
    assert "25 visible" in sqs_line and sqs_line.endswith("(query protocol)")
    assert query_only.total("refused_json") == 1  # generate found out; check knew already


def test_the_flow_against_a_query_only_server(
    query_only: SqsFaultProxy,
    sqs: EmbeddedSqs,
    queue_url: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    """The real flow, as an operator runs it, through the producer's kind of endpoint."""
    messages = generate(60, seed=41)
    sent = send_bodies(sqs.client(), queue_url, (m.body for m in messages))
    env = service_env(
        make_keys(tmp_path / "keys"),
        database_url=database_url,
        queue_url=queue_url,
        endpoint_url=query_only.endpoint_url,
        LOGINS_STOP_WHEN_IDLE="2",
    )
    flow = run_module(["bytewax.run", "flows.logins", "-w", "2"], env)
    assert flow.returncode == 0, flow.stderr[-3000:]
    assert flow.stderr.count(SWITCH_LOG) == 1, flow.stderr[-3000:]
    assert "start-up check sqs: ok" in flow.stderr and "(query protocol)" in flow.stderr
    ledger_from_dsn(database_url, sent)
    assert queue_total(sqs.client(), queue_url) == 0  # none visible, none in flight
    counts = query_only.snapshot()
    assert counts["refused_json:GetQueueAttributes"] == 1  # the start-up check found out
    assert sum(n for k, n in counts.items() if k.startswith("refused_json:")) == 1
    assert counts["forwarded:DeleteMessageBatch"] >= len(sent) // 10
