"""Shared fixtures: a real PostgreSQL and a real SQS-protocol server on loopback, per session.

Nothing is mocked in-process and nothing needs Docker: the servers come from
``logins.dev.embedded``. If one cannot start, the tests that need it error; they never skip.
Set LOGINS_TEST_DATABASE_URL to use an existing PostgreSQL instead of the embedded one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import psycopg
import pytest
from botocore.exceptions import ClientError
from hypothesis import settings
from psycopg import sql

from logins.dev.embedded import EmbeddedKms, EmbeddedPostgres, EmbeddedSqs, dsn_with_database
from logins.dev.seed import send_bodies
from tests.helpers import make_keys, private_data_dir, queue_total, service_env

# Property tests check properties, not speed: Hypothesis's default 200 ms deadline per example
# only fails them on a loaded 2-core machine (test_vault_round_trips_any_text did). Speed is
# measured by bench/, not by tests.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

DATABASE_URL_ENV = "LOGINS_TEST_DATABASE_URL"


@pytest.fixture(scope="session", autouse=True)
def _dummy_aws_env() -> Iterator[None]:
    """Dummy AWS credentials for moto, inherited by subprocesses (the flow under test).

    A real profile or session token in the developer's shell must never mix in.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser DSN: $LOGINS_TEST_DATABASE_URL, else an embedded server for the session."""
    external = os.environ.get(DATABASE_URL_ENV)
    if external:
        yield external
        return
    with private_data_dir() as data_dir, EmbeddedPostgres(data_dir) as server:
        yield server.dsn


@pytest.fixture
def make_database(pg_admin_dsn: str) -> Iterator[Callable[[], str]]:
    """Creates fresh, uniquely named databases on demand; drops them all after the test."""
    created: list[str] = []

    def make() -> str:
        name = f"t_{secrets.token_hex(8)}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return dsn_with_database(pg_admin_dsn, name)

    yield make
    if created:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            for name in created:
                # FORCE: a test may leave connections open (or a flow subprocess still running).
                drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                conn.execute(drop.format(sql.Identifier(name)))


@pytest.fixture
def database_url(make_database: Callable[[], str]) -> str:
    """DSN of a fresh database for this test, so tests never see each other's tables."""
    return make_database()


@pytest.fixture(scope="session")
def sqs() -> Iterator[EmbeddedSqs]:
    """One SQS-protocol server (moto) for the session, on a free loopback port."""
    with EmbeddedSqs() as server:
        yield server


@pytest.fixture(scope="session")
def kms() -> Iterator[EmbeddedKms]:
    """moto's KMS server (GenerateMac, real wire protocol) for the session, on a free port."""
    with EmbeddedKms() as server:
        yield server


@pytest.fixture
def queue_url(sqs: EmbeddedSqs) -> Iterator[str]:
    """URL of a fresh queue for this test (moto's state is process-wide: names must differ)."""
    url = sqs.create_queue(f"logins-test-{secrets.token_hex(8)}")
    yield url
    with contextlib.suppress(ClientError):  # the test may have deleted it itself
        sqs.client().delete_queue(QueueUrl=url)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Token key and vault key pair for the session (tests that rotate or chmod keys take
    their own: tests/e2e/conftest.py)."""
    return make_keys(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture
def contract_env(
    keys: dict[str, Path], database_url: str, queue_url: str, sqs: EmbeddedSqs
) -> dict[str, str]:
    """The operator contract's variables pointing at this test's database and queue; the flow
    runs until stopped."""
    return service_env(
        keys, database_url=database_url, queue_url=queue_url, endpoint_url=sqs.endpoint_url
    )


@pytest.fixture
def flow_env(contract_env: dict[str, str]) -> dict[str, str]:
    """`contract_env`, and the flow stops after a second idle."""
    return {**contract_env, "LOGINS_STOP_WHEN_IDLE": "1"}


@pytest.fixture
def send_to_queue(sqs: EmbeddedSqs, queue_url: str) -> Callable[[Iterable[str]], list[str]]:
    """Sends bodies to this test's queue; the message ids SQS assigned, in order."""
    return lambda bodies: send_bodies(sqs.client(), queue_url, bodies)


@pytest.fixture
def queue_counts(sqs: EmbeddedSqs, queue_url: str) -> Callable[[], int]:
    """Messages in this test's queue, visible or in flight."""
    return lambda: queue_total(sqs.client(), queue_url)
