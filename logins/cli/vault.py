"""`logins vault status|rekey`: the vault's contents by key, and re-sealing to a new key pair."""

from __future__ import annotations

from pathlib import Path

import click

from logins.cli.common import (
    REASON,
    Unusable,
    counts,
    echo_json,
    report_batches,
    selected_config,
    tokenizer_of,
)
from logins.cli.session import NOTE, checked_connect
from logins.core.keys import KeyFileError, load_vault_private_key, load_vault_public_key
from logins.core.pipeline_keys import load_vault_key
from logins.core.progress import progress
from logins.core.vault import Opener
from logins.pii.rotation import rekey, status


@click.group()
def vault() -> None:
    """The vault: status, and re-sealing to a new key pair (rekey)."""


@vault.command("status")
@click.option("--json", "as_json", is_flag=True)
def vault_status(as_json: bool) -> None:
    """Entries by token key / vault key, aliases, erasures, what a rotation still has to do."""
    config = selected_config()
    source = config.tokens.key_file  # None with a KMS key; a path or a secret reference
    missing = isinstance(source, Path) and not source.exists()
    active = None if missing else tokenizer_of(config).key_id
    try:
        sealer = load_vault_key(config)
    except KeyFileError as exc:
        raise Unusable(str(exc)) from None
    pinned = "pinned" if config.vault.public_key_fingerprint else "not pinned"
    with checked_connect(config) as conn:
        result = status(conn, config, active)
    if as_json:
        echo_json(
            result.as_dict()
            | {
                "vault_public_key": {
                    "key_id": sealer.key_id,
                    "fingerprint": sealer.fingerprint,
                    "pinned": bool(config.vault.public_key_fingerprint),
                }
            }
        )
        return
    click.echo(f"vault public key            : {sealer.key_id} {sealer.fingerprint} ({pinned})")
    click.echo("vault entries by token key / vault key:")
    for keys, count in result.entries_by_keys.items():
        click.echo(f"  {keys:<20} {count}")
    click.echo(f"rejected bodies by vault key: {counts(result.rejected_by_vault_key)}")
    click.echo(f"rejected bodies erased      : {result.rejected_bodies_erased}")
    click.echo(f"token aliases               : {result.aliases}")
    click.echo(f"erased values (markers)     : {result.erasures}")
    if result.pending_rotation is not None:
        click.echo(f"to rotate to key {active}  : {result.pending_rotation}")


@vault.command("rekey")
@click.option(
    "--old-private-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The private key the vault is sealed to now.",
)
@click.option(
    "--new-public-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The new vault.pub (from `logins keygen`).",
)
@REASON
@NOTE
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True)
def vault_rekey(
    old_private_key_file: Path,
    new_public_key_file: Path,
    reason: str,
    note: str | None,
    batch_size: int,
    as_json: bool,
) -> None:
    """Re-seal every vault entry and sealed rejected body from the old key pair to the new
    public key. Resumable: only rows still sealed to the old key are touched."""
    try:
        old = Opener(load_vault_private_key(old_private_key_file))
        new = load_vault_public_key(new_public_key_file)
    except KeyFileError as exc:
        raise Unusable(str(exc)) from None
    config = selected_config()
    try:
        with checked_connect(config) as conn, progress("rekey: rows re-sealed") as bar:
            result = rekey(
                conn,
                config,
                old=old,
                new_public=new,
                reason=reason,
                note=note,
                batch_size=batch_size,
                progress=bar,
            )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    report_batches(
        result,
        as_json,
        f"re-sealed {result.vault_rekeyed} vault entries and {result.rejected_rekeyed}"
        f" rejected bodies from vault key {result.from_key_id} to {result.to_key_id};"
        f" failed {result.failed}; still sealed to the old key: {result.remaining_vault}"
        f" entries, {result.remaining_rejected} rejected bodies",
    )
