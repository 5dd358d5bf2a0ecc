"""Configuration errors point at the line: `file:line: key: what is wrong`, through every
`extends:`, with the nearest valid key or step type, and exit 2 from `logins` and the flow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from logins.cli import main
from logins.core.config import ConfigError, load_config
from tests.helpers import REPO

ENV = {
    "SQS_QUEUE_URL": "http://q",
    "LOGINS_TOKEN_KEY_FILE": "/keys/token.key",
    "LOGINS_VAULT_PUBLIC_KEY_FILE": "/keys/vault.pub",
}


def _chain(tmp_path: Path, middle: str) -> Path:
    """top.yaml extends middle.yaml extends the repository's config/local.yaml (extends
    base.yaml): four files; the error is in the second."""
    (tmp_path / "middle.yaml").write_text(f"extends: {REPO / 'config/local.yaml'}\n{middle}")
    top = tmp_path / "top.yaml"
    top.write_text("extends: middle.yaml\nsource:\n  receivers: 3\n")
    return top


def _error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(env)
    return str(info.value)


def test_an_unknown_key_names_its_file_and_line_through_the_extends_chain(
    tmp_path: Path,
) -> None:
    top = _chain(tmp_path, "telemetry:\n  log_level: DEBUG\nsink:\n  migrate: false\n  tabel: x\n")
    message = _error({**ENV, "LOGINS_CONFIG": str(top)})
    assert f"{tmp_path / 'middle.yaml'}:6: sink.tabel: unknown key; did you mean table?" in message
    assert "Extra inputs" not in message


def test_a_missing_variable_points_at_the_line_of_the_lowest_file(tmp_path: Path) -> None:
    top = _chain(tmp_path, "")
    env = {k: v for k, v in ENV.items() if k != "LOGINS_VAULT_PUBLIC_KEY_FILE"}
    message = _error({**env, "LOGINS_CONFIG": str(top)})
    base = (REPO / "config/base.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(base, 1) if text.startswith("  public_key_file:"))
    assert message.startswith(f"config/base.yaml:{line}: vault.public_key_file: environment")


def test_a_wrong_step_type_names_the_valid_types(tmp_path: Path) -> None:
    top = _chain(
        tmp_path,
        "steps:\n  - type: validate\n    fields: {ip: {pii: true}}\n  - type: dedup\n"
        "  - type: mask\n    fields: {ip: masked_ip}\n",
    )
    message = _error({**ENV, "LOGINS_CONFIG": str(top)})
    assert (
        f"{tmp_path / 'middle.yaml'}:5: steps.1.type: unknown step type 'dedup'; did you mean"
        " dedupe? (the types: validate, dedupe, mask)" in message
    )
    assert "Input tag" not in message


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("tokenz: {}\n", "tokenz: unknown key; did you mean tokens?"),
        ("source:\n  protocl: json\n", "source.protocl: unknown key; did you mean protocol?"),
        (
            "source:\n  retry: {mode: adaptiv}\n",
            "source.retry.mode: 'adaptiv' is not one of standard, adaptive, legacy; did you"
            " mean adaptive?",
        ),
        (
            "steps:\n  - type: validate\n    fields: {ip: {type: strng}}\n",
            "steps.0.fields.ip.type: 'strng' is not one of string, integer, number, boolean,"
            " timestamp, enum, version; did you mean string?",
        ),
        ("source:\n  receivers: 0\n", "source.receivers: must be at least 1"),
        ("source:\n  receivers: many\n", "source.receivers: must be a whole number"),
        ("sink:\n  zzz: 1\n", "sink.zzz: unknown key\n"),
    ],
)
def test_errors_read_in_words_with_the_nearest_valid_name(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(f"extends: {REPO / 'config/local.yaml'}\n{yaml_text}")
    message = _error({**ENV, "LOGINS_CONFIG": str(path)}) + "\n"
    assert f"{path}:" in message
    assert expected in message


def test_an_extends_cycle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    message = _error({**ENV, "LOGINS_CONFIG": str(tmp_path / "a.yaml")})
    assert "`extends` goes round in a circle" in message


def test_logins_check_exits_2_on_a_bad_configuration(tmp_path: Path) -> None:
    top = _chain(tmp_path, "sink:\n  tabel: x\n")
    result = CliRunner().invoke(main, ["check"], env={**ENV, "LOGINS_CONFIG": str(top)})
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'middle.yaml'}:3: sink.tabel: unknown key; did you mean table?" in (
        result.output
    )


@pytest.mark.e2e
def test_the_flow_exits_2_on_a_bad_configuration(tmp_path: Path) -> None:
    top = _chain(tmp_path, "sink:\n  tabel: x\n")
    env = {**os.environ, **ENV, "LOGINS_CONFIG": str(top)}
    done = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "flows.logins"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "logins: cannot start: invalid configuration:" in done.stderr
    assert f"{tmp_path / 'middle.yaml'}:3: sink.tabel: unknown key; did you mean table?" in (
        done.stderr
    )
