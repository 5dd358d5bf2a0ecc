"""Keys and the DSN from AWS Secrets Manager and SSM Parameter Store (moto's server, over
loopback, reached through the endpoint variables boto3 honours): they give the same tokens and
seals as the files, are never shown, and each failure names the reference and the service's
own error code, within seconds."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from moto.core.authorization import enable_iam_authentication

from logins.cli import main
from logins.core.config import ConfigError, config_dir, describe, load_config
from logins.core.keys import KeyFileError, load_token_keys, load_vault_public_key, vault_key_id
from logins.core.pipeline_keys import load_secrets
from logins.core.tokens import Tokenizer
from logins.dev.embedded import free_port
from tests.integration.conftest import SecretStore

PASSWORD = "s3cret-Pw-Only-In-The-Store"
DSN = f"postgresql://app:{PASSWORD}@db.internal:5432/logins"


def _env(keys: dict[str, Path], **over: str) -> dict[str, str]:
    # production refuses a token key file (from a store too) and an unpinned vault key unless
    # the configuration accepts them by name (logins/core/posture.py)
    accepting = keys["token.key"].parent / "prod-accepting-key-files.yaml"
    accepting.write_text(
        f"extends: {config_dir() / 'prod.yaml'}\n"
        "security: {allow_token_key_file: true, allow_unpinned_vault_key: true}\n"
    )
    return {
        "LOGINS_ENV": "prod",
        "LOGINS_CONFIG": str(accepting),
        "SQS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/000000000000/logins",
        "AWS_REGION": "us-east-1",
        "DATABASE_URL": DSN,
        "LOGINS_TOKEN_KEY_FILE": str(keys["token.key"]),
        "LOGINS_VAULT_PUBLIC_KEY_FILE": str(keys["vault.pub"]),
        **over,
    }


def _key_text(keys: dict[str, Path], name: str) -> str:
    return keys[name].read_text()


def test_keys_and_dsn_from_the_stores_work_like_the_files(
    secret_store: SecretStore, keys: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    token_ref = secret_store.put_secret(_key_text(keys, "token.key"))
    vault_ref = secret_store.put_parameter(_key_text(keys, "vault.pub"))
    dsn_ref = secret_store.put_secret(DSN)
    env = _env(
        keys,
        DATABASE_URL=dsn_ref,
        LOGINS_TOKEN_KEY_FILE=token_ref,
        LOGINS_VAULT_PUBLIC_KEY_FILE=vault_ref,
    )
    caplog.set_level(logging.DEBUG)  # botocore logs response bodies at DEBUG
    config = load_config(env)
    assert config.sink.dsn.get_secret_value() == DSN
    secrets = load_secrets(config)
    from_file = Tokenizer(load_token_keys(keys["token.key"]))
    assert secrets.tokenizer.key_id == from_file.key_id
    assert secrets.tokenizer.token("ip", "10.1.2.3") == from_file.token("ip", "10.1.2.3")
    assert secrets.sealer.key_id == vault_key_id(load_vault_public_key(keys["vault.pub"]))

    shown = describe(config)
    assert shown["sink"]["dsn"] == dsn_ref
    assert shown["tokens"]["key_file"] == token_ref
    assert shown["vault"]["public_key_file"] == vault_ref
    # the base64 is the last field of a key line (`<id> hmac-sha256 <base64>`)
    secret_texts = [PASSWORD, *(_key_text(keys, n).split()[-1] for n in ("token.key", "vault.pub"))]
    for where in (json.dumps(shown), repr(config), str(config), caplog.text):
        assert not [s for s in secret_texts if s in where]

    result = CliRunner().invoke(main, ["check"], env=env)
    assert result.exit_code == 0, result.output
    assert dsn_ref in result.output and token_ref in result.output
    assert f"token key id {from_file.key_id}" in result.output
    assert not [s for s in secret_texts if s in result.output]


@pytest.mark.parametrize("what", ["token key", "vault key", "dsn"])
def test_a_missing_secret_names_the_reference_and_the_services_code(
    secret_store: SecretStore, keys: dict[str, Path], what: str
) -> None:
    if what == "token key":
        env = _env(keys, LOGINS_TOKEN_KEY_FILE="secretsmanager:logins-test/no-such-key")
        with pytest.raises(KeyFileError) as failure:
            load_secrets(load_config(env))
        assert str(failure.value) == (
            "token key file secretsmanager:logins-test/no-such-key: Secrets Manager answered"
            " ResourceNotFoundException: Secrets Manager can't find the specified secret."
        )
    elif what == "vault key":
        env = _env(keys, LOGINS_VAULT_PUBLIC_KEY_FILE="ssm:/logins-test/no-such-key")
        with pytest.raises(KeyFileError) as failure:
            load_secrets(load_config(env))
        assert str(failure.value).startswith(
            "vault public key file ssm:/logins-test/no-such-key: SSM Parameter Store answered"
            " ParameterNotFound"
        )
    else:
        env = _env(keys, DATABASE_URL="secretsmanager:logins-test/no-such-dsn")
        with pytest.raises(ConfigError) as config_failure:
            load_config(env)
        prod = Path("config/prod.yaml").read_text().splitlines()
        dsn_line = next(i for i, line in enumerate(prod, 1) if line.startswith("  dsn:"))
        assert str(config_failure.value).endswith(
            f"config/prod.yaml:{dsn_line}: sink.dsn: secretsmanager:logins-test/no-such-dsn:"
            " Secrets Manager answered ResourceNotFoundException: Secrets Manager can't find the"
            " specified secret."
        )


def test_a_binary_secret_is_refused(secret_store: SecretStore, keys: dict[str, Path]) -> None:
    name = f"logins-test/binary-{time.monotonic_ns()}"
    secret_store.client("secretsmanager").create_secret(Name=name, SecretBinary=b"\x00\x01")
    env = _env(keys, LOGINS_TOKEN_KEY_FILE=f"secretsmanager:{name}")
    with pytest.raises(KeyFileError, match=r"holds binary data, not text"):
        load_secrets(load_config(env))


def _user(secret_store: SecretStore, name: str, actions: list[str]) -> dict[str, str]:
    """An IAM user allowed only `actions`, and its access key."""
    iam = secret_store.client("iam")
    iam.create_user(UserName=name)
    statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
    iam.put_user_policy(
        UserName=name,
        PolicyName="only",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


def test_a_role_without_read_access_is_refused_and_told_so(
    secret_store: SecretStore, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An intruder's credentials (allowed SQS, not the stores) get AccessDenied from both
    services, by name; the pipeline's own credentials read the same references."""
    suffix = secret_store.put_secret("x").rsplit("/", 1)[1]  # unique user names per run
    token_ref = secret_store.put_secret(_key_text(keys, "token.key"))
    vault_ref = secret_store.put_parameter(_key_text(keys, "vault.pub"))
    intruder = _user(secret_store, f"intruder-{suffix}", ["sqs:*"])
    pipeline = _user(
        secret_store, f"pipeline-{suffix}", ["secretsmanager:GetSecretValue", "ssm:GetParameter"]
    )
    config = load_config(
        _env(keys, LOGINS_TOKEN_KEY_FILE=token_ref, LOGINS_VAULT_PUBLIC_KEY_FILE=vault_ref)
    )
    assert config.tokens.key_file is not None
    with enable_iam_authentication():
        for name, value in intruder.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(KeyFileError) as token_failure:
            load_token_keys(config.tokens.key_file)
        with pytest.raises(KeyFileError) as vault_failure:
            load_vault_public_key(config.vault.public_key_file)
        for name, value in pipeline.items():
            monkeypatch.setenv(name, value)
        secrets = load_secrets(config)
    assert f"{token_ref}: Secrets Manager answered AccessDenied" in str(token_failure.value)
    assert "not authorized to perform: secretsmanager:GetSecretValue" in str(token_failure.value)
    assert f"{vault_ref}: SSM Parameter Store answered AccessDenied" in str(vault_failure.value)
    assert "not authorized to perform: ssm:GetParameter" in str(vault_failure.value)
    assert secrets.tokenizer.key_id == Tokenizer(load_token_keys(keys["token.key"])).key_id


def test_an_unreachable_store_fails_at_start_within_seconds(
    secret_store: SecretStore, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", closed)
    env = _env(keys, DATABASE_URL="secretsmanager:logins/database-url")
    started = time.monotonic()
    with pytest.raises(ConfigError) as failure:
        load_config(env)
    assert time.monotonic() - started < 10
    assert str(failure.value).endswith(
        "sink.dsn: secretsmanager:logins/database-url: cannot reach Secrets Manager at"
        f" {closed} (EndpointConnectionError)"
    )
