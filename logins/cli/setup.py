"""Setting up: keys, the config check, the schema migrations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

import click
import psycopg
import yaml

from connectors import preflight
from connectors.postgres.migrations import SchemaMismatch
from connectors.postgres.migrations import migrate as apply
from connectors.postgres.schema import table_schema
from connectors.postgres.schemaversion import SCHEMA_VERSION
from connectors.postgres.serverversion import UnsupportedServer
from logins.cli.common import EXIT_UNUSABLE, Unusable, connect, echo_json, selected_config
from logins.core import posture
from logins.core.config import AppConfig, ConfigError, describe, selected_files
from logins.core.keys import (
    KeyFileError,
    generate_keys,
    generate_token_key,
    load_vault_public_key,
    vault_fingerprint,
)
from logins.core.pipeline_keys import load_secrets


@click.command()
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
            raise Unusable(str(exc)) from None
        except OSError as exc:
            raise Unusable(_cannot_write(directory, exc)) from None
        return
    try:
        paths = generate_keys(directory)
    except KeyFileError as exc:
        raise Unusable(str(exc)) from None
    except OSError as exc:
        raise Unusable(_cannot_write(directory, exc)) from None
    for path in paths.values():
        click.echo(f"wrote {path}")
    fingerprint = vault_fingerprint(load_vault_public_key(paths["vault.pub"]))
    click.echo(f"vault.pub fingerprint: {fingerprint}")
    click.echo(
        "The pipeline needs token.key and vault.pub only. Move vault.key to whoever may "
        "reveal values; never deploy it with the pipeline. Pin vault.pub with "
        f"LOGINS_VAULT_PUBLIC_KEY_FINGERPRINT={fingerprint}. token.key is for development: "
        "whoever holds it can enumerate low-entropy values (every IPv4 address) offline; "
        "in production keep the token key in AWS KMS (docs/vault.md, Key custody)."
    )


def _cannot_write(directory: Path, exc: OSError) -> str:
    """A directory this user may not write: say who we are (the image runs as uid 10001)."""
    return (
        f"cannot write keys into {directory}: {exc.strerror} (this process runs as uid"
        f" {os.getuid()} and must be able to write there; the image runs as uid 10001: see"
        " docs/docker.md, 'Keys in a host directory')"
    )


@click.command()
@click.option(
    "--connect",
    is_flag=True,
    help="Also run the flow's start-up checks against SQS and PostgreSQL; one line per check,"
    " exit 2 if one fails.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object: ok, the files, every check (name, ok, detail), the keys, the"
    " resolved configuration (secrets hidden) and the error if one.",
)
def check(connect: bool, as_json: bool) -> None:
    """Validate the selected configuration and key files; print it with secrets hidden.

    Exit 0 when everything checked is usable, 2 when something is not."""
    checks: list[dict[str, Any]] = []

    def failed(name: str, detail: str) -> NoReturn:
        checks.append({"name": name, "ok": False, "detail": detail})
        if as_json:
            echo_json({"ok": False, "checks": checks, "error": detail})
            raise SystemExit(EXIT_UNUSABLE)
        if connect:
            _line(False, name, detail)
            raise SystemExit(EXIT_UNUSABLE)
        raise Unusable(detail)

    try:
        config = selected_config()
        files = [str(f) for f in selected_files()]
    except (Unusable, ConfigError) as exc:
        failed("config", exc.message if isinstance(exc, Unusable) else str(exc))
    try:
        table_schema(config)
    except ConfigError as exc:
        failed("config", str(exc))
    checks.append({"name": "config", "ok": True, "detail": " extends ".join(reversed(files))})
    try:
        secrets = load_secrets(config)
    except KeyFileError as exc:
        failed("keys", str(exc))
    active = secrets.tokenizer.active
    pinned = bool(config.vault.public_key_fingerprint)
    keys = (
        f"token key id {active.key_id} ({active.algorithm}, {active.custody}),"
        f" vault key id {secrets.sealer.key_id} ({secrets.sealer.fingerprint},"
        f" {'pinned' if pinned else 'not pinned'})"
    )
    checks.append({"name": "keys", "ok": True, "detail": keys})
    stance = posture.summary(config, posture.is_production(os.environ, selected_files()))
    checks.append({"name": "posture", "ok": True, "detail": "; ".join(stance)})
    outcomes = preflight.run(config, wait_seconds=0) if connect else []
    checks += [{"name": o.name, "ok": o.ok, "detail": o.detail} for o in outcomes]
    ok = all(c["ok"] for c in checks)
    if as_json:
        key_info = {
            "token_key_id": active.key_id,
            "token_algorithm": active.algorithm,
            "token_custody": active.custody,
            "vault_key_id": secrets.sealer.key_id,
            "vault_fingerprint": secrets.sealer.fingerprint,
            "vault_fingerprint_pinned": pinned,
        }
        error = next((c["detail"] for c in checks if not c["ok"]), None)
        echo_json(
            {"ok": ok, "files": files, "checks": checks, "keys": key_info,
             "posture": stance, "config": describe(config), "error": error}
        )  # fmt: skip
    elif connect:
        for c in checks:
            _line(c["ok"], c["name"], c["detail"])
    else:
        click.echo(yaml.safe_dump(describe(config), sort_keys=False).rstrip())
        click.echo("\n".join(f"# posture: {line}" for line in stance))
        click.echo(f"# ok: {keys}")
    if not ok:
        raise SystemExit(EXIT_UNUSABLE)


def _line(ok: bool, name: str, detail: str) -> None:
    click.echo(f"{'ok' if ok else 'FAIL':<5}{name:<10}{detail}")


@click.command()
def migrate() -> None:
    """Apply the idempotent schema migrations, roles and grants (as the owner or a superuser).

    Creates the NOLOGIN roles logins_owner, logins_pipeline, logins_analyst, logins_revealer,
    logins_eraser, logins_rotator and logins_auditor if missing, makes logins_owner the owner
    of every object, grants each role its part and records the schema version. Grant the
    roles to login users yourself (docs/vault.md#roles)."""
    config = selected_config()
    _table_schema(config)
    with connect(config) as conn:
        try:
            apply(conn, config)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise Unusable(
                f"cannot migrate as this login ({exc.diag.message_primary}): run it as a"
                " superuser the first time (it creates the roles), later as a member of"
                " logins_owner"
            ) from None
        except (SchemaMismatch, UnsupportedServer) as exc:
            raise Unusable(str(exc)) from None
    click.echo(f"migrations applied: schema version {SCHEMA_VERSION}, roles and grants in place")


def _table_schema(config: AppConfig) -> None:
    """The sink table's columns must follow from the declared fields (names, clashes)."""
    try:
        table_schema(config)
    except ConfigError as exc:
        raise Unusable(str(exc)) from None
