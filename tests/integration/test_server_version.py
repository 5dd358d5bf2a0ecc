"""An unsupported PostgreSQL is refused at once, in words, by the flow's start-up checks,
`logins check --connect` and `logins migrate`. The test server is 16, so the minimum is
raised above it here; `make compat-test` does the same against a real 11.13."""

from __future__ import annotations

import time

import psycopg
import pytest
from click.testing import CliRunner

from connectors import preflight
from connectors.postgres import serverversion
from logins.cli import main
from tests.helpers import config_for

pytestmark = pytest.mark.integration


@pytest.fixture
def env(contract_env: dict[str, str]) -> dict[str, str]:
    """The contract's variables for this test's database and queue (tests/conftest.py)."""
    return contract_env


@pytest.fixture
def too_new_to_serve(monkeypatch: pytest.MonkeyPatch, database_url: str) -> str:
    """Require a release above the test server's: the message it will give."""
    with psycopg.connect(database_url) as conn:
        have = serverversion.version_text(conn.info.server_version)
    monkeypatch.setattr(serverversion, "MINIMUM", 990000)
    monkeypatch.setattr(serverversion, "MINIMUM_TEXT", "99")
    return f"PostgreSQL 99 or later is required (this server is {have})"


def test_the_flows_start_up_check_refuses_at_once(
    env: dict[str, str], too_new_to_serve: str
) -> None:
    started = time.monotonic()
    sqs_check, pg_check = preflight.run(config_for(env), wait_seconds=20, migrate=True)
    assert sqs_check.ok
    assert not pg_check.ok
    assert too_new_to_serve in pg_check.detail
    assert pg_check.failure is not None and pg_check.failure.permanent
    assert time.monotonic() - started < 5  # not retried for the 20 s a transient error gets


def test_check_connect_and_migrate_exit_2_naming_the_version(
    env: dict[str, str], too_new_to_serve: str, database_url: str
) -> None:
    check = CliRunner().invoke(main, ["check", "--connect"], env=env)
    assert check.exit_code == 2, check.output
    assert too_new_to_serve in check.output
    migrate = CliRunner().invoke(main, ["migrate"], env=env)
    assert migrate.exit_code == 2, migrate.output
    assert too_new_to_serve in migrate.output
    with psycopg.connect(database_url) as conn:  # nothing was created
        assert conn.execute("SELECT to_regclass('user_logins')").fetchone() == (None,)
