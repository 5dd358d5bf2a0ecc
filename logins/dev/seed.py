"""Sending messages to a queue in SendMessageBatch calls: at most 10 messages and 256 KiB each
(connectors/sqs/limits.py), every body checked against SQS's rules before it is sent."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from connectors.sqs.limits import batches


def send_entries(
    client: Any,
    queue_url: str,
    entries: Iterable[dict[str, Any]],
    on_sent: Callable[[int], None] | None = None,
) -> list[str]:
    """Send every entry (a SendMessageBatch entry without its `Id`: `MessageBody`, and
    optionally `MessageAttributes`, `DelaySeconds`); returns the message ids SQS assigned, in
    order. `on_sent(n)` is told after each call how many more were sent (progress). A message
    SQS would refuse raises ValueError naming its index and the rule, before its batch is sent."""
    sent: list[str] = []
    for chunk in batches(entries):
        batch = [{"Id": str(i), **entry} for i, entry in enumerate(chunk)]
        response = client.send_message_batch(QueueUrl=queue_url, Entries=batch)
        failed = response.get("Failed", [])
        if failed:
            codes = sorted({f.get("Code", "?") for f in failed})
            raise RuntimeError(f"SQS refused {len(failed)} of {len(chunk)} messages: {codes}")
        by_id = {int(s["Id"]): s["MessageId"] for s in response["Successful"]}
        sent += [by_id[i] for i in range(len(chunk))]
        if on_sent is not None:
            on_sent(len(chunk))
    return sent


def send_bodies(client: Any, queue_url: str, bodies: Iterable[str]) -> list[str]:
    """Send every body; returns the message ids SQS assigned, in order."""
    return send_entries(client, queue_url, ({"MessageBody": body} for body in bodies))


def traceparent_attribute(traceparent: str) -> dict[str, Any]:
    """The `MessageAttributes` that carry a W3C trace context, as OpenTelemetry's SQS
    instrumentation sends it (the flow links its batch span to it)."""
    return {"traceparent": {"DataType": "String", "StringValue": traceparent}}


def traced(
    entries: Iterable[dict[str, Any]], tracer: Any, queue_name: str
) -> Iterator[dict[str, Any]]:
    """Each entry with the traceparent of a producer span of its own, as a traced producer
    sends it (OpenTelemetry messaging conventions: one "create" span per message)."""
    from opentelemetry.trace import SpanKind

    from logins.core.telemetry import traceparent

    attributes = {
        "messaging.system": "aws_sqs",
        "messaging.operation.type": "create",
        "messaging.operation.name": "create",
        "messaging.destination.name": queue_name,
    }
    for entry in entries:
        span = tracer.start_span(
            f"create {queue_name}", kind=SpanKind.PRODUCER, attributes=attributes
        )
        header = traceparent(span)
        span.end()
        yield {**entry, "MessageAttributes": traceparent_attribute(header)}
