"""Shell completion as docs/operations.md tells an operator to enable it: click's own
`_LOGINS_COMPLETE=bash_source|zsh_source logins`, then completing a command and an option."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from logins.cli import main


def complete(env: dict[str, str]) -> str:
    result = CliRunner().invoke(main, [], prog_name="logins", env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_completion_script_is_printed_for_bash_and_zsh(shell: str) -> None:
    script = complete({"_LOGINS_COMPLETE": f"{shell}_source"})
    assert "_logins_completion" in script
    assert "_LOGINS_COMPLETE" in script


def test_completing_a_command_name_and_an_option() -> None:
    offered = complete(
        {"_LOGINS_COMPLETE": "bash_complete", "COMP_WORDS": "logins ru", "COMP_CWORD": "1"}
    )
    assert offered.splitlines() == ["plain,run"]
    offered = complete(
        {"_LOGINS_COMPLETE": "bash_complete", "COMP_WORDS": "logins run --metrics-p",
         "COMP_CWORD": "2"}
    )  # fmt: skip
    assert offered.splitlines() == ["plain,--metrics-port"]
