"""`logins tokenize`: the token the pipeline writes for a value, one per line, from arguments,
a file or stdin; a value the pipeline would reject gets an empty line and an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from nacl.public import PrivateKey

from flows.steps.mask import Masker
from flows.steps.validate import Validator
from logins.cli import main
from logins.core.config import MaskStep, load_config
from logins.core.keys import generate_keys, prepend_token_key
from logins.core.pipeline_keys import load_tokenizer
from logins.core.records import SqsMessage
from logins.core.sealcache import SealCache
from logins.core.vault import Sealer


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    keys = generate_keys(tmp_path / "keys")
    return {
        "LOGINS_ENV": "local",
        "SQS_QUEUE_URL": "http://127.0.0.1:9/q",
        "LOGINS_TOKEN_KEY_FILE": str(keys["token.key"]),
        "LOGINS_VAULT_PUBLIC_KEY_FILE": str(keys["vault.pub"]),
    }


def tokenize(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["tokenize", *args], env=env, input=input)


def pipeline_tokens(env: dict[str, str], ip: str, device_id: str) -> dict[str, str]:
    """What the flow's validate and mask steps write for a login with these values."""
    config = load_config(env)
    tokenizer = load_tokenizer(config.tokens)
    body = json.dumps({"user_id": "u", "app_version": "1", "device_type": "ios", "ip": ip,
                       "device_id": device_id})  # fmt: skip
    (event,) = Validator(config.validate_step, tokenizer).batch([SqsMessage("m", "r", body, 0, 1)])
    step = next(s for s in config.steps if isinstance(s, MaskStep))
    Masker(step, tokenizer, Sealer(PrivateKey.generate().public_key), SealCache(10)).batch([event])
    assert event.fields is not None
    return {"ip": event.fields["masked_ip"], "device_id": event.fields["masked_device_id"]}


def test_the_same_token_as_the_pipeline_from_arguments_a_file_and_stdin(
    env: dict[str, str], tmp_path: Path
) -> None:
    written = pipeline_tokens(env, "2001:db8::7", " 593-47-5928 #1")
    by_arg = tokenize(env, "--field", "ip", "2001:db8::7", "198.51.100.1")
    assert by_arg.exit_code == 0, by_arg.output
    lines = by_arg.stdout.splitlines()
    assert lines[0] == written["ip"] and len(lines) == 2 and lines[1] != lines[0]
    values = tmp_path / "devices.txt"
    values.write_text(" 593-47-5928 #1\r\nother\n", encoding="utf-8")  # spaces and # kept
    by_file = tokenize(env, "--field", "device_id", "--file", str(values))
    assert by_file.exit_code == 0 and by_file.stdout.splitlines()[0] == written["device_id"]
    by_stdin = tokenize(env, "--field", "device_id", "--file", "-", input=" 593-47-5928 #1\n")
    assert by_stdin.stdout == written["device_id"] + "\n"


def test_a_value_the_pipeline_rejects_gets_an_empty_line_and_an_error(env: dict[str, str]) -> None:
    result = tokenize(env, "--field", "ip", "192.0.2.1", "not-an-ip", "192.0.2.2")
    assert result.exit_code == 1
    out = result.stdout.splitlines()
    assert len(out) == 3 and out[1] == "" and out[0] and out[2]  # aligned with the input
    assert "value 2: ip: not an IP address" in result.stderr
    assert "not-an-ip" not in result.stderr  # errors name positions and fields, not values


def test_only_masked_fields_and_some_input(env: dict[str, str]) -> None:
    unknown = tokenize(env, "--field", "user_id", "u-1")
    assert unknown.exit_code == 2
    assert "'user_id' is not masked by this configuration (masked: ['device_id', 'ip'])" in (
        unknown.stderr
    )
    assert tokenize(env, "--field", "ip").exit_code == 2


def test_all_keys_gives_the_old_token_too_after_a_rotation(env: dict[str, str]) -> None:
    before = tokenize(env, "--field", "ip", "192.0.2.9").stdout.strip()
    prepend_token_key(Path(env["LOGINS_TOKEN_KEY_FILE"]))
    both = tokenize(env, "--field", "ip", "--all-keys", "192.0.2.9").stdout.strip().split("\t")
    assert len(both) == 2 and both[1] == before and both[0] != before
    assert tokenize(env, "--field", "ip", "192.0.2.9").stdout.strip() == both[0]
