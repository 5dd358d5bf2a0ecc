"""Dev tooling: `logins generate` (sample logins) and `logins demo`.

The dev package (embedded servers, moto, pgserver) is imported only when these run, so the
production commands never load it."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from connectors.errors import sqs_failure, sqs_where
from connectors.sqs.protocol import PROTOCOLS, Protocol, make_client
from logins.cli.common import Unusable, config_without_keys
from logins.core.config import TelemetryConfig
from logins.core.progress import progress
from logins.core.telemetry import tracer_provider
from logins.dev.generator import iter_messages
from logins.dev.seed import send_entries, traced


@click.command()
@click.option("-n", "--count", default=500, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--stdout", "to_stdout", is_flag=True, help="Print the messages as lines; send nothing."
)
@click.option("--queue-url", default=None, help="Send to this queue.  [default: source.queue_url]")
@click.option(
    "--endpoint-url",
    default=None,
    help="SQS endpoint (LocalStack, moto).  [default: source.endpoint_url]",
)
@click.option("--region", default=None, help="[default: source.region]")
@click.option(
    "--trace",
    "with_trace",
    is_flag=True,
    help="Give each message a W3C traceparent from a producer span of its own; the flow's batch"
    " spans link to them (LOGINS_TRACES=console prints both).",
)
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default=None,
    help="SQS protocol; auto switches to query when the server refuses JSON (LocalStack < 3.0)."
    "  [default: source.protocol]",
)
def generate(
    count: int,
    seed: int,
    to_stdout: bool,
    queue_url: str | None,
    endpoint_url: str | None,
    region: str | None,
    with_trace: bool,
    protocol: Protocol | None,
) -> None:
    """Realistic sample logins: repeats, a few % malformed, some resends.

    Sent to the selected configuration's queue through its endpoint, region and protocol,
    like every command (no key is read); the options override them."""
    messages = iter_messages(count, seed=seed)
    if to_stdout:
        if with_trace:
            raise click.UsageError("--trace needs a queue (it travels as a message attribute)")
        for message in messages:
            click.echo(message.body)
        return
    source = config_without_keys().source
    queue_url = queue_url or source.queue_url
    endpoint_url = endpoint_url or source.endpoint_url
    client = make_client(
        protocol or source.protocol, endpoint_url=endpoint_url, region_name=region or source.region
    )
    entries: Any = ({"MessageBody": m.body} for m in messages)
    provider = _producer_tracing() if with_trace else None
    if provider is not None:
        tracer = provider.get_tracer("logins-etl.generate")
        entries = traced(entries, tracer, queue_url.rsplit("/", 1)[-1])
    try:
        with progress("generate: sent", total=count) as bar:
            sent = send_entries(client, queue_url, entries, on_sent=bar.advance)
    except (BotoCoreError, ClientError) as exc:
        raise Unusable(str(sqs_failure(exc, sqs_where(queue_url, endpoint_url)))) from None
    finally:
        if provider is not None:
            provider.shutdown()  # exports what is still buffered
    click.echo(f"sent {len(sent)} messages to {queue_url}")


def _producer_tracing() -> Any:
    """An OpenTelemetry SDK provider for `generate --trace`, exporting as LOGINS_TRACES says."""
    try:
        config = TelemetryConfig(
            traces=os.environ.get("LOGINS_TRACES") or "none",
            otlp_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            service_name="logins-generate",
        )
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="LOGINS_TRACES") from None
    return tracer_provider(config)


@click.command()
@click.option("-n", "--count", default=500, show_default=True, help="Messages to seed.")
@click.option("--workers", default=2, show_default=True)
@click.option("--seed", default=1, show_default=True)
def demo(count: int, workers: int, seed: int) -> None:
    """Start an SQS server and a PostgreSQL, seed sample logins, run the flow, report."""
    from logins.dev.demo import run_demo  # loads moto and pgserver: only for the demo

    sys.exit(run_demo(count=count, workers=workers, seed=seed))
