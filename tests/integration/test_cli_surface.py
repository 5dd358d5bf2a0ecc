"""The CLI's common surface against the real test servers: `--version`, `--json` on check and
stats (parsed), one exit-code rule (2: unusable configuration or environment) for every
command, no Python reprs in text output, and `generate` sending where the configuration says."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from logins.cli import main
from logins.dev.embedded import EmbeddedSqs, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def env(contract_env: dict[str, str]) -> dict[str, str]:
    """The contract's variables for this test's database and queue (tests/conftest.py)."""
    return contract_env


def cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def test_version_is_the_installed_packages() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"logins, version {version('logins-etl')}"


def test_check_json_parses_with_every_check_and_no_secret(env: dict[str, str]) -> None:
    password_env = {**env, "DATABASE_URL": env["DATABASE_URL"].replace("//", "//postgres:pw-9x@")}
    offline = cli(password_env, "check", "--json")
    assert offline.exit_code == 0, offline.output
    report = json.loads(offline.stdout)
    assert report["ok"] is True and report["error"] is None
    assert [c["name"] for c in report["checks"]] == ["config", "keys", "posture"]
    assert report["keys"]["token_custody"] == "file"
    assert report["config"]["sink"]["table"] == "user_logins"
    assert "pw-9x" not in offline.stdout

    assert cli(env, "migrate").exit_code == 0
    connected = cli(env, "check", "--connect", "--json")
    assert connected.exit_code == 0, connected.output
    report = json.loads(connected.stdout)
    assert [(c["name"], c["ok"]) for c in report["checks"]] == [
        ("config", True), ("keys", True), ("posture", True), ("sqs", True), ("postgres", True)
    ]  # fmt: skip

    closed = f"http://127.0.0.1:{free_port()}"
    refused = cli(
        {**env, "SQS_ENDPOINT_URL": closed, "LOGINS_STARTUP_TIMEOUT": "0"},
        "check", "--connect", "--json",
    )  # fmt: skip
    assert refused.exit_code == 2
    report = json.loads(refused.stdout)
    assert report["ok"] is False and closed in report["error"]
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["sqs"]


def test_check_json_reports_an_unusable_configuration(env: dict[str, str]) -> None:
    result = cli({**env, "LOGINS_TOKEN_KEY_FILE": ""}, "check", "--json")
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["checks"] == [{"name": "config", "ok": False, "detail": report["error"]}]
    assert "tokens.key_file (LOGINS_TOKEN_KEY_FILE)" in report["error"]


def test_stats_json_parses_and_text_shows_no_python_reprs(env: dict[str, str]) -> None:
    early = cli(env, "stats")  # before the schema exists: what to do, not a traceback
    assert early.exit_code == 2 and "run `logins migrate`" in early.output
    assert "Traceback" not in early.output
    assert cli(env, "migrate").exit_code == 0
    result = cli(env, "stats", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert (stats["messages"], stats["rows"], stats["vault_entries"]) == (0, 0, 0)
    assert stats["vault_by_field"] == {}
    text = cli(env, "stats")
    assert text.exit_code == 0
    assert "vault entries      : 0 (none)" in text.stdout
    assert not any(c in text.stdout for c in "{}[]"), text.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["check"],
        ["check", "--connect"],
        ["stats"],
        ["migrate"],
        ["tokenize", "--field", "ip", "192.0.2.1"],
        ["test", "config/examples/logins.test.yaml"],
        ["generate", "-n", "1"],
        ["vault", "status"],
        ["purge", "--dry-run"],
    ],
)
def test_an_unusable_configuration_exits_2_from_every_command(
    env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: ../no-such-base.yaml\n")
    result = cli({**env, "LOGINS_CONFIG": str(bad)}, *args)
    assert result.exit_code == 2, result.output
    assert "no-such-base.yaml" in result.output


def test_an_unreachable_database_exits_2(env: dict[str, str]) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    result = cli({**env, "DATABASE_URL": closed}, "stats")
    assert result.exit_code == 2 and "cannot connect to the database" in result.output


def test_generate_sends_to_the_configured_queue_through_its_endpoint(
    env: dict[str, str], sqs: EmbeddedSqs, queue_url: str
) -> None:
    result = cli(env, "generate", "-n", "7")  # no --queue-url, no --endpoint-url
    assert result.exit_code == 0, result.output
    assert f"sent 7 messages to {queue_url}" in result.output
    attributes = sqs.client().get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "7"

    printed = cli(env, "generate", "-n", "3", "--stdout")
    assert printed.exit_code == 0
    assert len(printed.stdout.splitlines()) == 3  # one body a line


def test_generate_names_the_endpoint_that_refuses(env: dict[str, str]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    result = cli({**env, "SQS_ENDPOINT_URL": closed}, "generate", "-n", "1")
    assert result.exit_code == 2, result.output
    assert closed in result.output and "Traceback" not in result.output
