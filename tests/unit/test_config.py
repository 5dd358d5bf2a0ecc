"""Config: layering, interpolation, and errors that name the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from logins.core.config import ConfigError, describe, load_config, selected_files
from logins.core.interpolate import InterpolationError, interpolate

ENV = {
    "SQS_QUEUE_URL": "http://q",
    "LOGINS_TOKEN_KEY_FILE": "/keys/token.key",
    "LOGINS_VAULT_PUBLIC_KEY_FILE": "/keys/vault.pub",
}


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("${A:-dflt}", {}, "dflt"),
        ("${A:-dflt}", {"A": ""}, "dflt"),  # empty counts as unset, like the shell's :-
        ("pre-${A}-${B:-b}", {"A": "a"}, "pre-a-b"),
        ("${A:-}", {}, None),  # a lone reference that expands to nothing is null
        ("x${A:-}", {}, "x"),
        ("cost $$5", {}, "cost $5"),
        ("${A:-http://h:1/p}", {}, "http://h:1/p"),
        (5, {}, 5),
    ],
)
def test_interpolation(value: object, env: dict[str, str], expected: object) -> None:
    assert interpolate(value, env) == expected


def test_unset_variable_without_default_is_an_error_with_its_path() -> None:
    with pytest.raises(InterpolationError) as info:
        interpolate({"sink": {"dsn": "${DATABASE_URL}"}}, {})
    assert info.value.path == ("sink", "dsn")
    assert info.value.variable == "DATABASE_URL"


def test_local_is_the_default_environment_with_the_contract_defaults() -> None:
    config = load_config(ENV)
    assert config.source.endpoint_url == "http://localhost:4566"
    assert config.source.region == "us-east-1"
    assert (
        config.sink.dsn.get_secret_value()
        == "postgresql://postgres:postgres@localhost:5432/postgres"
    )
    assert config.source.stop_when_idle is None
    assert [s.type for s in config.steps] == ["validate", "dedupe", "mask"]


def test_local_defaults_when_nothing_is_set() -> None:
    config = load_config({k: v for k, v in ENV.items() if k != "SQS_QUEUE_URL"})
    assert config.source.queue_url == "http://localhost:4566/000000000000/login-queue"


def test_environment_variables_override_defaults() -> None:
    config = load_config(
        {
            **ENV,
            "SQS_ENDPOINT_URL": "http://ls:4566",
            "AWS_REGION": "eu-west-1",
            "DATABASE_URL": "postgresql://u:p@db/x",
            "LOGINS_STOP_WHEN_IDLE": "5",
        }
    )
    assert config.source.endpoint_url == "http://ls:4566"
    assert config.source.region == "eu-west-1"
    assert config.sink.dsn.get_secret_value() == "postgresql://u:p@db/x"
    assert config.source.stop_when_idle == 5


@pytest.mark.parametrize("env_name", ["local", "docker", "prod"])
def test_every_shipped_environment_loads(env_name: str) -> None:
    env = {
        **ENV,
        "LOGINS_ENV": env_name,
        "AWS_REGION": "eu-west-1",
        "DATABASE_URL": "postgresql://db/x",
    }
    if env_name == "prod":  # production's posture: KMS and a pinned vault key (posture.py)
        del env["LOGINS_TOKEN_KEY_FILE"]
        env["LOGINS_TOKEN_KMS_KEY_ID"] = "alias/logins-tokens"
        env["LOGINS_VAULT_PUBLIC_KEY_FINGERPRINT"] = "sha256:" + "ab" * 32
    config = load_config(env)
    assert config.source.queue_url == "http://q"
    if env_name == "prod":
        assert config.source.endpoint_url is None  # boto3 picks the real AWS endpoint
        assert config.source.retry.mode == "adaptive"
    # prod's flow role cannot run DDL: it only checks the schema version (docs/vault.md#roles)
    assert config.sink.migrate is (env_name != "prod")
    assert config.sink.rejected_retention_days == 30


def test_the_pinned_fingerprint_is_normalised_or_refused() -> None:
    config = load_config({**ENV, "LOGINS_VAULT_PUBLIC_KEY_FINGERPRINT": "SHA256:" + "AB" * 32})
    assert config.vault.public_key_fingerprint == "sha256:" + "ab" * 32
    assert load_config(ENV).vault.public_key_fingerprint is None  # unset: not pinned
    with pytest.raises(ConfigError, match=r"vault\.public_key_fingerprint: .*64 hex digits"):
        load_config({**ENV, "LOGINS_VAULT_PUBLIC_KEY_FINGERPRINT": "sha256:abc"})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "neither is set"),
        ({"LOGINS_TOKEN_KEY_FILE": "/k", "LOGINS_TOKEN_KMS_KEY_ID": "alias/t"}, "both are set"),
    ],
)
def test_exactly_one_token_key_custody(extra: dict[str, str], message: str) -> None:
    env = {k: v for k, v in ENV.items() if k != "LOGINS_TOKEN_KEY_FILE"} | extra
    with pytest.raises(ConfigError) as info:
        load_config(env)
    tokens_line = _line_of(Path("config/base.yaml"), "tokens:")
    assert f"config/base.yaml:{tokens_line}: tokens: give exactly one of tokens.key_file" in str(
        info.value
    )
    assert "(LOGINS_TOKEN_KEY_FILE) and tokens.kms_key_id (LOGINS_TOKEN_KMS_KEY_ID)" in str(
        info.value
    )
    assert str(info.value).endswith(message)


def test_kms_custody_from_the_environment() -> None:
    env = {k: v for k, v in ENV.items() if k != "LOGINS_TOKEN_KEY_FILE"}
    config = load_config(
        {
            **env,
            "LOGINS_TOKEN_KMS_KEY_ID": "alias/logins-tokens",
            "LOGINS_KMS_ENDPOINT_URL": "http://127.0.0.1:4566",
            "LOGINS_TOKEN_PREVIOUS_KMS_KEY_IDS": "alias/old-1, alias/old-2",
        }
    )
    assert config.tokens.key_file is None
    assert config.tokens.kms_key_id == "alias/logins-tokens"
    assert config.tokens.kms_endpoint_url == "http://127.0.0.1:4566"
    assert config.tokens.previous_kms_key_ids == ["alias/old-1", "alias/old-2"]
    assert config.tokens.cache_size == 50_000


def test_prod_requires_its_variables_and_names_file_and_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**ENV, "LOGINS_ENV": "prod", "AWS_REGION": "eu-west-1"})
    dsn_line = _line_of(Path("config/prod.yaml"), "  dsn:")
    assert str(info.value) == (
        f"config/prod.yaml:{dsn_line}: sink.dsn: environment variable DATABASE_URL"
        " is not set (and has no default)"
    )


def test_missing_secret_variable_is_a_clear_error() -> None:
    env = {k: v for k, v in ENV.items() if k != "LOGINS_VAULT_PUBLIC_KEY_FILE"}
    with pytest.raises(
        ConfigError,
        match=rf"base\.yaml:{_line_of(Path('config/base.yaml'), '  public_key_file:')}:"
        r" vault\.public_key_file: environment variable "
        r"LOGINS_VAULT_PUBLIC_KEY_FILE is not set",
    ):
        load_config(env)


def test_unknown_environment_lists_the_known_ones() -> None:
    known = r"\['docker', 'lambda', 'local', 'prod'\]"
    with pytest.raises(ConfigError, match=r"LOGINS_ENV='staging'.*" + known):
        load_config({**ENV, "LOGINS_ENV": "staging"})


def _line_of(path: Path, start: str) -> int:
    """The 1-based line of the first line of `path` that starts with `start`."""
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(start))


def _custom(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "custom.yaml"
    path.write_text(text)
    return {**ENV, "LOGINS_CONFIG": str(path)}


def test_wrong_value_names_the_file_that_set_it(tmp_path: Path) -> None:
    env = _custom(
        tmp_path,
        "extends: "
        + str(Path("config/local.yaml").resolve())
        + "\nsource:\n  visibility_timeout: soon\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(env)
    assert (
        f"{tmp_path / 'custom.yaml'}:3: source.visibility_timeout: must be a whole number"
        in str(info.value)
    )


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    env = _custom(
        tmp_path,
        "extends: " + str(Path("config/local.yaml").resolve()) + "\nsink:\n  tabel: typo\n",
    )
    with pytest.raises(
        ConfigError, match=r"custom\.yaml:3: sink\.tabel: unknown key; did you mean table\?"
    ):
        load_config(env)


def test_writer_threads_need_a_queue(tmp_path: Path) -> None:
    env = _custom(
        tmp_path,
        "extends: " + str(Path("config/local.yaml").resolve())
        + "\nsink:\n  queued_batches: 0\n  writers: 2\n",
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"sink: .*writers: 2 writer threads need queued_b"):
        load_config(env)


def test_step_errors_point_into_the_step_list(tmp_path: Path) -> None:
    env = _custom(
        tmp_path,
        "extends: "
        + str(Path("config/base.yaml").resolve())
        + """
source: {endpoint_url: "http://x"}
sink: {dsn: "postgresql://db/x"}
steps:
  - type: validate
    fields: {ip: {type: string, pii: true}}
  - type: dedupe
    window_seconds: -1
  - type: mask
    fields: {ip: masked_ip}
""",
    )
    with pytest.raises(
        ConfigError,
        match=r"custom\.yaml:8: steps\.1\.window_seconds: must be greater than 0",
    ):
        load_config(env)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("[{type: mask, fields: {ip: masked_ip}}]", "first step must be 'validate'"),
        ("[{type: validate, fields: {ip: {pii: true}}}]", r"PII fields \['ip'\] are not masked"),
        (
            "[{type: validate, fields: {ip: {pii: true}}},"
            " {type: mask, algorithm: sha256, fields: {ip: masked_ip}}]",
            "unkeyed hash",
        ),
        (
            "[{type: validate, fields: {ip: {}}}, {type: mask, fields: {nope: x}}]",
            r"\['nope'\] not in the validate schema",
        ),
    ],
)
def test_policy_checks(tmp_path: Path, steps: str, message: str) -> None:
    env = _custom(
        tmp_path, "extends: " + str(Path("config/local.yaml").resolve()) + f"\nsteps: {steps}\n"
    )
    with pytest.raises(ConfigError, match=message):
        load_config(env)


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    env = _custom(tmp_path, "source: [unclosed\n")
    with pytest.raises(ConfigError, match=r"custom\.yaml:2: not valid YAML"):
        load_config(env)


def test_describe_hides_the_database_password() -> None:
    config = load_config({**ENV, "DATABASE_URL": "postgresql://app:s3cret@db:5432/x"})
    shown = describe(config)
    assert shown["sink"]["dsn"] == "postgresql://app:***@db:5432/x"
    assert "s3cret" not in repr(config)


def test_selected_files_are_base_then_environment() -> None:
    files = selected_files({"LOGINS_ENV": "docker"})
    assert [f.name for f in files] == ["base.yaml", "docker.yaml"]
