"""Production posture (issue 18, item 7): LOGINS_ENV=prod (or a configuration extending
prod.yaml) refuses a token key file and an unpinned vault key unless the configuration
accepts them by name, failing at start (exit 2) with the file, the key and the fix; `logins
check` prints the posture."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from logins.cli import main
from logins.core import posture
from logins.core.config import ConfigError, config_dir, load_config
from tests.helpers import make_keys

# where the key is set: `config/base.yaml:<line>` (the shipped base, as the loader names it)
BASE = r"config/base\.yaml:\d+"
PIN = "sha256:" + "ab" * 32
PROD = {
    "LOGINS_ENV": "prod",
    "SQS_QUEUE_URL": "http://q",
    "AWS_REGION": "eu-west-1",
    "DATABASE_URL": "postgresql://db/x",
    "LOGINS_TOKEN_KEY_FILE": "/keys/token.key",
    "LOGINS_VAULT_PUBLIC_KEY_FILE": "/keys/vault.pub",
}
ALLOW_BOTH = "security:\n  allow_token_key_file: true\n  allow_unpinned_vault_key: true\n"


def extending_prod(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mine.yaml"
    path.write_text(f"extends: {config_dir() / 'prod.yaml'}\n{text}")
    return str(path)


def test_prod_refuses_a_token_key_file_and_an_unpinned_vault_key_naming_file_key_and_fix() -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(PROD)
    text = str(refused.value)
    assert re.search(
        rf"{BASE}: tokens\.key_file: production \(LOGINS_ENV=prod\) refuses a token key file", text
    )
    assert "(/keys/token.key)" in text and "`security: {allow_token_key_file: true}`" in text
    assert "tokens.kms_key_id, LOGINS_TOKEN_KMS_KEY_ID" in text
    assert re.search(
        rf"{BASE}: vault\.public_key_fingerprint: production \(LOGINS_ENV=prod\) refuses an", text
    )
    assert "`security: {allow_unpinned_vault_key: true}`" in text
    with pytest.raises(ConfigError) as only_file:
        load_config({**PROD, "LOGINS_VAULT_PUBLIC_KEY_FINGERPRINT": PIN})
    assert "tokens.key_file" in str(only_file.value)
    assert "vault.public_key_fingerprint" not in str(only_file.value)


def test_kms_and_a_pinned_vault_key_start_in_prod_without_allowances() -> None:
    env = {k: v for k, v in PROD.items() if k != "LOGINS_TOKEN_KEY_FILE"}
    config = load_config(
        {**env, "LOGINS_TOKEN_KMS_KEY_ID": "alias/t", "LOGINS_VAULT_PUBLIC_KEY_FINGERPRINT": PIN}
    )
    assert not config.security.allow_token_key_file
    assert posture.summary(config, production=True) == [
        "environment: production (LOGINS_ENV=prod or prod.yaml)",
        "token key custody: KMS (alias/t)",
        f"vault key: pinned {PIN}",
        "security.allow_token_key_file: false",
        "security.allow_unpinned_vault_key: false",
    ]


@pytest.mark.parametrize(
    ("allowed", "still_refused"),
    [
        ("security:\n  allow_token_key_file: true\n", "vault.public_key_fingerprint"),
        ("security:\n  allow_unpinned_vault_key: true\n", "tokens.key_file"),
        (ALLOW_BOTH, None),
    ],
)
def test_each_allowance_accepts_exactly_what_it_names(
    tmp_path: Path, allowed: str, still_refused: str | None
) -> None:
    env = {**PROD, "LOGINS_CONFIG": extending_prod(tmp_path, allowed)}
    if still_refused is None:
        config = load_config(env)
        assert config.security.allow_token_key_file and config.security.allow_unpinned_vault_key
        return
    with pytest.raises(ConfigError, match=still_refused) as refused:
        load_config(env)
    assert str(refused.value).count("refuses") == 1


def test_a_config_extending_prod_yaml_is_production_without_logins_env(tmp_path: Path) -> None:
    env = {k: v for k, v in PROD.items() if k != "LOGINS_ENV"}
    with pytest.raises(ConfigError, match=r"tokens\.key_file: production"):
        load_config({**env, "LOGINS_CONFIG": extending_prod(tmp_path, "")})
    assert load_config({**env, "LOGINS_ENV": "local"}).tokens.key_file is not None  # not prod


def test_logins_check_prints_the_posture(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    env = {
        **PROD,
        "LOGINS_CONFIG": extending_prod(tmp_path, ALLOW_BOTH),
        "LOGINS_TOKEN_KEY_FILE": str(keys["token.key"]),
        "LOGINS_VAULT_PUBLIC_KEY_FILE": str(keys["vault.pub"]),
    }
    checked = CliRunner().invoke(main, ["check"], env=env)
    assert checked.exit_code == 0, checked.output
    assert "# posture: environment: production (LOGINS_ENV=prod or prod.yaml)" in checked.output
    assert f"# posture: token key custody: file ({keys['token.key']})" in checked.output
    assert "# posture: vault key: not pinned" in checked.output
    assert "# posture: security.allow_token_key_file: true" in checked.output
    assert "# posture: security.allow_unpinned_vault_key: true" in checked.output
    refused = CliRunner().invoke(main, ["check"], env={**env, "LOGINS_CONFIG": ""})
    assert refused.exit_code != 0 and "tokens.key_file: production" in refused.output


def test_the_flow_refuses_to_start_in_prod_with_a_token_key_file(tmp_path: Path) -> None:
    """The path a user runs: `python -m bytewax.run flows.logins` exits 2 at start."""
    keys = make_keys(tmp_path / "keys")
    env = {
        **os.environ,
        **PROD,
        "LOGINS_TOKEN_KEY_FILE": str(keys["token.key"]),
        "LOGINS_VAULT_PUBLIC_KEY_FILE": str(keys["vault.pub"]),
    }
    env.pop("LOGINS_CONFIG", None)
    started = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "flows.logins"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert started.returncode == 2, started.stderr
    assert re.search(rf"logins: cannot start: {BASE}: tokens\.key_file: production", started.stderr)
    assert "`security: {allow_token_key_file: true}`" in started.stderr
