"""Fail fast, say why: a queue or database that refuses stops the flow at start within seconds
(exit 2) with the service, where, and the server's own error code and message; a transient
error is retried for `startup_timeout_seconds` with the same words on every log line; a
permanent error while running stops the flow after it committed what it holds.

Every case runs the real flow (`python -m bytewax.run flows.logins`) against real servers:
moto's SQS (a second moto process with IAM authentication on, for access denied, unknown keys
and bad signatures), PostgreSQL (a private server with password authentication for one role),
a closed port, and a host name that cannot resolve (`.invalid` is reserved for that).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import boto3
import psycopg
import pytest
from psycopg import sql

from connectors.postgres.migrations import migrate
from logins.dev.embedded import EmbeddedPostgres, EmbeddedSqs, dsn_with_database, free_port
from logins.dev.generator import generate
from logins.dev.seed import send_bodies
from tests.helpers import (
    config_for,
    module_logging_to,
    one,
    private_data_dir,
    queue_total,
    run_module,
    service_env,
    start_module,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

FLOW = ["bytewax.run", "flows.logins", "-w", "2"]
PASSWORD = "s3cret-Pw-9"  # the test role's: must never appear in any output
# A permanent error ends the start within this: it was never (SQS) or after 300 s (PostgreSQL).
# It takes about as long as a start with a missing key file (7.6 s against 8.7-11.2 s once at
# load average 9, mostly imports); the bound leaves room for a loaded machine.
PERMANENT_S = 60.0
ROLE = "logins_pw"
READER = "logins_reader"  # a login granted logins_analyst: it may read, not write
PIPELINE = "app_pipeline"  # a login granted logins_pipeline, as docs/vault.md#roles sets one up


# --- servers --------------------------------------------------------------------------------------


@dataclass
class AuthSqs:
    """A moto server process that authenticates and authorises every call (IAM)."""

    endpoint: str
    queue_url: str
    reader: tuple[str, str]  # sqs:* allowed
    nobody: tuple[str, str]  # no policy: AccessDenied
    admin: tuple[str, str]  # iam:* and sqs:*, for revoking the reader's key

    def admin_client(self, service: Literal["sqs", "iam"]) -> Any:
        """A boto3 client of `service` on this server, as the admin."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.admin[0],
            aws_secret_access_key=self.admin[1],
        )


@pytest.fixture(scope="module")
def auth_sqs() -> Iterator[AuthSqs]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "moto did not start"
                time.sleep(0.1)
        setup = boto3.Session(
            region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup"
        )
        iam = setup.client("iam", endpoint_url=endpoint)
        queue_url = setup.client("sqs", endpoint_url=endpoint).create_queue(
            QueueName="login-queue"
        )["QueueUrl"]

        def user(name: str, actions: list[str]) -> tuple[str, str]:
            iam.create_user(UserName=name)
            if actions:
                policy = {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
                }
                iam.put_user_policy(
                    UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy)
                )
            key = iam.create_access_key(UserName=name)["AccessKey"]
            return key["AccessKeyId"], key["SecretAccessKey"]

        servers = AuthSqs(
            endpoint,
            queue_url,
            user("reader", ["sqs:*"]),
            user("nobody", []),
            user("admin", ["iam:*", "sqs:*"]),
        )
        # From now on every request is authenticated and authorised.
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=5)
        yield servers
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class PasswordPostgres:
    admin_dsn: str  # trust, superuser
    port: int

    def dsn(self, user: str = ROLE, password: str = PASSWORD, database: str = "logins") -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="module")
def pw_postgres() -> Iterator[PasswordPostgres]:
    """A private PostgreSQL where ROLE logs in with a password (scram) and the superuser by
    trust; database `logins` has the flow's tables, owned by the superuser."""
    with private_data_dir() as data_dir, EmbeddedPostgres(data_dir) as server:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            hba = Path(one(conn, "SHOW hba_file"))
            hba.write_text(
                f"host all {ROLE},{READER},{PIPELINE} 127.0.0.1/32 scram-sha-256\n"
                + hba.read_text()
            )
            conn.execute("SELECT pg_reload_conf()")
            for role in (ROLE, READER):
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(PASSWORD)
                    )
                )
            conn.execute("CREATE DATABASE logins")
        yield PasswordPostgres(server.dsn, server.port)


@pytest.fixture
def env_for(
    keys: dict[str, Path], sqs: EmbeddedSqs, queue_url: str
) -> Callable[..., dict[str, str]]:
    """`env_for(database_url, **extra)`: the contract's variables for this test's queue and
    that database (a password server's, or none: "x")."""

    def env(database_url: str, **extra: str) -> dict[str, str]:
        return service_env(
            keys,
            database_url=database_url,
            queue_url=queue_url,
            endpoint_url=sqs.endpoint_url,
            **extra,
        )

    return env


# --- running the flow ---------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    seconds: float
    output: str


def start_flow(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], float]:
    with log.open("wb") as out:
        process = start_module(FLOW, env, stdout=out, stderr=subprocess.STDOUT, text=False)
    return process, time.monotonic()


def run_all(
    cases: dict[str, dict[str, str]], tmp_path: Path, timeout: float = 90
) -> dict[str, Result]:
    """Start every case's flow at once (each waits on its own servers), then collect them."""
    started = {name: start_flow(env, tmp_path / f"{name}.log") for name, env in cases.items()}
    results: dict[str, Result] = {}
    for name, (process, at) in started.items():
        try:
            code = process.wait(max(1.0, at + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        seconds = time.monotonic() - at
        results[name] = Result(
            code, seconds, (tmp_path / f"{name}.log").read_text(errors="replace")
        )
    return results


def cannot_start_line(result: Result) -> str:
    lines = [
        line for line in result.output.splitlines() if line.startswith("logins: cannot start:")
    ]
    assert lines, result.output[-3000:]
    return lines[0]


def assert_refused_at_start(
    results: dict[str, Result], expected: Mapping[str, tuple[str, ...]], service: str
) -> tuple[dict[str, str], list[str]]:
    """Every case exited 2 with a `cannot start` line holding its expected words; all but
    "refused" (a closed port: transient) at once, without a retry; "refused" after its 5 s of
    retries, each logged with its ConnectionRefused. Returns those lines and the retries'."""
    lines: dict[str, str] = {}
    for name, words in expected.items():
        result = results[name]
        assert result.code == 2, (name, result.output[-3000:])
        line = lines[name] = cannot_start_line(result)
        for word in words:
            assert word in line, (name, word, line)
    for name in expected.keys() - {"refused"}:  # permanent: no retry, at once
        assert results[name].seconds < PERMANENT_S, (name, results[name].seconds)
        assert "retrying" not in results[name].output, name
    refused = results["refused"]
    assert 5 <= refused.seconds < 5 + PERMANENT_S, refused.seconds
    retries = [
        line for line in refused.output.splitlines() if f"start-up check {service} (attempt" in line
    ]
    assert retries and all("ConnectionRefused" in line for line in retries), refused.output[-3000:]
    return lines, retries


# --- at start -------------------------------------------------------------------------------------


def test_sqs_refusals_stop_the_start_with_the_servers_words(
    tmp_path: Path,
    keys: dict[str, Path],
    auth_sqs: AuthSqs,
    sqs: EmbeddedSqs,
    database_url: str,
) -> None:
    good = service_env(
        keys,
        database_url=database_url,
        queue_url=auth_sqs.queue_url,
        endpoint_url=auth_sqs.endpoint,
        LOGINS_STOP_WHEN_IDLE="3",
    )
    missing_queue = f"{sqs.endpoint_url}/000000000000/no-such-queue"
    closed = free_port()

    def creds(pair: tuple[str, str]) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": pair[0], "AWS_SECRET_ACCESS_KEY": pair[1]}

    cases = {
        "no_such_queue": {
            **good,
            "SQS_ENDPOINT_URL": sqs.endpoint_url,
            "SQS_QUEUE_URL": missing_queue,
        },
        "access_denied": {**good, **creds(auth_sqs.nobody)},
        "unknown_key": {**good, **creds(("AKIAUNKNOWNKEY000000", "whatever"))},
        "bad_signature": {**good, **creds((auth_sqs.reader[0], "not-the-secret"))},
        "unknown_host": {
            **good,
            "SQS_ENDPOINT_URL": "http://nonexistent.invalid:4566",
            "SQS_QUEUE_URL": "http://nonexistent.invalid:4566/000000000000/q",
        },
        "refused": {
            **good,
            "SQS_ENDPOINT_URL": f"http://127.0.0.1:{closed}",
            "LOGINS_STARTUP_TIMEOUT": "5",
        },
    }
    results = run_all(cases, tmp_path)
    expected = {
        "no_such_queue": (
            "AWS.SimpleQueueService.NonExistentQueue",
            "does not exist",
            missing_queue,
        ),
        "access_denied": (
            "AccessDenied",
            "not authorized to perform: sqs:GetQueueAttributes",
            auth_sqs.queue_url,
        ),
        "unknown_key": (
            "InvalidClientTokenId",
            "security token included in the request is invalid",
            auth_sqs.queue_url,
        ),
        "bad_signature": (
            "SignatureDoesNotMatch",
            "Check your AWS Secret Access Key",
            auth_sqs.queue_url,
        ),
        "unknown_host": ("UnknownHost", "nonexistent.invalid", "Name or service not known"),
        "refused": ("ConnectionRefused", f"127.0.0.1:{closed}", "still failing after"),
    }
    lines, retries = assert_refused_at_start(results, expected, "sqs")
    for name, line in lines.items():
        assert line.startswith("logins: cannot start: SQS queue "), (name, line)
        output = results[name].output
        assert "not-the-secret" not in output
        assert auth_sqs.reader[1] not in output
        assert "committed" not in output  # nothing was received
    assert all("connection refused" in line for line in retries)


def test_postgres_refusals_stop_the_start_with_the_servers_words(
    tmp_path: Path, env_for: Callable[..., dict[str, str]], pw_postgres: PasswordPostgres
) -> None:
    # The tables exist, migrated by the superuser. ROLE holds logins_pipeline but does not
    # inherit its privileges (ALTER ROLE ... NOINHERIT before the GRANT); READER holds
    # logins_analyst, which reads and may not write.
    with psycopg.connect(
        dsn_with_database(pw_postgres.admin_dsn, "logins"), autocommit=True
    ) as conn:
        migrate(conn, config_for(env_for("x")))
        conn.execute(sql.SQL("ALTER ROLE {} NOINHERIT").format(sql.Identifier(ROLE)))
        conn.execute(sql.SQL("GRANT logins_pipeline TO {}").format(sql.Identifier(ROLE)))
        conn.execute(sql.SQL("GRANT logins_analyst TO {}").format(sql.Identifier(READER)))
    closed = free_port()
    good = env_for(pw_postgres.dsn(), LOGINS_STOP_WHEN_IDLE="3")
    cases = {
        "bad_password": {**good, "DATABASE_URL": pw_postgres.dsn(password="wrong-password")},
        "no_database": {**good, "DATABASE_URL": pw_postgres.dsn(database="nodb")},
        "no_privilege": good,
        "read_only": {**good, "DATABASE_URL": pw_postgres.dsn(user=READER)},
        "unknown_host": {
            **good,
            "DATABASE_URL": f"postgresql://{ROLE}:{PASSWORD}@nonexistent.invalid/x",
        },
        "refused": {
            **good,
            "DATABASE_URL": f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{closed}/x",
            "LOGINS_STARTUP_TIMEOUT": "5",
        },
    }
    results = run_all(cases, tmp_path)
    at = f"127.0.0.1:{pw_postgres.port}"
    expected = {
        "bad_password": (
            "PostgreSQL",
            at,
            f"(user {ROLE})",
            "28P01",
            f'password authentication failed for user "{ROLE}"',
        ),
        "no_database": ("PostgreSQL", f"{at}/nodb", "3D000", 'database "nodb" does not exist'),
        "no_privilege": (  # the server's own refusal, at the schema version check
            "PostgreSQL",
            f"{at}/logins",
            "42501",
            "permission denied for table logins_schema_version",
        ),
        "read_only": (  # the start-up check's, from has_any_column_privilege
            "PostgreSQL",
            f"{at}/logins (user {READER})",
            "42501",
            f"permission denied: role {READER} lacks INSERT on user_logins",
        ),
        "unknown_host": (
            "PostgreSQL",
            "nonexistent.invalid",
            "UnknownHost",
            "failed to resolve host",
        ),
        "refused": (
            "PostgreSQL",
            f"127.0.0.1:{closed}",
            "ConnectionRefused",
            "Connection refused",
            "still failing after",
        ),
    }
    assert_refused_at_start(results, expected, "postgres")
    for name in expected:
        output = results[name].output
        assert PASSWORD not in output and "wrong-password" not in output, name


def test_check_connect_prints_one_line_per_check(
    contract_env: dict[str, str], sqs: EmbeddedSqs, database_url: str
) -> None:
    def check(**override: str) -> subprocess.CompletedProcess[str]:
        return run_module(
            ["logins", "check", "--connect"], {**contract_env, **override}, timeout=60
        )

    ok = check()
    assert ok.returncode == 0, ok.stderr
    assert [line.split()[:2] for line in ok.stdout.splitlines()] == [
        ["ok", "config"],
        ["ok", "keys"],
        ["ok", "posture"],
        ["ok", "sqs"],
        ["ok", "postgres"],
    ]
    assert "0 visible, 0 in flight, 0 delayed (json protocol)" in ok.stdout
    missing = f"{sqs.endpoint_url}/000000000000/gone"
    failed = check(SQS_QUEUE_URL=missing, DATABASE_URL=dsn_with_database(database_url, "nodb"))
    assert failed.returncode == 2, failed.stderr
    lines = failed.stdout.splitlines()
    assert lines[3].startswith(
        f"FAIL sqs       SQS queue {missing}: AWS.SimpleQueueService.NonExistentQueue"
    )
    assert (
        lines[4].startswith("FAIL postgres  PostgreSQL ")
        and '3D000: FATAL: database "nodb" does not exist' in lines[4]
    )


# --- while running --------------------------------------------------------------------------------


def ledger_ids(dsn: str) -> set[str]:
    try:
        with psycopg.connect(dsn) as conn:
            return {row[0] for row in conn.execute("SELECT message_id FROM logins_ledger")}
    except psycopg.errors.UndefinedTable:  # before the flow's migrations
        return set()


def test_queue_deleted_while_running_commits_what_it_holds_then_exits_2(
    tmp_path: Path, contract_env: dict[str, str], sqs: EmbeddedSqs, queue_url: str
) -> None:
    database_url = contract_env["DATABASE_URL"]
    client = sqs.client()
    first = send_bodies(client, queue_url, (m.body for m in generate(40, seed=61)))
    with module_logging_to(FLOW, contract_env, tmp_path / "flow.log") as process:
        wait_for(lambda: ledger_ids(database_url) >= set(first), 60, "the first batch committed")
        # Hold the next batch: the ledger cannot be written while this transaction locks it.
        with psycopg.connect(database_url) as lock:
            lock.execute("LOCK TABLE logins_ledger IN SHARE MODE")
            held = send_bodies(client, queue_url, (m.body for m in generate(30, seed=62)))

            def all_received() -> bool:
                attrs = client.get_queue_attributes(
                    QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]
                return attrs["ApproximateNumberOfMessages"] == "0"

            wait_for(all_received, 30, "the flow to receive the held batch")
            client.delete_queue(QueueUrl=queue_url)
            deleted_at = time.monotonic()
            wait_for(
                lambda: "NonExistentQueue" in (tmp_path / "flow.log").read_text(),
                30,
                "the flow to notice",
            )
            assert process.poll() is None  # still holding the batch it could not commit yet
        code = process.wait(60)
    output = (tmp_path / "flow.log").read_text(errors="replace")
    assert code == 2, output[-3000:]
    assert time.monotonic() - deleted_at < 30
    assert f"SQS queue {queue_url}: AWS.SimpleQueueService.NonExistentQueue" in output
    assert "what is held is committed, then the flow exits 2" in output
    assert ledger_ids(database_url) == set(first) | set(held)  # nothing it held was lost


def test_credentials_revoked_while_running_stop_the_flow(
    tmp_path: Path,
    keys: dict[str, Path],
    auth_sqs: AuthSqs,
    database_url: str,
) -> None:
    admin = auth_sqs.admin_client("sqs")
    queue_url = admin.create_queue(QueueName="revoked")["QueueUrl"]
    sent = send_bodies(admin, queue_url, (m.body for m in generate(30, seed=63)))
    env = service_env(
        keys,
        database_url=database_url,
        queue_url=queue_url,
        endpoint_url=auth_sqs.endpoint,
        AWS_ACCESS_KEY_ID=auth_sqs.reader[0],
        AWS_SECRET_ACCESS_KEY=auth_sqs.reader[1],
    )
    with module_logging_to(FLOW, env, tmp_path / "flow.log") as process:
        wait_for(lambda: ledger_ids(database_url) == set(sent), 60, "everything committed")
        iam = auth_sqs.admin_client("iam")
        iam.delete_access_key(UserName="reader", AccessKeyId=auth_sqs.reader[0])
        revoked_at = time.monotonic()
        code = process.wait(60)
    output = (tmp_path / "flow.log").read_text(errors="replace")
    assert code == 2, output[-3000:]
    assert time.monotonic() - revoked_at < 30
    assert "InvalidClientTokenId: The security token included in the request is invalid" in output
    assert auth_sqs.reader[1] not in output


def test_database_password_changed_while_running_stops_the_flow(
    tmp_path: Path,
    env_for: Callable[..., dict[str, str]],
    sqs: EmbeddedSqs,
    queue_url: str,
    pw_postgres: PasswordPostgres,
) -> None:
    """Reconnecting with a password that no longer works is not an outage: exit 2 at once
    (it was: retried for sink.retry.give_up_after_seconds, 300 s), nothing of it deleted."""
    with psycopg.connect(pw_postgres.admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE pipelined")
    with psycopg.connect(
        dsn_with_database(pw_postgres.admin_dsn, "pipelined"), autocommit=True
    ) as conn:
        migrate(conn, config_for(env_for("x")))  # as the superuser: tables, roles, grants
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE logins_pipeline").format(
                sql.Identifier(PIPELINE), sql.Literal(PASSWORD)
            )
        )
    dsn = pw_postgres.dsn(user=PIPELINE, database="pipelined")
    client = sqs.client()
    first = send_bodies(client, queue_url, (m.body for m in generate(30, seed=64)))
    with module_logging_to(FLOW, env_for(dsn), tmp_path / "flow.log") as process:
        wait_for(lambda: ledger_ids(dsn) == set(first), 60, "the first messages committed")
        with psycopg.connect(pw_postgres.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD 'changed-elsewhere'").format(
                    sql.Identifier(PIPELINE)
                )
            )
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (PIPELINE,),
            )
        later = send_bodies(client, queue_url, (m.body for m in generate(20, seed=65)))
        changed_at = time.monotonic()
        code = process.wait(90)
    output = (tmp_path / "flow.log").read_text(errors="replace")
    assert code == 2, output[-3000:]
    assert time.monotonic() - changed_at < PERMANENT_S
    assert f'28P01: FATAL: password authentication failed for user "{PIPELINE}"' in output
    assert "nothing of this batch was deleted from the queue" in output
    assert PASSWORD not in output and "changed-elsewhere" not in output
    assert queue_total(client, queue_url) == len(later)  # still there, for the next run
