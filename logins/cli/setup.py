"""Setting up: keys, the config check, the schema migrations."""

from __future__ import annotations

import os
from pathlib import Path

import click
import psycopg
import yaml

from connectors import preflight
from connectors.postgres.migrations import SchemaMismatch
from connectors.postgres.migrations import migrate as apply
from connectors.postgres.schema import table_schema
from connectors.postgres.schemaversion import SCHEMA_VERSION
from logins.cli.common import connect, selected_config
from logins.core import posture
from logins.core.config import AppConfig, ConfigError, describe, selected_files
from logins.core.keys import (
    KeyFileError,
    generate_keys,
    generate_token_key,
    load_vault_public_key,
    vault_fingerprint,
)
from logins.core.pipeline_keys import load_secrets


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--token-only",
    is_flag=True,
    help="Write only a new token.key (its line can be prepended to a token key file).",
)
def keygen(directory: Path, token_only: bool) -> None:
    """Write token.key and vault.pub (for the pipeline) and vault.key (keep it elsewhere)."""
    if token_only:
        try:
            click.echo(f"wrote {generate_token_key(directory)}")
        except KeyFileError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(_cannot_write(directory, exc)) from None
        return
    try:
        paths = generate_keys(directory)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(_cannot_write(directory, exc)) from None
    for path in paths.values():
        click.echo(f"wrote {path}")
    fingerprint = vault_fingerprint(load_vault_public_key(paths["vault.pub"]))
    click.echo(f"vault.pub fingerprint: {fingerprint}")
    click.echo(
        "The pipeline needs token.key and vault.pub only. Move vault.key to whoever may "
        "reveal values; never deploy it with the pipeline. Pin vault.pub with "
        f"LOGINS_VAULT_PUBLIC_KEY_FINGERPRINT={fingerprint}. token.key is for development: "
        "whoever holds it can enumerate low-entropy values (every IPv4 address) offline; "
        "in production keep the token key in AWS KMS (docs/vault.md, Key custody)."
    )


def _cannot_write(directory: Path, exc: OSError) -> str:
    """A directory this user may not write: say who we are (the image runs as uid 10001)."""
    return (
        f"cannot write keys into {directory}: {exc.strerror} (this process runs as uid"
        f" {os.getuid()} and must be able to write there; the image runs as uid 10001: see"
        " docs/docker.md, 'Keys in a host directory')"
    )


@click.command()
@click.option(
    "--connect",
    is_flag=True,
    help="Also run the flow's start-up checks against SQS and PostgreSQL; one line per check,"
    " exit 2 if one fails.",
)
def check(connect: bool) -> None:
    """Validate the selected configuration and key files; print it with secrets hidden."""
    config = selected_config()
    try:
        secrets = load_secrets(config)
    except KeyFileError as exc:
        if not connect:
            raise click.ClickException(str(exc)) from None
        _line(False, "keys", str(exc))
        raise SystemExit(2) from None
    _table_schema(config)
    active = secrets.tokenizer.active
    pinned = "pinned" if config.vault.public_key_fingerprint else "not pinned"
    keys = (
        f"token key id {active.key_id} ({active.algorithm}, {active.custody}),"
        f" vault key id {secrets.sealer.key_id} ({secrets.sealer.fingerprint}, {pinned})"
    )
    stance = posture.summary(config, posture.is_production(os.environ, selected_files()))
    if not connect:
        click.echo(yaml.safe_dump(describe(config), sort_keys=False).rstrip())
        click.echo("\n".join(f"# posture: {line}" for line in stance))
        click.echo(f"# ok: {keys}")
        return
    _line(True, "config", " extends ".join(str(f) for f in reversed(selected_files())))
    _line(True, "keys", keys)
    _line(True, "posture", "; ".join(stance))
    outcomes = preflight.run(config, wait_seconds=0)
    for outcome in outcomes:
        _line(outcome.ok, outcome.name, outcome.detail)
    if not all(o.ok for o in outcomes):
        raise SystemExit(2)


def _line(ok: bool, name: str, detail: str) -> None:
    click.echo(f"{'ok' if ok else 'FAIL':<5}{name:<10}{detail}")


@click.command()
def migrate() -> None:
    """Apply the idempotent schema migrations, roles and grants (as the owner or a superuser).

    Creates the NOLOGIN roles logins_owner, logins_pipeline, logins_analyst, logins_revealer,
    logins_eraser, logins_rotator and logins_auditor if missing, makes logins_owner the owner
    of every object, grants each role its part and records the schema version. Grant the
    roles to login users yourself (docs/vault.md#roles)."""
    config = selected_config()
    _table_schema(config)
    with connect(config) as conn:
        try:
            apply(conn, config)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise click.ClickException(
                f"cannot migrate as this login ({exc.diag.message_primary}): run it as a"
                " superuser the first time (it creates the roles), later as a member of"
                " logins_owner"
            ) from None
        except SchemaMismatch as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"migrations applied: schema version {SCHEMA_VERSION}, roles and grants in place")


def _table_schema(config: AppConfig) -> None:
    """The sink table's columns must follow from the declared fields (names, clashes)."""
    try:
        table_schema(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
