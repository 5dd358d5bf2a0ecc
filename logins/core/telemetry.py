"""Logging and tracing setup. Nothing here ever formats a message body or a field value:
log lines and span attributes carry counts, ids and reason codes only.

Logging is the stdlib's (a JSON formatter is a few lines and needs no dependency);
tracing is the OpenTelemetry SDK, exported to the console or OTLP/HTTP when configured.

A producer's trace continues through the queue: a message's W3C `traceparent` or X-Ray
`AWSTraceHeader` becomes a link of the batch span that committed it (`producer_links`),
parsed by OpenTelemetry's own propagators. Only the trace and span ids travel on: the header
string itself never becomes an attribute.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.propagators.aws.aws_xray_propagator import TRACE_HEADER_KEY
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from logins.core.config import TelemetryConfig

_configured = False


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the `extra` fields a call passed."""

    _skip = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in self._skip})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(config: TelemetryConfig) -> None:
    """Configure logging and tracing once per process (safe to call again)."""
    global _configured
    if _configured:
        return
    _configured = True
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)
    # the X-Ray propagator logs a header it cannot parse at DEBUG: the producer's text, not ours
    for noisy in ("botocore", "boto3", "urllib3", "opentelemetry.propagators.aws"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    _setup_tracing(config)


def _setup_tracing(config: TelemetryConfig) -> None:
    if config.traces == "none":
        return
    trace.set_tracer_provider(tracer_provider(config))


def tracer_provider(config: TelemetryConfig) -> Any:
    """An SDK TracerProvider exporting as configured (none: spans get ids, nothing leaves)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    if config.traces == "none":
        return provider
    exporter: SpanExporter
    if config.traces == "console":
        exporter = ConsoleSpanExporter(out=sys.stderr)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracer() -> trace.Tracer:
    return trace.get_tracer("logins-etl")


_W3C = TraceContextTextMapPropagator()
_XRAY = AwsXRayPropagator()
_MAX_HEADER = 512  # a traceparent is 55 characters, an X-Ray header rarely over 200


def producer_context(header: str) -> trace.SpanContext | None:
    """The span context a producer sent: X-Ray's `Root=...;Parent=...` or a W3C traceparent.
    None for a header neither propagator accepts (it is the producer's, so it may be junk)."""
    if len(header) > _MAX_HEADER:
        return None
    if header.startswith("Root="):
        context = _XRAY.extract({TRACE_HEADER_KEY: header})
    else:
        context = _W3C.extract({"traceparent": header})
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


def producer_links(messages: Iterable[tuple[str, str | None]]) -> list[trace.Link]:
    """One link per (message id, trace header) that carries a valid producer context
    (OpenTelemetry messaging conventions for a batch: the batch span links to each message)."""
    links = []
    for message_id, header in messages:
        if header:
            context = producer_context(header)
            if context is not None:
                links.append(trace.Link(context, {"messaging.message.id": message_id}))
    return links


def traceparent(span: trace.Span) -> str:
    """The W3C traceparent of `span`, as a producer puts it on a message."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return carrier["traceparent"]
