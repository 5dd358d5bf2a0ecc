"""`logins audit list|verify|anchor|keygen`: the hash-chained trail of vault actions, and
its head signed and kept outside the database (logins/core/anchor.py)."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from logins.cli.common import echo_json, selected_config, table
from logins.cli.session import checked_connect
from logins.core import anchor as anchors
from logins.core import audit as audit_trail


@click.group()
def audit() -> None:
    """The audit trail of vault actions (append-only, hash-chained)."""


@audit.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
def audit_list(limit: int, as_json: bool) -> None:
    """The latest audit rows, newest first."""
    config = selected_config()
    with checked_connect(config) as conn:
        found = audit_trail.latest(conn, config, limit)
    if as_json:
        echo_json([r.as_dict() for r in found])
        return
    click.echo(
        table(
            ["id", "at", "actor", "action", "tokens", "ok", "failed", "reason", "note", "detail"],
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
                    r.note or "",
                    "" if r.detail is None else json.dumps(r.detail, sort_keys=True),
                ]
                for r in found
            ],
        )
    )


_ID_HASH = re.compile(r"\d+:")
S3_ENDPOINT = click.option(
    "--s3-endpoint-url",
    envvar="LOGINS_S3_ENDPOINT_URL",
    default=None,
    help="An S3 endpoint other than AWS's (also LOGINS_S3_ENDPOINT_URL).",
)


def _id_hash(value: str) -> tuple[int, str]:
    row_id, _, digest = value.partition(":")
    if not row_id.isdigit() or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
        raise click.BadParameter(f"{value!r} is not ID:SHA256HEX (as `audit verify` prints)")
    return int(row_id), digest.lower()


def _recorded_heads(
    anchors_given: tuple[str, ...],
    public_key_file: Path | None,
    endpoint: str | None,
    table: str,
    at_least: int | None,
    allow_unlocked: bool,
    notes: list[str],
) -> dict[int, str]:
    """ID:HASH anchors as given; signed anchors (a file or s3://) once their signature holds,
    each the newest of the anchors stored beside it (every version under its S3 prefix, the
    files of its directory), whose heads must all still be in the chain too. On S3 each
    anchor version relied on must be under Object Lock retention (else exit 1, unless
    `allow_unlocked`); a file adds to `notes` that it is only as safe as its directory."""
    heads: dict[int, list[str]] = {}
    key = None
    for value in anchors_given:
        if _ID_HASH.match(value):
            row_id, digest = _id_hash(value)
            heads.setdefault(row_id, []).append(digest)
            continue
        if public_key_file is None:
            raise click.UsageError(
                f"--anchor {value}: a signed anchor needs --anchor-public-key-file"
            )
        try:
            key = key or anchors.load_verify_key(public_key_file)
            head = anchors.parse(anchors.read(value, endpoint_url=endpoint), key, value)
            found = anchors.history(value, key, endpoint_url=endpoint)
            unlocked, found_notes = anchors.lock_problems(head, value, found, endpoint_url=endpoint)
        except anchors.AnchorError as exc:
            raise click.ClickException(str(exc)) from None
        if head.table != table:
            raise click.ClickException(
                f"anchor {value}: anchors table {head.table!r}, not {table!r}"
            )
        problems = anchors.replay_problems(head, value, found, at_least)
        for problem in problems:
            click.echo(f"TAMPERED: {problem}", err=True)
        notes += found_notes
        for problem in unlocked:
            if allow_unlocked:
                click.echo(f"warning: {problem} (accepted: --allow-unlocked)", err=True)
            else:
                click.echo(f"NOT LOCKED: {problem}; --allow-unlocked accepts that", err=True)
        if problems or (unlocked and not allow_unlocked):
            sys.exit(1)
        for item in [*found, anchors.Found(value, head)]:
            if (item.head.table, item.head.database) == (head.table, head.database):
                heads.setdefault(item.head.id, []).append(item.head.row_hash)
    disagree = sorted(row_id for row_id, digests in heads.items() if len(set(digests)) > 1)
    if disagree:
        raise click.ClickException(f"two anchors disagree about row {disagree[0]}")
    return {row_id: digests[0] for row_id, digests in heads.items()}


@audit.command("verify")
@click.option(
    "--anchor",
    "anchors_given",
    multiple=True,
    help="A head recorded earlier: ID:HASH as verify prints it, or a signed anchor (a file or"
    " s3://bucket/key written by `audit anchor`). It must still be in the chain.",
)
@click.option(
    "--anchor-public-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LOGINS_AUDIT_ANCHOR_PUBLIC_KEY_FILE",
    default=None,
    help="The auditor's audit-anchor.pub: signed anchors must verify with it.",
)
@click.option(
    "--at-least",
    type=click.IntRange(min=1),
    default=None,
    help="The sequence number of the newest anchor you know of: a signed anchor older than"
    " it is refused (a replay).",
)
@click.option(
    "--allow-unlocked",
    is_flag=True,
    help="Accept S3 anchor versions that are not under Object Lock (COMPLIANCE) retention,"
    " with a warning; without it they fail verification.",
)
@S3_ENDPOINT
@click.option("--json", "as_json", is_flag=True)
def audit_verify(
    anchors_given: tuple[str, ...],
    anchor_public_key_file: Path | None,
    at_least: int | None,
    allow_unlocked: bool,
    s3_endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Recompute the hash chain. Exit 1 naming the first edited, deleted or inserted row, the
    anchored row a rewrite removed or changed, an anchor older than the newest stored beside
    it (a replay), an S3 anchor version not under Object Lock retention (unless
    --allow-unlocked), or, against an anchor, rows missing after the last one."""
    config = selected_config()
    notes: list[str] = []
    recorded = _recorded_heads(
        anchors_given,
        anchor_public_key_file,
        s3_endpoint_url,
        config.vault.audit_table,
        at_least,
        allow_unlocked,
        notes,
    )
    with checked_connect(config) as conn:
        result = audit_trail.verify(conn, config, recorded)
    if recorded and result.ok and result.warnings:
        # Against an anchor, a sequence ahead of the last row is rows missing after the
        # anchored head (or an audit insert rolled back: the next audit row clears that).
        result.problem = f"rows are missing after the anchored head: {'; '.join(result.warnings)}"
    if as_json:
        echo_json(result.as_dict())
    else:
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)
        if result.ok:
            click.echo(
                f"ok: {result.rows} rows; head {result.head_id}:{result.head_hash}"
                if result.head_id is not None
                else f"ok: {result.rows} rows, none hash-chained yet"
            )
        else:
            click.echo(f"TAMPERED: {result.problem}", err=True)
    for note in notes:  # after the verdict: it changes nothing in it
        click.echo(f"note: {note}", err=True)
    if not result.ok:
        sys.exit(1)


@audit.command("keygen")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def audit_keygen(directory: Path) -> None:
    """Write the auditor's anchor signing key (audit-anchor.key) and its public key."""
    try:
        paths = anchors.generate_keys(directory)
    except anchors.AnchorError as exc:
        raise click.ClickException(str(exc)) from None
    for path in paths.values():
        click.echo(f"wrote {path}")
    click.echo(
        "Keep audit-anchor.key with the auditor, away from the database's administrators;"
        " verifiers need audit-anchor.pub."
    )


@audit.command("anchor")
@click.option(
    "--signing-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LOGINS_AUDIT_ANCHOR_KEY_FILE",
    required=True,
    help="The auditor's audit-anchor.key from `logins audit keygen`"
    " (also LOGINS_AUDIT_ANCHOR_KEY_FILE).",
)
@click.option(
    "--to",
    "targets",
    multiple=True,
    required=True,
    help="Where: a new file, or s3://bucket/key in a bucket with Object Lock (the object gets"
    " COMPLIANCE retention).",
)
@click.option(
    "--allow-unlocked",
    is_flag=True,
    help="Also write to an S3 bucket without Object Lock (its owner can delete or replace the"
    " anchor); refused without it.",
)
@click.option(
    "--retain-days",
    default=400,
    show_default=True,
    type=click.IntRange(1, 36500),
    help="S3 Object Lock (COMPLIANCE) retention of the anchor object.",
)
@S3_ENDPOINT
def audit_anchor(
    signing_key_file: Path,
    targets: tuple[str, ...],
    allow_unlocked: bool,
    retain_days: int,
    s3_endpoint_url: str | None,
) -> None:
    """Verify the chain, then write its head, signed, outside the database. An S3 bucket
    without Object Lock is refused (before anything is written) unless --allow-unlocked."""
    try:
        key = anchors.load_signing_key(signing_key_file)
        for target in targets:
            anchors.check_target(
                target, allow_unlocked=allow_unlocked, endpoint_url=s3_endpoint_url
            )
    except anchors.AnchorError as exc:
        raise click.ClickException(str(exc)) from None
    config = selected_config()
    table = config.vault.audit_table
    with checked_connect(config) as conn:
        got = conn.execute("SELECT current_database()").fetchone()
        database = str(got[0]) if got else ""
        try:
            before = anchors.previous(
                list(targets), key.verify_key, table, database, s3_endpoint_url
            )
        except anchors.AnchorError as exc:
            raise click.ClickException(str(exc)) from None
        result = audit_trail.verify(
            conn, config, {before.head.id: before.head.row_hash} if before else None
        )
    if not result.ok:
        click.echo(f"TAMPERED: {result.problem}; not anchoring a broken chain", err=True)
        sys.exit(1)
    if result.head_id is None or result.head_hash is None:
        raise click.ClickException("no hash-chained audit row yet: nothing to anchor")
    head = anchors.Head(
        table=table,
        database=database,
        id=result.head_id,
        row_hash=result.head_hash,
        rows=result.rows,
        at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seq=before.head.seq + 1 if before else 1,
        prev=before.head.digest() if before else None,
    )
    document = anchors.sign(head, key)
    for target in targets:
        try:
            where = anchors.write(
                document,
                target,
                retain_days=retain_days,
                endpoint_url=s3_endpoint_url,
                allow_unlocked=allow_unlocked,
            )
        except anchors.AnchorError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"anchored head {head.id}:{head.row_hash} to {where} (anchor #{head.seq})")
