"""The `logins` command: keys, config check, migrations, sample data, stats, demo, and the
vault's operations (reveal, forget, audit, rotate, vault rekey/status).

click, because it gives subcommands, --help, typed options and clean errors with no code
of ours; every command takes the same LOGINS_ENV / LOGINS_CONFIG selection as the flow.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import click
import psycopg
import yaml
from nacl.public import PrivateKey

from logins.config import AppConfig, ConfigError, describe, load_config
from logins.keys import (
    KeyFileError,
    generate_keys,
    generate_token_key,
    load_token_keys,
    load_vault_private_key,
    private_key_from_text,
)
from logins.tokens import Tokenizer


def _config() -> AppConfig:
    try:
        return load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _connect(config: AppConfig) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            config.sink.dsn.get_secret_value(), autocommit=True, connect_timeout=10
        )
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot connect to the database: {exc}") from None


@click.group()
def main() -> None:
    """logins-etl: user logins from SQS into PostgreSQL with the PII tokenised and vaulted.

    The configuration is chosen like the flow's: LOGINS_ENV (default local) or LOGINS_CONFIG.
    """


@main.command()
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
    click.echo(
        "The pipeline needs token.key and vault.pub only. Move vault.key to whoever may "
        "reveal values; never deploy it with the pipeline."
    )


@main.command()
def check() -> None:
    """Validate the selected configuration and key files; print it with secrets hidden."""
    from flows.builder import load_secrets

    config = _config()
    try:
        secrets = load_secrets(config)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(yaml.safe_dump(describe(config), sort_keys=False).rstrip())
    click.echo(
        f"# ok: token key id {secrets.tokenizer.key_id}, vault key id {secrets.sealer.key_id}"
    )


@main.command()
def migrate() -> None:
    """Apply the idempotent schema migrations (the flow also does this at start)."""
    from connectors.migrations import migrate as apply

    config = _config()
    with _connect(config) as conn:
        apply(conn, config)
    click.echo("migrations applied")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def stats(as_json: bool) -> None:
    """Counts: rows written, rejected by reason, duplicates, vault entries."""
    from logins.stats import collect

    config = _config()
    with _connect(config) as conn:
        result = collect(conn, config)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
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
    click.echo(f"vault entries      : {result.vault_entries} {result.vault_by_field}")


def _private_key(private_key_file: Path | None) -> PrivateKey:
    """The vault private key: --private-key-file, else LOGINS_VAULT_PRIVATE_KEY (the file's
    content). Never from the configuration."""
    try:
        if private_key_file is not None:
            return load_vault_private_key(private_key_file)
        if os.environ.get("LOGINS_VAULT_PRIVATE_KEY"):
            return private_key_from_text(os.environ["LOGINS_VAULT_PRIVATE_KEY"])
    except (KeyFileError, ValueError) as exc:
        raise click.ClickException(f"vault private key: {exc}") from None
    raise click.UsageError("--private-key-file or LOGINS_VAULT_PRIVATE_KEY is required")


def _tokenizer(config: AppConfig) -> Tokenizer:
    try:
        return Tokenizer(load_token_keys(config.tokens.key_file))
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None


def _vault_connect(config: AppConfig) -> psycopg.Connection[Any]:
    """A connection for a vault command, once the schema has what this version needs."""
    from logins.vaultschema import tables

    conn = _connect(config)
    t = tables(config)
    missing = [
        name
        for name, present in conn.execute(
            "SELECT x, to_regclass(quote_ident(x)) IS NOT NULL FROM unnest(%s::text[]) x",
            ([t.vault, t.audit, t.aliases, t.erasures, t.rejected, t.sink],),
        )
        if not present
    ]
    chained = conn.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(quote_ident(%s))"
        " AND attname IN ('row_hash', 'prev_hash', 'detail') AND NOT attisdropped",
        (t.audit,),
    ).fetchone()
    if missing or not chained or chained[0] != 3:
        conn.close()
        raise click.ClickException(
            f"the database schema is older than this command (missing: {missing or t.audit});"
            " run `logins migrate` (or start the flow) first"
        )
    return conn


def _read_tokens(tokens: tuple[str, ...], file: TextIO | None) -> list[str]:
    found = list(tokens)
    if file is not None:
        for line in file:
            line = line.strip()
            if line and not line.startswith("#"):
                found.append(line)
    return found


def _printable(text: str) -> str:
    """A value as shown in a table: control and other invisible characters escaped, so a
    value cannot move the cursor, recolour the terminal or hide behind spacing."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    cells = [headers, *[[_printable(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _actor(actor: str | None) -> str:
    from logins.reveal import default_actor

    return actor or default_actor()


_TOKEN_FILE = click.option(
    "--file",
    "file",
    type=click.File("r"),
    default=None,
    help="Read tokens from this file, one per line ('-' for stdin; # comments).",
)
_PRIVATE_KEY = click.option(
    "--private-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The vault's private key. Or set LOGINS_VAULT_PRIVATE_KEY to the key file's content.",
)
_ACTOR = click.option("--actor", default=None, help="Who asks (default: the OS user).")
_REASON = click.option("--reason", required=True, help="Why; recorded in the audit table.")


@main.command()
@click.argument("tokens", nargs=-1)
@_TOKEN_FILE
@click.option("--user-id", default=None, help="Every masked value in this user's rows.")
@_REASON
@_PRIVATE_KEY
@_ACTOR
@click.option("--json", "as_json", is_flag=True, help="Exact values as JSON.")
def reveal(
    tokens: tuple[str, ...],
    file: TextIO | None,
    user_id: str | None,
    reason: str,
    private_key_file: Path | None,
    actor: str | None,
    as_json: bool,
) -> None:
    """Print the original values of TOKENS (audited; each value checked against its token).

    Tokens come from the arguments, --file, and/or --user-id (every masked column of that
    user's rows in the sink table). The audit row is committed before anything is shown.
    Exits 1 if any token could not be revealed.
    """
    from logins.reveal import reveal as do_reveal
    from logins.reveal import user_selector, user_tokens
    from logins.vault import Opener

    wanted = _read_tokens(tokens, file)
    if not wanted and user_id is None:
        raise click.UsageError("give tokens, --file or --user-id")
    if not reason.strip():
        raise click.UsageError("--reason must say why")
    private = _private_key(private_key_file)
    config = _config()
    tokenizer = _tokenizer(config)
    detail: dict[str, Any] | None = None
    columns: dict[str, str] = {}
    with _vault_connect(config) as conn:
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
            actor=_actor(actor),
            detail=detail,
        )
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in results], indent=2))
    elif not results:
        click.echo("no tokens: that user has no rows" if user_id is not None else "no tokens")
    else:
        click.echo(
            _table(
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


@main.command()
@click.argument("tokens", nargs=-1)
@_TOKEN_FILE
@click.option("--user-id", default=None, help="Erase the masked values of this user's rows.")
@click.option(
    "--include-shared",
    is_flag=True,
    help="With --user-id: also erase values other users' rows hold (a shared ip or device).",
)
@_REASON
@click.option(
    "--private-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --user-id: also search the sealed rejected bodies for the user and erase them."
    " Or LOGINS_VAULT_PRIVATE_KEY.",
)
@_ACTOR
@click.option("--dry-run", is_flag=True, help="Say what would be erased; change nothing.")
@click.option("--json", "as_json", is_flag=True)
def forget(
    tokens: tuple[str, ...],
    file: TextIO | None,
    user_id: str | None,
    include_shared: bool,
    reason: str,
    private_key_file: Path | None,
    actor: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Erase vault entries for good: the tokens stay in the tables, the values are gone.

    The audit row and the deletion commit together. Erased tokens are tombstoned, so the
    pipeline does not seal those values again (under the same token key). See
    docs/vault.md for shared values and rejected bodies.
    """
    from logins.erasure import Erasure, forget_tokens, forget_user
    from logins.reveal import user_selector
    from logins.vault import Opener

    wanted = _read_tokens(tokens, file)
    if not wanted and user_id is None:
        raise click.UsageError("give tokens, --file or --user-id")
    if include_shared and user_id is None:
        raise click.UsageError("--include-shared goes with --user-id")
    if not reason.strip():
        raise click.UsageError("--reason must say why")
    opener = None
    if user_id is not None and (private_key_file or os.environ.get("LOGINS_VAULT_PRIVATE_KEY")):
        opener = Opener(_private_key(private_key_file))
    config = _config()
    who = _actor(actor)
    results: list[Erasure] = []
    try:
        with _vault_connect(config) as conn:
            if wanted:
                results.append(
                    forget_tokens(
                        conn, config, tokens=wanted, reason=reason, actor=who, dry_run=dry_run
                    )
                )
            if user_id is not None:
                results.append(
                    forget_user(
                        conn,
                        config,
                        selector=user_selector(config, _tokenizer(config), user_id),
                        user_id=user_id,
                        include_shared=include_shared,
                        reason=reason,
                        actor=who,
                        opener=opener,
                        dry_run=dry_run,
                    )
                )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
        return
    for r in results:
        verb = "would erase" if r.dry_run else "erased"
        click.echo(
            f"{verb} {len(r.erased)} vault entries"
            + (f" (audit row {r.audit_id})" if r.audit_id else "")
        )
        for token in r.erased:
            click.echo(f"  {token}")
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


@main.group()
def audit() -> None:
    """The audit trail of vault actions (append-only, hash-chained)."""


@audit.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
def audit_list(limit: int, as_json: bool) -> None:
    """The latest audit rows, newest first."""
    from logins import audit as trail

    config = _config()
    with _vault_connect(config) as conn:
        found = trail.latest(conn, config, limit)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in found], indent=2))
        return
    click.echo(
        _table(
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
    from logins import audit as trail

    recorded = dict(_anchor(a) for a in anchors)
    config = _config()
    with _vault_connect(config) as conn:
        result = trail.verify(conn, config, recorded)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
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


@main.group()
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
    from logins.keys import prepend_token_key

    path = token_key_file or _config().tokens.key_file
    try:
        key = prepend_token_key(path)
    except (KeyFileError, OSError) as exc:
        raise click.ClickException(f"cannot rotate {path}: {exc}") from None
    click.echo(f"new active token key {key.key_id} in {path}; the old keys stay for verifying")
    click.echo("next: restart the pipelines with this file, then `logins rotate run --reason ...`")


@rotate.command("run")
@_REASON
@_PRIVATE_KEY
@_ACTOR
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True)
def rotate_run(
    reason: str, private_key_file: Path | None, actor: str | None, batch_size: int, as_json: bool
) -> None:
    """Give every vault entry under an old token key its token under the active key, with an
    alias row old -> new. Resumable: stop and start it again at any time."""
    from logins.rotation import rotate_tokens
    from logins.vault import Opener

    private = _private_key(private_key_file)
    config = _config()
    tokenizer = _tokenizer(config)
    if len(tokenizer.key_ids) < 2:
        raise click.ClickException(
            f"{config.tokens.key_file} holds one key: run `logins rotate new-key` first"
        )
    with _vault_connect(config) as conn:
        result = rotate_tokens(
            conn,
            config,
            opener=Opener(private),
            tokenizer=tokenizer,
            reason=reason,
            actor=_actor(actor),
            batch_size=batch_size,
            progress=None if as_json else lambda m: click.echo(m, err=True),
        )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(
            f"rotated {result.rotated} vault entries to token key {result.to_key_id};"
            f" failed {result.failed}; still to rotate {result.remaining}"
        )
        for failure in result.failures:
            click.echo(f"  {failure}")
    if result.failed:
        sys.exit(1)


@main.group()
def vault() -> None:
    """The vault: status, and re-sealing to a new key pair (rekey)."""


@vault.command("status")
@click.option("--json", "as_json", is_flag=True)
def vault_status(as_json: bool) -> None:
    """Entries by token key / vault key, aliases, erasures, what a rotation still has to do."""
    from logins.rotation import status

    config = _config()
    active = _tokenizer(config).key_id if config.tokens.key_file.exists() else None
    with _vault_connect(config) as conn:
        result = status(conn, config, active)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo("vault entries by token key / vault key:")
    for keys, count in result.entries_by_keys.items():
        click.echo(f"  {keys:<20} {count}")
    click.echo(f"rejected bodies by vault key: {result.rejected_by_vault_key}")
    click.echo(f"rejected bodies erased      : {result.rejected_bodies_erased}")
    click.echo(f"token aliases               : {result.aliases}")
    click.echo(f"erased tokens               : {result.erasures}")
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
@_REASON
@_ACTOR
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True)
def vault_rekey(
    old_private_key_file: Path,
    new_public_key_file: Path,
    reason: str,
    actor: str | None,
    batch_size: int,
    as_json: bool,
) -> None:
    """Re-seal every vault entry and sealed rejected body from the old key pair to the new
    public key. Resumable: only rows still sealed to the old key are touched."""
    from logins.keys import load_vault_public_key
    from logins.rotation import rekey
    from logins.vault import Opener

    try:
        old = Opener(load_vault_private_key(old_private_key_file))
        new = load_vault_public_key(new_public_key_file)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    config = _config()
    try:
        with _vault_connect(config) as conn:
            result = rekey(
                conn,
                config,
                old=old,
                new_public=new,
                reason=reason,
                actor=_actor(actor),
                batch_size=batch_size,
                progress=None if as_json else lambda m: click.echo(m, err=True),
            )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(
            f"re-sealed {result.vault_rekeyed} vault entries and {result.rejected_rekeyed}"
            f" rejected bodies from vault key {result.from_key_id} to {result.to_key_id};"
            f" failed {result.failed}; still sealed to the old key: {result.remaining_vault}"
            f" entries, {result.remaining_rejected} rejected bodies"
        )
        for failure in result.failures:
            click.echo(f"  {failure}")
    if result.failed:
        sys.exit(1)


@main.command()
@click.option("-n", "--count", default=500, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--queue-url", default=None, help="Send to this queue (else print JSON lines).")
@click.option("--endpoint-url", default=None, help="SQS endpoint (LocalStack, moto).")
@click.option("--region", envvar="AWS_REGION", default="us-east-1", show_default=True)
def generate(
    count: int, seed: int, queue_url: str | None, endpoint_url: str | None, region: str
) -> None:
    """Realistic sample logins: repeats, a few % malformed, some resends."""
    from logins.generator import iter_messages
    from logins.seed import send_bodies

    messages = iter_messages(count, seed=seed)
    if queue_url is None:
        for message in messages:
            click.echo(message.body)
        return
    import boto3

    client = boto3.client("sqs", endpoint_url=endpoint_url, region_name=region)
    sent = send_bodies(client, queue_url, (m.body for m in messages))
    click.echo(f"sent {len(sent)} messages to {queue_url}")


@main.command()
@click.option("-n", "--count", default=500, show_default=True, help="Messages to seed.")
@click.option("--workers", default=2, show_default=True)
@click.option("--seed", default=1, show_default=True)
def demo(count: int, workers: int, seed: int) -> None:
    """Start an SQS server and a PostgreSQL, seed sample logins, run the flow, report."""
    from logins.demo import run_demo

    sys.exit(run_demo(count=count, workers=workers, seed=seed))
