"""`logins audit list|verify`: the hash-chained trail of vault actions."""

from __future__ import annotations

import json
import sys

import click

from logins import audit as audit_trail
from logins.cli.common import echo_json, selected_config, table, vault_connect


@click.group()
def audit() -> None:
    """The audit trail of vault actions (append-only, hash-chained)."""


@audit.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
def audit_list(limit: int, as_json: bool) -> None:
    """The latest audit rows, newest first."""
    config = selected_config()
    with vault_connect(config) as conn:
        found = audit_trail.latest(conn, config, limit)
    if as_json:
        echo_json([r.as_dict() for r in found])
        return
    click.echo(
        table(
            ["id", "at", "actor", "action", "tokens", "ok", "failed", "reason", "detail"],
            [
                [
                    str(r.id),
                    r.at.astimezone().strftime("%Y-%m-%d %H:%M:%S%z"),
                    r.actor,
                    r.action,
                    str(len(r.tokens)),
                    str(r.succeeded),
                    str(r.failed),
                    r.reason,
                    "" if r.detail is None else json.dumps(r.detail, sort_keys=True),
                ]
                for r in found
            ],
        )
    )


def _anchor(value: str) -> tuple[int, str]:
    row_id, _, digest = value.partition(":")
    if not row_id.isdigit() or len(digest) != 64:
        raise click.BadParameter(f"{value!r} is not ID:SHA256HEX (as `audit verify` prints)")
    return int(row_id), digest.lower()


@audit.command("verify")
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    help="ID:HASH of a head printed by an earlier verify; it must still be in the chain.",
)
@click.option("--json", "as_json", is_flag=True)
def audit_verify(anchors: tuple[str, ...], as_json: bool) -> None:
    """Recompute the hash chain. Exit 1 naming the first edited, deleted or inserted row."""
    recorded = dict(_anchor(a) for a in anchors)
    config = selected_config()
    with vault_connect(config) as conn:
        result = audit_trail.verify(conn, config, recorded)
    if as_json:
        echo_json(result.as_dict())
    else:
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)
        if result.ok:
            click.echo(
                f"ok: {result.rows} rows ({result.legacy_rows} before the chain started);"
                f" head {result.head_id}:{result.head_hash}"
                if result.head_id is not None
                else f"ok: {result.rows} rows, none hash-chained yet"
            )
        else:
            click.echo(f"TAMPERED: {result.problem}", err=True)
    if not result.ok:
        sys.exit(1)
