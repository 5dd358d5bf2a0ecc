"""Sending messages to a queue in SendMessageBatch calls: at most 10 messages and 256 KiB each
(connectors/sqs/limits.py), every body checked against SQS's rules before it is sent, and the
entries SQS fails on its side sent again."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from connectors.sqs.limits import batches

SEND_ATTEMPTS = 6  # of the entries SQS failed on its side: at most ~6 s of backoff in all


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
        by_id = _send_batch(client, queue_url, [{"Id": str(i), **e} for i, e in enumerate(chunk)])
        sent += [by_id[str(i)] for i in range(len(chunk))]
        if on_sent is not None:
            on_sent(len(chunk))
    return sent


class _Unsent(RuntimeError):
    """Entries SQS failed on its side (`SenderFault` false: throttled, internal error)."""


def _send_batch(client: Any, queue_url: str, batch: list[dict[str, Any]]) -> dict[str, str]:
    """One SendMessageBatch, and again for the entries SQS failed on its side (a batch call
    can succeed while some of its entries fail), with capped exponential backoff and jitter
    (tenacity, as the sink's retries); returns the message id of each entry's `Id`. An entry
    SQS refuses as the sender's fault is not retried: it raises at once, naming the codes."""
    sent: dict[str, str] = {}
    pending = batch
    for attempt in Retrying(
        stop=stop_after_attempt(SEND_ATTEMPTS),
        wait=wait_random_exponential(multiplier=0.2, max=3),  # full jitter, as the sink
        retry=retry_if_exception_type(_Unsent),
        reraise=True,
    ):
        with attempt:
            response = client.send_message_batch(QueueUrl=queue_url, Entries=pending)
            sent |= {s["Id"]: s["MessageId"] for s in response.get("Successful", [])}
            failed = response.get("Failed", [])
            codes = sorted({f.get("Code", "?") for f in failed})
            if any(f.get("SenderFault", True) for f in failed):
                raise RuntimeError(f"SQS refused {len(failed)} of {len(batch)} messages: {codes}")
            if failed:
                retry = {f["Id"] for f in failed}
                pending = [entry for entry in pending if entry["Id"] in retry]
                raise _Unsent(
                    f"SQS failed {len(failed)} of {len(batch)} messages on its side"
                    f" {SEND_ATTEMPTS} times: {codes}"
                )
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
