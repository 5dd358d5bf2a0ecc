"""What the `logins` commands share: the selected config, connections, key loading, token
input, output (tables, JSON) and the exit codes. No command lives here.

Every command exits 0 when it did what it was asked, 1 when it ran and found a failure (a
check or a test case failed, a value was not found, some rows could not be processed), 2 when
it could not run: unusable configuration or environment (config, keys, a service that is
unreachable or refuses, a schema to migrate, a port in use) or bad usage (click's own 2).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click
import psycopg
from nacl.public import PrivateKey

from logins.core.config import AppConfig, ConfigError, load_config
from logins.core.keys import KeyFileError, load_vault_private_key, read_private_key_fd
from logins.core.pipeline_keys import load_tokenizer
from logins.core.tokens import Tokenizer

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2


class Unusable(click.ClickException):
    """The command cannot run: the configuration or the environment is unusable (exit 2)."""

    exit_code = EXIT_UNUSABLE


def selected_config() -> AppConfig:
    try:
        return load_config()
    except ConfigError as exc:
        raise Unusable(str(exc)) from None


# The key settings a configuration must name to load. A command that holds no key (`test`
# makes throwaway ones, `generate` needs only the queue) never reads them, so where they are
# unset a placeholder stands in.
_KEYS_NOT_READ = "(not read by this command)"


def config_without_keys() -> AppConfig:
    """The selected configuration for a command that reads no key: loadable where the key
    files are not set (a developer's machine, a CI job, a seeding container)."""
    env = dict(os.environ)
    if not env.get("LOGINS_TOKEN_KEY_FILE") and not env.get("LOGINS_TOKEN_KMS_KEY_ID"):
        env["LOGINS_TOKEN_KEY_FILE"] = _KEYS_NOT_READ
    if not env.get("LOGINS_VAULT_PUBLIC_KEY_FILE"):
        env["LOGINS_VAULT_PUBLIC_KEY_FILE"] = _KEYS_NOT_READ
    try:
        return load_config(env)
    except ConfigError as exc:
        raise Unusable(str(exc)) from None


def connect(config: AppConfig) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            config.sink.dsn.get_secret_value(), autocommit=True, connect_timeout=10
        )
    except psycopg.OperationalError as exc:
        raise Unusable(f"cannot connect to the database: {exc}") from None


def private_key_given(private_key_file: Path | None, private_key_fd: int | None) -> bool:
    return private_key_file is not None or private_key_fd is not None


def private_key(private_key_file: Path | None, private_key_fd: int | None) -> PrivateKey:
    """The vault private key: a file only its owner may read, `-` (stdin) or an open file
    descriptor. Never the environment (it shows in /proc/PID/environ and `docker inspect`),
    never the configuration."""
    if private_key_file is not None and private_key_fd is not None:
        raise click.UsageError("give --private-key-file or --private-key-fd, not both")
    try:
        if private_key_file is not None:
            return load_vault_private_key(private_key_file)
        if private_key_fd is not None:
            return read_private_key_fd(private_key_fd)
    except KeyFileError as exc:
        raise Unusable(str(exc)) from None
    raise click.UsageError(
        "the vault private key is required: --private-key-file F ('-' for stdin)"
        " or --private-key-fd N"
    )


def one_stdin(*uses: Path | TextIO | None) -> None:
    """Refuse two inputs that would both read standard input."""
    stdin = [
        u for u in uses if u is not None and (str(u) == "-" or getattr(u, "name", "") == "<stdin>")
    ]
    if len(stdin) > 1:
        raise click.UsageError("only one input can come from stdin ('-')")


def tokenizer_of(config: AppConfig) -> Tokenizer:
    try:
        return load_tokenizer(config.tokens)
    except KeyFileError as exc:
        raise Unusable(str(exc)) from None


def read_tokens(tokens: tuple[str, ...], file: TextIO | None) -> list[str]:
    found = list(tokens)
    if file is not None:
        for line in file:
            line = line.strip()
            if line and not line.startswith("#"):
                found.append(line)
    return found


def printable(text: str) -> str:
    """A value as shown in a table: control and other invisible characters escaped, so a
    value cannot move the cursor, recolour the terminal or hide behind spacing."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def counts(by_name: dict[str, int]) -> str:
    """`{"ip": 6, "device_id": 5}` as text: "ip 6, device_id 5" ("none" when empty)."""
    return ", ".join(f"{printable(name)} {count}" for name, count in by_name.items()) or "none"


def table(headers: list[str], rows: list[list[str]]) -> str:
    cells = [headers, *[[printable(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


TOKEN_FILE = click.option(
    "--file",
    "file",
    type=click.File("r"),
    default=None,
    help="Read tokens from this file, one per line ('-' for stdin; # comments).",
)
F = TypeVar("F", bound=Callable[..., Any])


def private_key_options(help_text: str) -> Callable[[F], F]:
    """--private-key-file F ('-' for stdin) and --private-key-fd N."""

    def decorate(command: F) -> F:
        command = click.option(
            "--private-key-fd",
            type=click.IntRange(min=0),
            default=None,
            help="Read the vault private key from this open file descriptor (e.g. 3 3<key).",
        )(command)
        return click.option(
            "--private-key-file",
            type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
            help=f"{help_text} A file only its owner may read (chmod 600), or '-' for stdin.",
        )(command)

    return decorate


PRIVATE_KEY = private_key_options("The vault's private key.")
REASON = click.option("--reason", required=True, help="Why; recorded in the audit table.")


def echo_json(value: Any) -> None:
    """Print `value` as indented JSON (every command's --json output)."""
    click.echo(json.dumps(value, indent=2))


def report_batches(result: Any, as_json: bool, summary: str) -> None:
    """A batch command's end (rotate, rekey): its result as JSON, or `summary` and each failure
    a line; exit 1 if any entry failed (the exit rule: a check failed)."""
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo(summary)
        for failure in result.failures:
            click.echo(f"  {failure}")
    if result.failed:
        raise SystemExit(1)
