"""`logins schema`: the JSON Schema of a configuration file, for editors and CI checks."""

from __future__ import annotations

import json

import click

from logins.core.config.fileschema import file_schema


@click.command()
def schema() -> None:
    """Print the JSON Schema of a configuration file (from the same models as
    docs/configuration.md). Editors with the YAML language server complete and check a file
    whose first line is `# yaml-language-server: $schema=PATH-OR-URL-OF-THIS-OUTPUT`."""
    click.echo(json.dumps(file_schema(), indent=2))
