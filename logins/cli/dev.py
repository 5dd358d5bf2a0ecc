"""Dev tooling: `logins generate` (sample logins) and `logins demo`.

The dev package (embedded servers, moto, pgserver) is imported only when these run, so the
production commands never load it."""

from __future__ import annotations

import sys

import boto3
import click

from logins.dev.generator import iter_messages
from logins.dev.seed import send_bodies


@click.command()
@click.option("-n", "--count", default=500, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--queue-url", default=None, help="Send to this queue (else print JSON lines).")
@click.option("--endpoint-url", default=None, help="SQS endpoint (LocalStack, moto).")
@click.option("--region", envvar="AWS_REGION", default="us-east-1", show_default=True)
def generate(
    count: int, seed: int, queue_url: str | None, endpoint_url: str | None, region: str
) -> None:
    """Realistic sample logins: repeats, a few % malformed, some resends."""
    messages = iter_messages(count, seed=seed)
    if queue_url is None:
        for message in messages:
            click.echo(message.body)
        return
    client = boto3.client("sqs", endpoint_url=endpoint_url, region_name=region)
    sent = send_bodies(client, queue_url, (m.body for m in messages))
    click.echo(f"sent {len(sent)} messages to {queue_url}")


@click.command()
@click.option("-n", "--count", default=500, show_default=True, help="Messages to seed.")
@click.option("--workers", default=2, show_default=True)
@click.option("--seed", default=1, show_default=True)
def demo(count: int, workers: int, seed: int) -> None:
    """Start an SQS server and a PostgreSQL, seed sample logins, run the flow, report."""
    from logins.dev.demo import run_demo  # loads moto and pgserver: only for the demo

    sys.exit(run_demo(count=count, workers=workers, seed=seed))
