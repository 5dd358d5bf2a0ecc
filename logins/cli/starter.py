"""`logins init DIR`: a starter project, for an installed logins outside the repository.

Its files extend the configuration shipped with logins (`extends: logins:local.yaml`), so
the project holds only what is its own: where its keys are, and what it changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from logins.core.config.fileschema import file_schema

SCHEMA_LINE = "# yaml-language-server: $schema=logins.schema.json\n"

LOCAL = (
    SCHEMA_LINE
    + """\
# A developer's machine, layered over the configuration shipped with logins: `logins:local.yaml`
# (LocalStack or moto on :4566, a PostgreSQL on localhost:5432) over `logins:base.yaml` (the
# logins stream: its fields, steps and tables). State here only what is yours; every key is
# in `logins schema` and docs/configuration.md. Values may use ${VAR} and ${VAR:-default}.
extends: logins:local.yaml

tokens:
  key_file: ${LOGINS_TOKEN_KEY_FILE:-keys/token.key}         # `logins keygen keys`
vault:
  public_key_file: ${LOGINS_VAULT_PUBLIC_KEY_FILE:-keys/vault.pub}
"""
)

PROD = (
    SCHEMA_LINE
    + """\
# AWS (LOGINS_ENV=prod): the real SQS endpoint of AWS_REGION, the standard credential chain,
# the database URL and key files from the environment or a secret store, never from here.
extends: logins:prod.yaml
"""
)

GITIGNORE = """\
# Keys never go into version control: token.key computes every token, vault.key opens the
# vault. Keep them in a secret store in production (docs/vault.md, Key custody).
keys/
*.key
"""


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Write a starter project into DIRECTORY: config/local.yaml and config/prod.yaml over the
    shipped configuration, the schema for editors, and a .gitignore that keeps keys out."""
    files = {
        directory / "config" / "local.yaml": LOCAL,
        directory / "config" / "prod.yaml": PROD,
        directory / "config" / "logins.schema.json": json.dumps(file_schema(), indent=2) + "\n",
        directory / ".gitignore": GITIGNORE,
    }
    present = [str(p) for p in files if p.exists()]
    if present:
        raise click.ClickException(f"not overwriting {', '.join(present)}")
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write into {directory}: {exc.strerror}") from None
    for path in files:
        click.echo(f"wrote {path}")
    click.echo(
        f"next, in {directory}: `logins keygen keys` (the development keys), then"
        " `logins check` (the configuration and keys) and `logins check --connect` (SQS and"
        " PostgreSQL answer); LOGINS_ENV=prod selects config/prod.yaml."
    )
