"""The source's receive side and its one heartbeat, against a real SQS-protocol server (moto),
through the fault proxy where a distant server's round trip matters."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from connectors.sqs.acker import SqsAcker
from connectors.sqs.calls import sqs_client
from connectors.sqs.heartbeat import Heartbeat, InFlight
from connectors.sqs.source import SqsSource, _SqsPartition, to_message
from logins.core.config import SqsSourceConfig
from logins.core.records import SqsMessage
from logins.dev.embedded import EmbeddedSqs
from logins.dev.seed import send_bodies
from tests.faults.sqs_proxy import SqsFaultProxy

pytestmark = pytest.mark.integration


def config_for(endpoint: str, queue_url: str, **source: object) -> SqsSourceConfig:
    return SqsSourceConfig.model_validate(
        {"type": "sqs", "queue_url": queue_url, "endpoint_url": endpoint, **source}
    )


def receivers(worker: int = 0) -> int:
    return sum(t.name.startswith(f"sqs-receiver-{worker}-") for t in threading.enumerate())


def heartbeats() -> int:
    return sum(t.name == "sqs-visibility" for t in threading.enumerate())


def test_receivers_grow_while_the_buffer_is_dry_and_stay_bounded(
    sqs: EmbeddedSqs, queue_url: str
) -> None:
    """Behind 50 ms a call, one receiver cannot keep the flow fed: the partition adds receive
    calls in flight up to `max_receivers`, never more, and every message arrives once."""
    send_bodies(sqs.client(), queue_url, [f"body {i}" for i in range(300)])
    proxy = SqsFaultProxy(sqs.endpoint_url)
    proxy.delay(0.05)
    config = config_for(proxy.endpoint_url, queue_url, receivers=1, max_receivers=3,
                        wait_time_seconds=0)  # fmt: skip
    inflight = InFlight(config)
    partition = _SqsPartition(config, 7, inflight, SqsSource(config).counts)
    seen: list[SqsMessage] = []
    most = 0
    try:
        deadline = time.monotonic() + 60
        while len(seen) < 300 and time.monotonic() < deadline:
            seen += partition.next_batch()
            most = max(most, receivers(7))
            time.sleep(0.01)
    finally:
        partition.close()
        proxy.close()
    assert sorted(m.body for m in seen) == sorted(f"body {i}" for i in range(300))
    assert 1 < most <= 3
    assert len(inflight) == 300  # held until the sink deletes them


def test_one_heartbeat_per_process_started_by_the_first_user_and_stopped_by_the_last(
    sqs: EmbeddedSqs, queue_url: str
) -> None:
    """Partitions and sinks' ackers share one heartbeat thread with one acker of its own; it
    extends what waited half its visibility timeout and stops after the last user leaves."""
    send_bodies(sqs.client(), queue_url, ["a", "b"])
    config = config_for(sqs.endpoint_url, queue_url, visibility_timeout=2)
    raw = sqs.client().receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=2
    )["Messages"]
    inflight = InFlight(config)
    made: list[SqsAcker] = []

    def make_acker() -> SqsAcker:
        made.append(SqsAcker(config, inflight))
        return made[-1]

    heartbeat = Heartbeat(config, inflight, make_acker)
    inflight.add([to_message(m, time.time()) for m in raw])
    before = heartbeats()
    heartbeat.acquire()  # a source partition
    heartbeat.acquire()  # a sink's acker
    assert heartbeats() == before + 1
    time.sleep(4)  # twice the timeout: without the heartbeat both would be visible again
    visible = sqs.client().get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert visible == "0"
    assert len(made) == 1  # one acker for the heartbeat, however many users
    heartbeat.release()
    assert heartbeat.running
    heartbeat.release()
    assert not heartbeat.running
    deadline = time.monotonic() + 5
    while heartbeats() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert heartbeats() == before


def test_a_receive_computes_no_queue_attributes_per_message(
    sqs: EmbeddedSqs, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto checks each message it hands out against the retention period by computing every
    queue attribute (three passes over all messages, each), so a 10-message receive from 1000
    messages took ~1 s of CPU; under the queue's lock (embedded/moto.py) sixteen receivers then
    queued past the client's read timeout (wait_time_seconds + 10), gave up on a receive moto
    still served, and its messages stayed invisible for the visibility timeout (the demo's
    minute-long stall at "20 in flight"). The embedded server reads the period directly: a
    receive over the network computes the queue's attributes not once per message (counted
    in moto's backend, which the embedded server runs in this process)."""
    from moto.sqs.models import SQSBackend

    computed = []
    original = SQSBackend.get_queue_attributes

    def counted(self: SQSBackend, *args: Any, **kwargs: Any) -> Any:
        computed.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SQSBackend, "get_queue_attributes", counted)
    send_bodies(sqs.client(), queue_url, [f"body {i}" for i in range(200)])
    client = sqs_client(config_for(sqs.endpoint_url, queue_url, wait_time_seconds=0))
    for _ in range(3):
        response = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        assert len(response["Messages"]) == 10
    assert computed == []  # was one per message handed out: 30


def test_a_receive_that_times_out_is_retried_and_said(
    sqs: EmbeddedSqs, queue_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A receive the server answers only after the read timeout (wait_time_seconds + 10): the
    client closes the connection and retries (botocore's rule, silent), and says so, because
    the messages the server still handed to that receive stay invisible until their
    visibility timeout: without the line, "N in flight, 0 held" has no visible cause."""
    send_bodies(sqs.client(), queue_url, [f"body {i}" for i in range(20)])
    proxy = SqsFaultProxy(sqs.endpoint_url)
    try:
        proxy.delay(10.5)  # read by the first call only: the retry is answered at once
        client = sqs_client(config_for(proxy.endpoint_url, queue_url, wait_time_seconds=0))
        threading.Timer(1.0, proxy.delay, args=(0.0,)).start()
        with caplog.at_level("WARNING", logger="connectors.sqs.wire"):
            response = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        assert len(response["Messages"]) == 10  # the retry's
        assert "SQS ReceiveMessage: no answer within 10 s" in caplog.text
        assert proxy.counts["forwarded", "ReceiveMessage"] == 2
    finally:
        proxy.close()
