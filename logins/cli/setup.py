"""Setting up: keys, the config check, the schema migrations."""

from __future__ import annotations

from pathlib import Path

import click
import psycopg
import yaml

from connectors.migrations import migrate as apply
from connectors.schemaversion import SCHEMA_VERSION
from logins.cli.common import connect, selected_config
from logins.config import describe
from logins.keys import (
    KeyFileError,
    generate_keys,
    generate_token_key,
    load_vault_public_key,
    vault_fingerprint,
)
from logins.secrets import load_secrets


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
        return
    try:
        paths = generate_keys(directory)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
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


@click.command()
def check() -> None:
    """Validate the selected configuration and key files; print it with secrets hidden."""
    config = selected_config()
    try:
        secrets = load_secrets(config)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(yaml.safe_dump(describe(config), sort_keys=False).rstrip())
    active = secrets.tokenizer.active
    pinned = "pinned" if config.vault.public_key_fingerprint else "not pinned"
    click.echo(
        f"# ok: token key id {active.key_id} ({active.algorithm}, {active.custody}),"
        f" vault key id {secrets.sealer.key_id} ({secrets.sealer.fingerprint}, {pinned})"
    )


@click.command()
def migrate() -> None:
    """Apply the idempotent schema migrations, roles and grants (as the owner or a superuser).

    Creates the NOLOGIN roles logins_owner, logins_pipeline, logins_analyst, logins_revealer,
    logins_eraser, logins_rotator and logins_auditor if missing, makes logins_owner the owner
    of every object, grants each role its part and records the schema version. Grant the
    roles to login users yourself (docs/vault.md#roles)."""
    config = selected_config()
    with connect(config) as conn:
        try:
            apply(conn, config)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise click.ClickException(
                f"cannot migrate as this login ({exc.diag.message_primary}): run it as a"
                " superuser the first time (it creates the roles), later as a member of"
                " logins_owner"
            ) from None
    click.echo(f"migrations applied: schema version {SCHEMA_VERSION}, roles and grants in place")
