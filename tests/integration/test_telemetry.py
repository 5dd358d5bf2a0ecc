"""Spans and metrics of a real run carry counts, ids and reason codes, never a raw value."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY, generate_latest

from logins.cli import main
from logins.dev.embedded import EmbeddedSqs
from logins.dev.generator import generate
from logins.dev.seed import send_bodies, send_entries, traceparent_attribute
from tests.helpers import config_for, run


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process: OpenTelemetry refuses to replace it
    yield exporter


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels or None)
    return value or 0.0


def count(span: ReadableSpan, name: str) -> int:
    """A count the sink sets on its span (an attribute's type is any of OpenTelemetry's)."""
    value = (span.attributes or {})[name]
    assert isinstance(value, int)
    return value


def test_spans_and_metrics(
    spans: InMemorySpanExporter, flow_env: dict[str, str], sqs: EmbeddedSqs, queue_url: str
) -> None:
    messages = generate(120, seed=13)
    send_bodies(sqs.client(), queue_url, (m.body for m in messages))
    rows_before = sample("logins_messages_total", outcome="row")
    rejected_before = sample("logins_messages_total", outcome="rejected")
    spans.clear()

    run(config_for(flow_env))

    batches = [s for s in spans.get_finished_spans() if s.name == "logins.sink.write_batch"]
    assert batches
    assert sum(count(s, "logins.batch.rows") for s in batches) == sum(
        m.kind == "valid" for m in messages
    )
    assert sample("logins_messages_total", outcome="row") - rows_before == sum(
        m.kind == "valid" for m in messages
    )
    assert sample("logins_messages_total", outcome="rejected") - rejected_before == sum(
        m.kind == "malformed" for m in messages
    )

    exported = json.dumps([s.to_json() for s in spans.get_finished_spans()])
    metrics_text = generate_latest(REGISTRY).decode()
    for message in messages:
        if message.kind != "valid":
            continue
        fields = json.loads(message.body)
        for value in (fields["ip"], fields["device_id"]):
            assert value not in exported
            assert value not in metrics_text


def test_the_batch_span_links_to_each_producers_trace(
    spans: InMemorySpanExporter, flow_env: dict[str, str], sqs: EmbeddedSqs, queue_url: str
) -> None:
    """W3C `traceparent` message attributes and X-Ray `AWSTraceHeader` system attributes
    become one link per message on the span of the batch that committed it (OpenTelemetry's
    messaging conventions for batches); a header that parses as neither gives no link."""
    client = sqs.client()
    bodies = [m.body for m in generate(40, seed=5)]
    w3c = {i: (secrets.token_hex(16), secrets.token_hex(8)) for i in range(0, 30, 3)}
    entries = [
        {"MessageBody": body}
        | ({"MessageAttributes": traceparent_attribute(f"00-{w3c[i][0]}-{w3c[i][1]}-01")}
           if i in w3c else {})
        for i, body in enumerate(bodies[:30])
    ]  # fmt: skip
    entries.append({"MessageBody": bodies[30], "MessageAttributes": traceparent_attribute("junk")})
    ids = send_entries(client, queue_url, entries)
    expected = {(int(w3c[i][0], 16), int(w3c[i][1], 16)): ids[i] for i in w3c}
    for body in bodies[31:34]:  # moto keeps system attributes of SendMessage, not of a batch
        root, parent = secrets.token_hex(12), secrets.token_hex(8)
        header = f"Root=1-{secrets.token_hex(4)}-{root};Parent={parent};Sampled=1"
        sent = client.send_message(
            QueueUrl=queue_url,
            MessageBody=body,
            MessageSystemAttributes={
                "AWSTraceHeader": {"DataType": "String", "StringValue": header}
            },
        )
        trace_id = int(header.split("-")[1] + root, 16)
        expected[(trace_id, int(parent, 16))] = sent["MessageId"]
    send_bodies(client, queue_url, bodies[34:])  # no trace at all
    spans.clear()

    run(config_for(flow_env))

    batches = [s for s in spans.get_finished_spans() if s.name == "logins.sink.write_batch"]
    links = {
        (link.context.trace_id, link.context.span_id): (link.attributes or {})[
            "messaging.message.id"
        ]
        for span in batches
        for link in span.links
    }
    assert links == expected
    assert all(link.context.is_remote for span in batches for link in span.links)
    queue_name = queue_url.rsplit("/", 1)[-1]
    for span in batches:
        attributes = dict(span.attributes or {})
        assert span.kind is SpanKind.CONSUMER
        assert attributes["messaging.system"] == "aws_sqs"
        assert attributes["messaging.destination.name"] == queue_name
        assert attributes["messaging.batch.message_count"] == attributes["logins.batch.size"]
    assert sum(count(s, "messaging.batch.message_count") for s in batches) == 40


def test_generate_trace_sends_a_traceparent_per_message_and_prints_its_span(
    sqs: EmbeddedSqs, queue_url: str
) -> None:
    """`logins generate --trace` with LOGINS_TRACES=console: each message carries the
    traceparent of a producer span, and that span is printed; the progress line is there."""
    result = CliRunner().invoke(
        main,
        ["generate", "-n", "12", "--trace", "--queue-url", queue_url,
         "--endpoint-url", sqs.endpoint_url],
        env={"LOGINS_TRACES": "console"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"sent 12 messages to {queue_url}" in result.stdout
    assert "generate: sent: 12/12 done in" in result.stderr
    printed = [json.loads(s) for s in re.findall(r"^\{\n.*?^\}$", result.stderr, re.M | re.S)]
    spans = {s["context"]["trace_id"][2:]: s for s in printed}
    queue_name = queue_url.rsplit("/", 1)[-1]
    client = sqs.client()
    received: list[str] = []
    while len(received) < 12:
        response = client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["traceparent"]
        )
        received += [
            m["MessageAttributes"]["traceparent"]["StringValue"] for m in response["Messages"]
        ]
    for header in received:
        version, trace_id, span_id, flags = header.split("-")
        assert version == "00" and int(flags, 16) & 1  # sampled
        span = spans[trace_id]
        assert span["context"]["span_id"] == "0x" + span_id
        assert span["name"] == f"create {queue_name}" and span["kind"] == "SpanKind.PRODUCER"
        assert span["attributes"]["messaging.system"] == "aws_sqs"
    assert len(set(received)) == 12


def test_generate_trace_needs_a_queue() -> None:
    result = CliRunner().invoke(main, ["generate", "-n", "1", "--trace", "--stdout"])
    assert result.exit_code == 2 and "--trace needs a queue" in result.output
