"""`logins rotate new-key|run`: token key rotation."""

from __future__ import annotations

from pathlib import Path

import click

from logins.cli.common import (
    PRIVATE_KEY,
    REASON,
    Unusable,
    private_key,
    report_batches,
    selected_config,
    tokenizer_of,
)
from logins.cli.session import NOTE, checked_connect
from logins.core.keys import KeyFileError, prepend_token_key
from logins.core.progress import progress
from logins.core.vault import Opener
from logins.pii.rotation import rotate_tokens


@click.group()
def rotate() -> None:
    """Token key rotation: new-key, then restart the pipelines, then run."""


@rotate.command("new-key")
@click.option(
    "--token-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Default: tokens.key_file of the selected configuration.",
)
def rotate_new_key(token_key_file: Path | None) -> None:
    """Put a new token key first in the token key file (the active one); keep the old lines."""
    path = token_key_file or selected_config().tokens.key_file
    if path is None:
        raise Unusable(
            "the token key is in KMS (tokens.kms_key_id): create a new HMAC_256 key in KMS,"
            " make it tokens.kms_key_id and the old one tokens.previous_kms_key_ids, restart"
            " the pipelines, then `logins rotate run` (docs/vault.md)"
        )
    if not isinstance(path, Path):  # a secretsmanager:/ssm: reference
        raise Unusable(
            f"tokens.key_file is {path}: put the new key line first in that secret yourself"
            " (`logins keygen DIR --token-only` writes one), or pass --token-key-file"
        )
    try:
        key = prepend_token_key(path)
    except (KeyFileError, OSError) as exc:
        raise Unusable(f"cannot rotate {path}: {exc}") from None
    click.echo(f"new active token key {key.key_id} in {path}; the old keys stay for verifying")
    click.echo("next: restart the pipelines with this file, then `logins rotate run --reason ...`")


@rotate.command("run")
@REASON
@PRIVATE_KEY
@NOTE
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True)
def rotate_run(
    reason: str,
    private_key_file: Path | None,
    private_key_fd: int | None,
    note: str | None,
    batch_size: int,
    as_json: bool,
) -> None:
    """Give every vault entry under an old token key its token under the active key, with an
    alias row old -> new. Resumable: stop and start it again at any time."""
    private = private_key(private_key_file, private_key_fd)
    config = selected_config()
    tokenizer = tokenizer_of(config)
    if len(tokenizer.key_ids) < 2:
        raise Unusable(
            "only one token key is configured: run `logins rotate new-key` first (a key file),"
            " or give the old key as tokens.previous_key_file / tokens.previous_kms_key_ids"
        )
    with checked_connect(config) as conn, progress("rotate: vault entries") as bar:
        result = rotate_tokens(
            conn,
            config,
            opener=Opener(private),
            tokenizer=tokenizer,
            reason=reason,
            note=note,
            batch_size=batch_size,
            progress=bar,
        )
    report_batches(
        result,
        as_json,
        f"rotated {result.rotated} vault entries to token key {result.to_key_id};"
        f" failed {result.failed}; still to rotate {result.remaining}",
    )
