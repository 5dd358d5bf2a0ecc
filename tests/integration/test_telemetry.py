"""Spans and metrics of a real run carry counts, ids and reason codes, never a raw value."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, generate_latest

from logins.dev.embedded import EmbeddedSqs
from logins.dev.generator import generate
from logins.dev.seed import send_bodies
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
    attributes = [dict(s.attributes or {}) for s in batches]
    assert sum(a["logins.batch.rows"] for a in attributes) == sum(
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
