"""The acker's batch calls against a real SQS-protocol server (moto): the chunks of ten go out
`source.ack_concurrency` at a time, and what SQS refuses maps back to the right messages."""

from __future__ import annotations

import pytest

from connectors.sqs.source import InFlight, SqsAcker, sqs_client, to_message
from logins.core.config import SqsSourceConfig
from logins.core.records import SqsMessage
from logins.dev.embedded import EmbeddedSqs
from logins.dev.seed import send_bodies

pytestmark = pytest.mark.integration


def _received(sqs: EmbeddedSqs, queue_url: str, count: int) -> list[SqsMessage]:
    send_bodies(sqs.client(), queue_url, [f"body {i}" for i in range(count)])
    raw: list[dict[str, object]] = []
    while len(raw) < count:
        raw += (
            sqs.client()
            .receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60)
            .get("Messages", [])
        )
    return [to_message(m, 0.0) for m in raw]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_parallel_chunks_return_exactly_the_refused_messages(
    sqs: EmbeddedSqs, queue_url: str, concurrency: int
) -> None:
    config = SqsSourceConfig.model_validate(
        {"type": "sqs", "queue_url": queue_url, "endpoint_url": sqs.endpoint_url,
         "ack_concurrency": concurrency}
    )  # fmt: skip
    messages = _received(sqs, queue_url, 45)
    refused = [messages[i] for i in (3, 17, 18, 44)]
    for message in refused:
        message.receipt_handle = "not-a-receipt-handle-" + message.message_id
    inflight = InFlight(config)
    acker = SqsAcker(config, inflight, sqs_client(config))
    assert acker.extend(messages) == refused  # in their order, from chunks that ran apart
    kept = [m for m in messages if m not in refused]
    assert acker.delete(kept) == 0
    attributes = sqs.client().get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": str(len(refused)),
    }
