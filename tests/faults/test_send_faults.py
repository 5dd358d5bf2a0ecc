"""Seeding a queue (`logins generate`, the demo, the fault tests' producer) through an SQS that
fails some entries of a batch call, as real SQS may: those it failed on its side are sent again,
once each; those it refuses as the sender's fault raise at once, naming the code."""

from __future__ import annotations

import pytest

from connectors.sqs.protocol import make_client
from logins.dev.embedded import EmbeddedSqs
from logins.dev.embedded.moto import DUMMY_AWS_KEY, REGION
from logins.dev.seed import send_bodies
from tests.faults.sqs_proxy import SqsFaultProxy


def _client(proxy: SqsFaultProxy) -> object:
    return make_client(
        "json",
        endpoint_url=proxy.endpoint_url,
        region_name=REGION,
        aws_access_key_id=DUMMY_AWS_KEY,
        aws_secret_access_key=DUMMY_AWS_KEY,
    )


def _drain(sqs: EmbeddedSqs, queue_url: str) -> list[str]:
    client, bodies = sqs.client(), []
    while batch := client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        bodies += [m["Body"] for m in batch]
    return bodies


def test_entries_sqs_failed_on_its_side_are_sent_again_once(
    proxy: SqsFaultProxy, sqs: EmbeddedSqs, queue_url: str
) -> None:
    proxy.fail_entries(0.3)
    bodies = [f"body {i}" for i in range(200)]
    ids = send_bodies(_client(proxy), queue_url, bodies)
    assert proxy.total("entry_failed") > 20  # entries did fail, and were sent again
    assert len(ids) == len(set(ids)) == 200
    assert sorted(_drain(sqs, queue_url)) == sorted(bodies)  # each exactly once


def test_entries_refused_as_the_senders_fault_raise_at_once(
    proxy: SqsFaultProxy, sqs: EmbeddedSqs, queue_url: str
) -> None:
    proxy.fail_entries(1.0, sender_fault=True)
    with pytest.raises(
        RuntimeError, match=r"SQS refused 10 of 10 messages: \['InvalidParameterValue'\]"
    ):
        send_bodies(_client(proxy), queue_url, [f"body {i}" for i in range(10)])
    assert proxy.counts["forwarded", "SendMessageBatch"] == 1  # not retried


def test_sending_gives_up_when_sqs_keeps_failing_entries(
    proxy: SqsFaultProxy, sqs: EmbeddedSqs, queue_url: str
) -> None:
    proxy.fail_entries(1.0)
    with pytest.raises(RuntimeError, match=r"on its side 6 times: \['InternalError'\]"):
        send_bodies(_client(proxy), queue_url, ["only"])
    assert proxy.counts["forwarded", "SendMessageBatch"] == 6
