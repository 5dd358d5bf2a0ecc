"""What counts as a secret reference in the config, and what stays a path or a DSN."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from logins.cli import main
from logins.core.config import ConfigError, describe, load_config
from logins.core.secretrefs import SecretRef, SecretRefError, _region, parse

ENV = {"SQS_QUEUE_URL": "q", "LOGINS_TOKEN_KEY_FILE": "k", "LOGINS_VAULT_PUBLIC_KEY_FILE": "v"}


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("secretsmanager:logins/token-key", SecretRef("secretsmanager", "logins/token-key")),
        (
            "secretsmanager:arn:aws:secretsmanager:eu-west-1:1:secret:db-AbCdEf",
            SecretRef("secretsmanager", "arn:aws:secretsmanager:eu-west-1:1:secret:db-AbCdEf"),
        ),
        ("ssm:/logins/vault.pub", SecretRef("ssm", "/logins/vault.pub")),
        ("/run/secrets/token.key", None),
        ("keys/token.key", None),
        ("postgresql://u:p@db:5432/x", None),
        ("host=db dbname=x", None),
        ("c:/keys/token.key", None),
    ],
)
def test_parse(text: str, ref: SecretRef | None) -> None:
    assert parse(text) == ref


@pytest.mark.parametrize("text", ["ssm:", "secretsmanager: "])
def test_a_reference_without_a_name_is_refused(text: str) -> None:
    with pytest.raises(SecretRefError, match="needs a name"):
        parse(text)


def test_config_keeps_paths_and_takes_references() -> None:
    config = load_config(
        {**ENV, "LOGINS_TOKEN_KEY_FILE": "secretsmanager:t", "LOGINS_VAULT_PUBLIC_KEY_FILE": "v"}
    )
    assert config.tokens.key_file == SecretRef("secretsmanager", "t")
    assert config.vault.public_key_file == Path("v")
    shown = describe(config)
    assert shown["tokens"]["key_file"] == "secretsmanager:t"
    assert shown["vault"]["public_key_file"] == "v"


def test_a_bad_reference_names_the_file_and_key() -> None:
    with pytest.raises(
        ConfigError, match=r"base\.yaml:\d+: vault\.public_key_file: .*needs a name"
    ):
        load_config({**ENV, "LOGINS_VAULT_PUBLIC_KEY_FILE": "ssm:"})


def test_the_region_is_the_arns_else_aws_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-2")
    arn = SecretRef("secretsmanager", "arn:aws:secretsmanager:eu-west-1:1:secret:db-AbCdEf")
    assert _region(arn) == "eu-west-1"
    assert _region(SecretRef("ssm", "/logins/vault.pub")) == "us-east-2"


def test_rotate_new_key_refuses_a_reference() -> None:
    result = CliRunner().invoke(
        main, ["rotate", "new-key"], env={**ENV, "LOGINS_TOKEN_KEY_FILE": "secretsmanager:t"}
    )
    assert result.exit_code == 2
    assert "tokens.key_file is secretsmanager:t: put the new key line first" in result.output
