"""The `logins` command: keys, config check, migrations, sample data, stats, reveal, demo.

click, because it gives subcommands, --help, typed options and clean errors with no code
of ours; every command takes the same LOGINS_ENV / LOGINS_CONFIG selection as the flow.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import psycopg
import yaml

from logins.config import AppConfig, ConfigError, describe, load_config
from logins.keys import (
    KeyFileError,
    generate_keys,
    load_token_keys,
    load_vault_private_key,
    private_key_from_text,
)


def _config() -> AppConfig:
    try:
        return load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _connect(config: AppConfig) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            config.sink.dsn.get_secret_value(), autocommit=True, connect_timeout=10
        )
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot connect to the database: {exc}") from None


@click.group()
def main() -> None:
    """logins-etl: user logins from SQS into PostgreSQL with the PII tokenised and vaulted.

    The configuration is chosen like the flow's: LOGINS_ENV (default local) or LOGINS_CONFIG.
    """


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def keygen(directory: Path) -> None:
    """Write token.key and vault.pub (for the pipeline) and vault.key (keep it elsewhere)."""
    try:
        paths = generate_keys(directory)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    for path in paths.values():
        click.echo(f"wrote {path}")
    click.echo(
        "The pipeline needs token.key and vault.pub only. Move vault.key to whoever may "
        "reveal values; never deploy it with the pipeline."
    )


@main.command()
def check() -> None:
    """Validate the selected configuration and key files; print it with secrets hidden."""
    from flows.builder import load_secrets

    config = _config()
    try:
        secrets = load_secrets(config)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(yaml.safe_dump(describe(config), sort_keys=False).rstrip())
    click.echo(
        f"# ok: token key id {secrets.tokenizer.key_id}, vault key id {secrets.sealer.key_id}"
    )


@main.command()
def migrate() -> None:
    """Apply the idempotent schema migrations (the flow also does this at start)."""
    from connectors.migrations import migrate as apply

    config = _config()
    with _connect(config) as conn:
        apply(conn, config)
    click.echo("migrations applied")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def stats(as_json: bool) -> None:
    """Counts: rows written, rejected by reason, duplicates, vault entries."""
    from logins.stats import collect

    config = _config()
    with _connect(config) as conn:
        result = collect(conn, config)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo(f"messages committed : {result.messages}")
    click.echo(f"  rows             : {result.rows}")
    click.echo(f"  rejected         : {result.rejected}")
    for reason, count in result.rejected_by_reason.items():
        click.echo(f"    {reason:<15}: {count}")
    click.echo(f"  duplicates       : {result.duplicates}")
    click.echo(f"rows in {config.sink.table:<10} : {result.table_rows}")
    for column, count in result.distinct_tokens.items():
        click.echo(f"distinct {column:<10}: {count}")
    click.echo(f"vault entries      : {result.vault_entries} {result.vault_by_field}")


@main.command()
@click.argument("tokens", nargs=-1)
@click.option("--reason", required=True, help="Why; recorded in the audit table.")
@click.option(
    "--private-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The vault's private key. Or set LOGINS_VAULT_PRIVATE_KEY to the key file's content.",
)
@click.option("--actor", default=None, help="Who asks (default: the OS user).")
@click.option("--json", "as_json", is_flag=True)
def reveal(
    tokens: tuple[str, ...],
    reason: str,
    private_key_file: Path | None,
    actor: str | None,
    as_json: bool,
) -> None:
    """Print the original values of TOKENS (audited; each value checked against its token)."""
    from logins.reveal import default_actor
    from logins.reveal import reveal as do_reveal
    from logins.tokens import Tokenizer
    from logins.vault import Opener

    if not tokens:
        raise click.UsageError("give at least one token")
    config = _config()
    try:
        if private_key_file is not None:
            private = load_vault_private_key(private_key_file)
        elif os.environ.get("LOGINS_VAULT_PRIVATE_KEY"):
            private = private_key_from_text(os.environ["LOGINS_VAULT_PRIVATE_KEY"])
        else:
            raise click.UsageError("--private-key-file or LOGINS_VAULT_PRIVATE_KEY is required")
        tokenizer = Tokenizer(load_token_keys(config.tokens.key_file))
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    with _connect(config) as conn:
        results = do_reveal(
            conn,
            config,
            opener=Opener(private),
            tokenizer=tokenizer,
            tokens=list(tokens),
            reason=reason,
            actor=actor or default_actor(),
        )
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        for r in results:
            shown = r.value if r.error is None else f"ERROR: {r.error}"
            click.echo(f"{r.token}\t{r.field or '-'}\t{shown}")
    if any(r.error for r in results):
        sys.exit(1)


@main.command()
@click.option("-n", "--count", default=500, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--queue-url", default=None, help="Send to this queue (else print JSON lines).")
@click.option("--endpoint-url", default=None, help="SQS endpoint (LocalStack, moto).")
@click.option("--region", envvar="AWS_REGION", default="us-east-1", show_default=True)
def generate(
    count: int, seed: int, queue_url: str | None, endpoint_url: str | None, region: str
) -> None:
    """Realistic sample logins: repeats, a few % malformed, some resends."""
    from logins.generator import iter_messages
    from logins.seed import send_bodies

    messages = iter_messages(count, seed=seed)
    if queue_url is None:
        for message in messages:
            click.echo(message.body)
        return
    import boto3

    client = boto3.client("sqs", endpoint_url=endpoint_url, region_name=region)
    sent = send_bodies(client, queue_url, (m.body for m in messages))
    click.echo(f"sent {len(sent)} messages to {queue_url}")


@main.command()
@click.option("-n", "--count", default=500, show_default=True, help="Messages to seed.")
@click.option("--workers", default=2, show_default=True)
@click.option("--seed", default=1, show_default=True)
def demo(count: int, workers: int, seed: int) -> None:
    """Start an SQS server and a PostgreSQL, seed sample logins, run the flow, report."""
    from logins.demo import run_demo

    sys.exit(run_demo(count=count, workers=workers, seed=seed))
