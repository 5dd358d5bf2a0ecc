"""Recovering and erasing values: `logins reveal` and `logins forget` (both audited)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, TextIO

import click

from logins.cli.common import (
    PRIVATE_KEY,
    REASON,
    TOKEN_FILE,
    echo_json,
    one_stdin,
    private_key,
    private_key_given,
    private_key_options,
    read_tokens,
    selected_config,
    table,
    tokenizer_of,
)
from logins.cli.session import NOTE, checked_connect
from logins.core.controlsql import Busy
from logins.core.progress import progress
from logins.core.vault import Opener
from logins.pii import storage
from logins.pii.erasure import Erasure, forget_tokens, forget_user, pipeline_unreached
from logins.pii.reveal import reveal as do_reveal
from logins.pii.reveal import user_selector, user_tokens


@click.command()
@click.argument("tokens", nargs=-1)
@TOKEN_FILE
@click.option("--user-id", default=None, help="Every masked value in this user's rows.")
@REASON
@PRIVATE_KEY
@NOTE
@click.option("--json", "as_json", is_flag=True, help="Exact values as JSON.")
def reveal(
    tokens: tuple[str, ...],
    file: TextIO | None,
    user_id: str | None,
    reason: str,
    private_key_file: Path | None,
    private_key_fd: int | None,
    note: str | None,
    as_json: bool,
) -> None:
    """Print the original values of TOKENS (audited; each value checked against its token).

    Tokens come from the arguments, --file, and/or --user-id (every masked column of that
    user's rows in the sink table). The audit row is committed before anything is shown.
    Exits 1 if any token could not be revealed.
    """
    one_stdin(file, private_key_file)
    wanted = read_tokens(tokens, file)
    if not wanted and user_id is None:
        raise click.UsageError("give tokens, --file or --user-id")
    if not reason.strip():
        raise click.UsageError("--reason must say why")
    private = private_key(private_key_file, private_key_fd)
    config = selected_config()
    tokenizer = tokenizer_of(config)
    detail: dict[str, Any] | None = None
    columns: dict[str, str] = {}
    with checked_connect(config) as conn:
        if user_id is not None:
            selector = user_selector(config, tokenizer, user_id)
            found = user_tokens(conn, config, selector)
            detail = {"user": selector.recorded_as, "tokens_in_rows": len(found)}
            for column, token in found:
                columns.setdefault(token, column)
                wanted.append(token)
        results = do_reveal(
            conn,
            config,
            opener=Opener(private),
            tokenizer=tokenizer,
            tokens=wanted,
            reason=reason,
            note=note,
            detail=detail,
        )
    if as_json:
        echo_json([r.__dict__ for r in results])
    elif not results:
        click.echo("no tokens: that user has no rows" if user_id is not None else "no tokens")
    else:
        click.echo(
            table(
                ["token", "field", "value"],
                [
                    [
                        r.token,
                        r.field or "-",
                        r.value if r.value is not None else f"ERROR: {r.error}",
                    ]
                    for r in results
                ],
            )
        )
    if not results or any(r.error for r in results):
        sys.exit(1)


@click.command()
@click.argument("tokens", nargs=-1)
@TOKEN_FILE
@click.option("--user-id", default=None, help="Erase the masked values of this user's rows.")
@click.option(
    "--include-shared",
    is_flag=True,
    help="With --user-id: also erase values other users' rows hold (a shared ip or device).",
)
@REASON
@private_key_options(
    "With --user-id: also search the sealed rejected bodies for the user and erase them."
)
@NOTE
@click.option("--dry-run", is_flag=True, help="Say what would be erased; change nothing.")
@click.option("--json", "as_json", is_flag=True)
def forget(
    tokens: tuple[str, ...],
    file: TextIO | None,
    user_id: str | None,
    include_shared: bool,
    reason: str,
    private_key_file: Path | None,
    private_key_fd: int | None,
    note: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Erase values for good: their vault entries, their tokens and aliases.

    Every masked cell holding an erased token gets a random erasure marker instead (rows
    that shared the value share the marker); the audit row names vault entries by their
    random ids, never by token. The audit row and the erasure commit together. See
    docs/vault.md for shared values and rejected bodies. Exits 1 (after committing what it
    erased) if a rejected body sealed to the given key could not be opened, so was not
    searched for the user.
    """
    one_stdin(file, private_key_file)
    wanted = read_tokens(tokens, file)
    if not wanted and user_id is None:
        raise click.UsageError("give tokens, --file or --user-id")
    if include_shared and user_id is None:
        raise click.UsageError("--include-shared goes with --user-id")
    if not reason.strip():
        raise click.UsageError("--reason must say why")
    opener = None
    if user_id is not None and private_key_given(private_key_file, private_key_fd):
        opener = Opener(private_key(private_key_file, private_key_fd))
    config = selected_config()
    results: list[Erasure] = []
    searching = (
        progress("forget: rejected bodies searched")
        if opener is not None
        else contextlib.nullcontext(None)
    )
    try:
        with checked_connect(config) as conn, searching as bar:
            if wanted:
                results.append(
                    forget_tokens(
                        conn, config, tokens=wanted, reason=reason, note=note, dry_run=dry_run
                    )
                )
            if user_id is not None:
                results.append(
                    forget_user(
                        conn,
                        config,
                        selector=user_selector(config, tokenizer_of(config), user_id),
                        user_id=user_id,
                        include_shared=include_shared,
                        reason=reason,
                        note=note,
                        opener=opener,
                        dry_run=dry_run,
                        progress=bar,
                    )
                )
            # what no erasure reaches, and when it ages out: the flow's, then the database's
            unreached = pipeline_unreached(config) + storage.unreached(conn)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except Busy as exc:  # another erasure holds the lock: its login and pid are named
        raise click.ClickException(str(exc)) from None
    unopened = sum(len(r.rejected_unopened) for r in results)
    if as_json:
        echo_json([r.as_dict() for r in results])
        if unopened:
            sys.exit(1)
        return
    for r in results:
        verb = "would erase" if r.dry_run else "erased"
        click.echo(
            f"{verb} {len(r.erased)} vault entries"
            + (f" (audit row {r.audit_id})" if r.audit_id else "")
        )
        for token in r.erased:
            click.echo(f"  {token}")
        if not r.dry_run and (r.rows_rewritten or r.aliases_deleted):
            click.echo(
                f"replaced the tokens in {r.rows_rewritten} cells with erasure markers;"
                f" deleted {r.aliases_deleted} aliases"
            )
        if r.absent:
            click.echo(f"not in the vault (erased before, or never sealed): {len(r.absent)}")
        if r.shared_kept:
            click.echo(
                f"kept {len(r.shared_kept)} values other users' rows hold too"
                " (--include-shared erases them):"
            )
            for token in r.shared_kept:
                click.echo(f"  {token}")
        if user_id is not None:
            done = "to erase" if r.dry_run else "erased"
            click.echo(f"rejected bodies naming the user, {done}: {len(r.rejected_erased)}")
            if r.rejected_unsearched:
                click.echo(
                    f"rejected bodies not searched: {r.rejected_unsearched} (sealed; pass"
                    " --private-key-file with the key they are sealed to)"
                )
            if r.rejected_unopened:
                click.echo(
                    f"{len(r.rejected_unopened)} rejected bodies could not be opened, so were"
                    " not searched (sealed to this key for another message id, or corrupted;"
                    " they may name the user): " + ", ".join(r.rejected_unopened)
                )
    if not dry_run:
        for line in unreached:
            click.echo(line)
    if unopened:  # a check failed: the erasure is committed, but not known to be complete
        sys.exit(1)
