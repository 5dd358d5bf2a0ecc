"""`logins tokenize`: the token the pipeline writes for a value, so an investigator can ask
"did this ip log in?" of the analysts' table without the vault and without its private key.

The same computation as the flow: the value is checked as the validate step checks it (a
value the pipeline would reject has no token in any table; values are never normalised),
then tokenised by the configured token key (the key file, or GenerateMac calls to the KMS
key: with KMS, every value asked for is a call in KMS's log).
"""

from __future__ import annotations

import sys
from typing import TextIO

import click

from flows.steps.validate import Invalid, check_value
from logins.cli.common import selected_config, tokenizer_of
from logins.core.tokens import Tokenizer
from logins.core.vaultschema import tables


def _lines(file: TextIO) -> list[str]:
    """A file's values, one per line: only the line ending is removed (a value may hold
    spaces or a '#')."""
    return [line.rstrip("\r\n") for line in file]


@click.command()
@click.option("--field", required=True, help="A masked field of the configuration (ip, ...).")
@click.argument("values", nargs=-1)
@click.option(
    "--file",
    "file",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help="Read values from this file, one per line ('-' for stdin).",
)
@click.option(
    "--all-keys",
    is_flag=True,
    help="Print the value's token under every configured key (active first, tab-separated):"
    " rows written before a rotation hold the old one.",
)
def tokenize(field: str, values: tuple[str, ...], file: TextIO | None, all_keys: bool) -> None:
    """Print the token of each VALUE, one per line in the order given (arguments, then --file).

    A value the pipeline would reject (say an ip that is not an IP address) gets an empty
    line and an error on stderr naming its position, and the exit status is 1.
    """
    config = selected_config()
    masked = tables(config).masked
    if field not in masked:
        raise click.UsageError(
            f"--field {field!r} is not masked by this configuration (masked: {sorted(masked)})"
        )
    wanted = [*values, *(_lines(file) if file is not None else [])]
    if not wanted:
        raise click.UsageError("give values, or --file")
    spec = config.validate_step.fields[field]
    checked: list[str | None] = []
    for position, value in enumerate(wanted, 1):
        try:
            checked.append(check_value(field, spec, value))
        except Invalid as invalid:  # the detail names the field, never the value
            click.echo(f"value {position}: {invalid.rejection.detail}", err=True)
            checked.append(None)
    tokenizer = tokenizer_of(config)
    for line in _tokens(tokenizer, field, checked, all_keys):
        click.echo(line)
    if any(v is None for v in checked):
        sys.exit(1)


def _tokens(
    tokenizer: Tokenizer, field: str, values: list[str | None], all_keys: bool
) -> list[str]:
    good = [v for v in values if v is not None]
    if all_keys:
        found = ["\t".join(tokenizer.tokens_all_keys(field, v)) for v in good]
    else:
        found = tokenizer.tokens([(field, v) for v in good])  # one batch: concurrent with KMS
    answers = iter(found)
    return [next(answers) if v is not None else "" for v in values]
