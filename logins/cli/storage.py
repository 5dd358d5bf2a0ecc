"""`logins storage rewrite`: the storage step of erasure (logins/pii/storage.py), run by the
tables' owner after `forget` or `purge`."""

from __future__ import annotations

import click

from logins.cli.common import connect, selected_config
from logins.pii import storage as step


@click.group()
def storage() -> None:
    """The tables' files on disk."""


@storage.command("rewrite")
@click.option(
    "--table",
    "only",
    multiple=True,
    help="Only this table (repeatable); default: every table erasure changes.",
)
@click.option(
    "--lock-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds to wait for each table's lock before giving up.",
)
def storage_rewrite(only: tuple[str, ...], lock_timeout: float) -> None:
    """Rewrite the tables erasure changes (VACUUM FULL, ANALYZE), so that erased values'
    bytes leave their files. Run it as the tables' owner (a login granted logins_owner),
    after `forget` or `purge`: each table is locked while it is rewritten (docs/vault.md,
    The storage step)."""
    config = selected_config()
    with connect(config) as conn:
        try:
            done = step.rewrite(conn, config, list(only) or None, lock_timeout)
        except step.StorageError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # psycopg's own message names the lock or the table
            raise click.ClickException(f"rewrite stopped: {exc}") from None
        for r in done:
            click.echo(
                f"rewrote {r.table}: {r.bytes_before:,} -> {r.bytes_after:,} bytes"
                f" in {r.seconds:.1f} s"
            )
        for line in step.unreached(conn, rewritten=True):
            click.echo(line)
