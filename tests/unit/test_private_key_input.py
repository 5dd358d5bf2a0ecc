"""The vault private key comes from a file only its owner may read, stdin or a file
descriptor; never the environment."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from logins.cli import main
from logins.core.keys import (
    KeyFileError,
    generate_keys,
    load_vault_private_key,
    read_private_key_fd,
)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    return generate_keys(tmp_path / "k")


def test_from_a_file_descriptor_and_stdin(
    keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = bytes(load_vault_private_key(keys["vault.key"]))
    read, write = os.pipe()
    os.write(write, keys["vault.key"].read_bytes())
    os.close(write)
    assert bytes(read_private_key_fd(read)) == expected
    with pytest.raises(OSError):
        os.fstat(read)  # read to its end and closed
    with pytest.raises(KeyFileError, match=r"vault private key \(file descriptor 987\): cannot"):
        read_private_key_fd(987)
    monkeypatch.setattr("sys.stdin", io.StringIO(keys["vault.key"].read_text()))
    assert bytes(load_vault_private_key(Path("-"))) == expected
    monkeypatch.setattr("sys.stdin", io.StringIO("k1 not-a-key\n"))
    with pytest.raises(KeyFileError, match=r"vault private key \(stdin\): line 1 is not valid"):
        load_vault_private_key(Path("-"))


def test_one_source_and_one_stdin(keys: dict[str, Path]) -> None:
    env = {"SQS_QUEUE_URL": "q", "LOGINS_TOKEN_KEY_FILE": str(keys["token.key"]),
           "LOGINS_VAULT_PUBLIC_KEY_FILE": str(keys["vault.pub"])}  # fmt: skip
    both_stdin = CliRunner().invoke(
        main, ["reveal", "--file", "-", "--private-key-file", "-", "--reason", "r"], env=env
    )
    assert both_stdin.exit_code == 2
    assert "only one input can come from stdin ('-')" in both_stdin.stderr
    both = CliRunner().invoke(
        main,
        ["reveal", "k.x", "--private-key-file", str(keys["vault.key"]), "--private-key-fd", "0",
         "--reason", "r"],
        env=env,
    )  # fmt: skip
    assert both.exit_code == 2 and "not both" in both.stderr
    from_env = CliRunner().invoke(
        main,
        ["rotate", "run", "--reason", "r"],
        env={**env, "LOGINS_VAULT_PRIVATE_KEY": keys["vault.key"].read_text()},
    )
    assert from_env.exit_code == 2 and "the vault private key is required" in from_env.stderr
