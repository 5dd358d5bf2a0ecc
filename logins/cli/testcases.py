"""`logins test FILE...`: run a configuration's offline test cases (format: logins/cli/cases.py,
docs/operations.md#testing-a-configuration-offline-logins-test)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from logins.cli.cases import CaseFileError, CaseResult, Runner
from logins.cli.common import EXIT_FAILED, Unusable, config_without_keys, printable
from logins.core.config import ConfigError


@click.command("test")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def test(files: tuple[Path, ...]) -> None:
    """Run the test cases in FILES through the configured validate, dedupe and mask steps,
    offline: no SQS, no PostgreSQL, a throwaway token key and vault key.

    Each case gives a message and what it must become: a row (only the columns named are
    compared; `{token_of: VALUE}` is the token of VALUE), a rejection with its reason, or a
    duplicate of an earlier case. Exit 0 if all pass, 1 if one fails (each failing case
    shows what it expected and what it got, side by side), 2 if a file is malformed."""
    config = config_without_keys()
    try:
        runner = Runner(config)
    except ConfigError as exc:
        raise Unusable(str(exc)) from None
    results: list[CaseResult] = []
    for path in files:
        try:
            results += runner.run(path)
        except CaseFileError as exc:
            raise Unusable(str(exc)) from None
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    for result in results:
        _show(console, result)
    failed = sum(not r.passed for r in results)
    console.print(
        Text(f"{len(results) - failed} passed, {failed} failed ({', '.join(map(str, files))})")
    )
    if failed:
        sys.exit(EXIT_FAILED)


def _show(console: Console, result: CaseResult) -> None:
    name = printable(result.case.name)
    if result.passed:
        console.print(Text(f"ok    {name}"))
        return
    console.print(Text(f"FAIL  {name}  ({result.file})"))
    table = Table(box=box.SIMPLE, pad_edge=False, show_edge=False)
    for header in ("", "expected", "actual"):
        table.add_column(header, overflow="fold")
    for difference in result.differences:
        table.add_row(
            *(
                Text(printable(cell))
                for cell in (difference.what, difference.expected, difference.actual)
            )
        )
    console.print(table)
