"""`logins purge`: enforce the retention of sealed rejected bodies (audited; for cron)."""

from __future__ import annotations

import click

from logins.cli.common import Unusable, echo_json, selected_config
from logins.cli.session import NOTE, checked_connect
from logins.core.controlsql import Busy
from logins.pii.purge import purge_rejected


@click.command()
@click.option(
    "--reason",
    default=None,
    help="Why; recorded in the audit row (default: the retention and its config key).",
)
@NOTE
@click.option("--dry-run", is_flag=True, help="Count what would be purged; change nothing.")
@click.option("--json", "as_json", is_flag=True)
def purge(reason: str | None, note: str | None, dry_run: bool, as_json: bool) -> None:
    """Empty the sealed bodies of rejected messages older than the retention `logins migrate`
    recorded from sink.rejected_retention_days (the owner's setting, not this login's).

    Run it daily as a member of logins_eraser, e.g. from cron:
    `15 3 * * * logins purge`. The rows stay (message id, reason, detail).
    """
    config = selected_config()
    days = config.sink.rejected_retention_days
    if days is None:
        raise Unusable(
            "sink.rejected_retention_days is not set: sealed rejected bodies are kept forever"
        )
    why = reason or f"retention: sink.rejected_retention_days = {days}"
    if not why.strip():
        raise click.UsageError("--reason must say why")
    try:
        with checked_connect(config) as conn:
            result = purge_rejected(conn, config, days=days, reason=why, note=note, dry_run=dry_run)
    except Busy as exc:  # an erasure or an open reveal holds the lock: the message names it
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json(result.as_dict())
        return
    verb = "would purge" if dry_run else "purged"
    click.echo(
        f"{verb} {result.purged} sealed rejected bodies older than {result.retention_days} days"
        f" (before {result.cutoff:%Y-%m-%d %H:%M:%S %Z})"
        + (f"; audit row {result.audit_id}" if result.audit_id else "")
    )
