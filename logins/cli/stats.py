"""`logins stats`: what was committed, by outcome and reason, and the vault's size."""

from __future__ import annotations

import click
import psycopg

from logins.cli.common import Unusable, connect, counts, echo_json, selected_config
from logins.core.stats import collect


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def stats(as_json: bool) -> None:
    """Counts: rows written, rejected by reason, duplicates, vault entries."""
    config = selected_config()
    with connect(config) as conn:
        try:
            result = collect(conn, config)
        except psycopg.errors.UndefinedTable as exc:
            raise Unusable(
                f"{exc.diag.message_primary}: the schema is not there yet; run `logins migrate`"
                " as the owner (a member of logins_owner) or a superuser"
            ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise Unusable(
                f"{exc.diag.message_primary}: grant this login logins_analyst (docs/vault.md#roles)"
            ) from None
    if as_json:
        echo_json(result.as_dict())
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
    click.echo(f"vault entries      : {result.vault_entries} ({counts(result.vault_by_field)})")
