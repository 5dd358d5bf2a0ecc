"""The Lambda handler, invoked in-process with SQS event JSON as Lambda sends it, against the
session's real PostgreSQL, with config/lambda.yaml as shipped (LOGINS_ENV=lambda)."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from connectors.postgres.migrations import migrate
from flows import lambda_handler
from logins.core.config import AppConfig, load_config
from logins.core.keys import load_token_keys
from logins.core.tokens import Tokenizer
from logins.dev.embedded import free_port
from tests.helpers import assert_exact_ledger, fetch
from tests.integration.conftest import SecretStore

QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:logins"


def login(i: int, **over: Any) -> dict[str, Any]:
    return {
        "user_id": f"424cdd21-{i:04d}",
        "app_version": "2.3.0",
        "device_type": "android",
        "ip": f"199.172.{i // 250}.{i % 250 + 1}",
        "locale": "RU",
        "device_id": f"593-47-{i:04d}",
        **over,
    }


def record(
    body: str, *, message_id: str | None = None, receive_count: int = 1, sent_ms: int | None = None
) -> dict[str, Any]:
    """One record of Lambda's SQS event, shaped as Lambda delivers it."""
    now_ms = int(time.time() * 1000)
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": "AQEB" + secrets.token_urlsafe(48),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": str(sent_ms or now_ms),
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": str(now_ms),
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # SQS's own checksum
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-1",
    }


def invoke(*records: dict[str, Any]) -> list[str]:
    """The ids the handler reports as not committed."""
    answer = lambda_handler.handler({"Records": list(records)}, None)
    assert set(answer) == {"batchItemFailures"}
    return [f["itemIdentifier"] for f in answer["batchItemFailures"]]


def ids(*records: dict[str, Any]) -> list[str]:
    return [r["messageId"] for r in records]


@pytest.fixture
def lambda_env(
    keys: dict[str, Path], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., AppConfig]]:
    """Sets the function's environment (as the SAM template does) and migrates the database
    (as `logins migrate` does before a deploy); returns a function to change variables."""

    def setup(**over: str) -> AppConfig:
        lambda_handler.reset()
        variables = {
            "LOGINS_ENV": "lambda",
            "SQS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/000000000000/logins",
            "AWS_REGION": "us-east-1",
            "DATABASE_URL": database_url,
            "LOGINS_TOKEN_KEY_FILE": str(keys["token.key"]),
            "LOGINS_VAULT_PUBLIC_KEY_FILE": str(keys["vault.pub"]),
            **over,
        }
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return load_config()

    config = setup()
    with psycopg.connect(database_url) as conn:
        migrate(conn, config)
    yield setup
    lambda_handler.reset()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_no_value_in(text: str, bodies: list[dict[str, Any]]) -> None:
    values = {b[k] for b in bodies for k in ("ip", "device_id", "user_id")}
    assert [v for v in values if v in text] == []


def test_valid_malformed_and_resent_records_all_commit(
    lambda_env: Callable[..., AppConfig], database_url: str, logs: pytest.LogCaptureFixture
) -> None:
    config = lambda_env()
    bodies = [login(i) for i in range(5)]
    valid = [record(json.dumps(b)) for b in bodies]
    malformed = [
        record("not json {"),
        record(json.dumps({k: v for k, v in login(90).items() if k != "device_id"})),
        record(json.dumps(login(91, ip="999.1.1.1"))),
    ]
    sent = int(valid[0]["attributes"]["SentTimestamp"])
    resend = record(valid[0]["body"], sent_ms=sent + 5_000)
    answer = lambda_handler.handler({"Records": [*valid, *malformed, resend]}, None)
    assert answer == {"batchItemFailures": []}

    with psycopg.connect(database_url) as conn:
        outcome = assert_exact_ledger(conn, config, ids(*valid, *malformed, resend))
        reasons = dict(fetch(conn, "SELECT message_id, reason FROM user_logins_rejected"))
        masked = fetch(conn, "SELECT masked_ip, masked_device_id FROM user_logins")
        duplicates = fetch(conn, "SELECT message_id FROM user_logins_duplicates")
    assert outcome["row"] == set(ids(*valid))
    assert outcome["duplicate"] == {resend["messageId"]}
    assert duplicates == [(resend["messageId"],)]
    assert [reasons[i] for i in ids(*malformed)] == ["not_json", "missing_field", "invalid_value"]
    assert config.tokens.key_file is not None
    tokenizer = Tokenizer(load_token_keys(config.tokens.key_file))
    assert {m[0] for m in masked} == {tokenizer.token("ip", b["ip"]) for b in bodies}
    assert "committed 9 records (5 rows, 3 rejected, 1 duplicates" in logs.text
    assert_no_value_in(logs.text + json.dumps(answer), [*bodies, login(90), login(91)])


def test_a_redelivered_record_has_no_second_effect(
    lambda_env: Callable[..., AppConfig], database_url: str, logs: pytest.LogCaptureFixture
) -> None:
    config = lambda_env()
    first = record(json.dumps(login(1)))
    other = record(json.dumps(login(2)))
    assert invoke(first) == []
    again = {**first, "attributes": {**first["attributes"], "ApproximateReceiveCount": "2"}}
    assert invoke(again, other, again) == []  # once more, and twice in one batch
    with psycopg.connect(database_url) as conn:
        outcome = assert_exact_ledger(conn, config, ids(first, other))
        rows = fetch(conn, "SELECT count(*) FROM user_logins")
    assert outcome["row"] == {first["messageId"], other["messageId"]}
    assert rows == [(2,)]
    assert "2 redelivered" in logs.text  # the second batch's two copies
    assert_no_value_in(logs.text, [login(1), login(2)])


def test_dedupe_state_lives_one_invocation(
    lambda_env: Callable[..., AppConfig], database_url: str, logs: pytest.LogCaptureFixture
) -> None:
    """A resend in the same batch is a duplicate; in a later invocation it becomes a row (the
    flow's window spans batches, Lambda's does not). Either way nothing is lost."""
    config = lambda_env()
    first = record(json.dumps(login(1)))
    sent = int(first["attributes"]["SentTimestamp"])
    same_batch = record(first["body"], sent_ms=sent + 1_000)
    later = record(first["body"], sent_ms=sent + 2_000)
    assert invoke(first, same_batch) == []
    assert invoke(later) == []
    with psycopg.connect(database_url) as conn:
        outcome = assert_exact_ledger(conn, config, ids(first, same_batch, later))
    assert outcome["duplicate"] == {same_batch["messageId"]}
    assert outcome["row"] == {first["messageId"], later["messageId"]}
    assert_no_value_in(logs.text, [login(1)])


def test_a_row_the_database_refuses_goes_back_until_it_is_parked(
    lambda_env: Callable[..., AppConfig], database_url: str, logs: pytest.LogCaptureFixture
) -> None:
    config = lambda_env()
    assert config.sink.poison_after_attempts == 3
    with psycopg.connect(database_url) as conn:  # the analysts' table refuses these logins
        conn.execute(
            "ALTER TABLE user_logins ADD CONSTRAINT no_kiosk CHECK (device_type <> 'kiosk')"
        )
    good = [record(json.dumps(login(i))) for i in range(4)]
    bad_body = login(9, device_type="kiosk")
    bad = record(json.dumps(bad_body))
    assert invoke(good[0], bad, good[1]) == [bad["messageId"]]
    bad2 = {**bad, "attributes": {**bad["attributes"], "ApproximateReceiveCount": "2"}}
    assert invoke(bad2, good[2]) == [bad["messageId"]]
    bad3 = {**bad, "attributes": {**bad["attributes"], "ApproximateReceiveCount": "3"}}
    assert invoke(bad3, good[3]) == []

    with psycopg.connect(database_url) as conn:
        outcome = assert_exact_ledger(conn, config, ids(*good, bad))
        parked = fetch(conn, "SELECT reason, detail, receive_count FROM user_logins_rejected")
    assert outcome["row"] == set(ids(*good))
    assert parked == [
        ("poison", "the database refused the row: SQLSTATE 23514 (CheckViolation)", 3)
    ]
    assert f"message {bad['messageId']} refused by the database (delivery 1)" in logs.text
    assert f"message {bad['messageId']} parked as poison after 3 attempts" in logs.text
    assert_no_value_in(logs.text, [*(login(i) for i in range(4)), bad_body])


def _block_connections(admin_dsn: str, database_url: str, allow: bool) -> None:
    """Stop (or restore) all access to the test's database: no new connections, and the
    open ones are terminated."""
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    assert isinstance(name, str)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.SQL("true" if allow else "false")
            )
        )
        if not allow:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def test_a_database_outage_returns_every_record_within_seconds(
    lambda_env: Callable[..., AppConfig],
    database_url: str,
    pg_admin_dsn: str,
    logs: pytest.LogCaptureFixture,
) -> None:
    config = lambda_env(LOGINS_DB_GIVE_UP_SECONDS="2")
    warm = record(json.dumps(login(0)))
    assert invoke(warm) == []  # the connection is open and kept
    batch = [record(json.dumps(login(i))) for i in range(1, 4)]
    _block_connections(pg_admin_dsn, database_url, allow=False)
    try:
        started = time.monotonic()
        failed = invoke(*batch)
        elapsed = time.monotonic() - started
    finally:
        _block_connections(pg_admin_dsn, database_url, allow=True)
    assert failed == ids(*batch)
    bound = config.sink.retry.give_up_after_seconds + config.sink.connect_timeout_seconds + 2
    assert elapsed < bound
    assert "database still unavailable after 2.0s" in logs.text
    with psycopg.connect(database_url) as conn:
        assert_exact_ledger(conn, config, ids(warm))  # nothing of the batch committed

    assert invoke(*batch) == []  # Lambda redelivers them; the handler reconnects
    with psycopg.connect(database_url) as conn:
        assert_exact_ledger(conn, config, ids(warm, *batch))
    assert_no_value_in(logs.text, [login(i) for i in range(4)])


def test_no_database_at_cold_start_returns_every_record(
    lambda_env: Callable[..., AppConfig], logs: pytest.LogCaptureFixture
) -> None:
    config = lambda_env(
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/logins",
        LOGINS_DB_GIVE_UP_SECONDS="1",
    )
    batch = [record(json.dumps(login(i))) for i in range(3)]
    started = time.monotonic()
    assert invoke(*batch) == ids(*batch)
    assert time.monotonic() - started < config.sink.retry.give_up_after_seconds + 5
    assert "database still unavailable after 1.0s" in logs.text
    assert_no_value_in(logs.text, [login(i) for i in range(3)])


def test_connection_and_keys_are_kept_across_invocations(
    lambda_env: Callable[..., AppConfig],
    database_url: str,
    keys: dict[str, Path],
    secret_store: SecretStore,
    logs: pytest.LogCaptureFixture,
) -> None:
    """Keys and DSN from Secrets Manager and SSM, read once: the second invocation still
    works after the secrets are gone from the store, on the same database session."""
    dsn_ref = secret_store.put_secret(database_url)
    token_ref = secret_store.put_secret(keys["token.key"].read_text())
    vault_ref = secret_store.put_parameter(keys["vault.pub"].read_text())
    config = lambda_env(
        DATABASE_URL=dsn_ref,
        LOGINS_TOKEN_KEY_FILE=token_ref,
        LOGINS_VAULT_PUBLIC_KEY_FILE=vault_ref,
    )
    first, second = (record(json.dumps(login(i))) for i in (1, 2))
    logs.clear()  # from here on, only what the handler logs (at DEBUG, botocore's too)

    def sessions() -> list[tuple[Any, ...]]:
        with psycopg.connect(database_url) as conn:
            return fetch(
                conn,
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'logins-etl'"
                " AND datname = current_database()",
            )

    assert invoke(first) == []
    before = sessions()
    sm = secret_store.client("secretsmanager")
    for ref in (dsn_ref, token_ref):
        sm.delete_secret(SecretId=ref.split(":", 1)[1], ForceDeleteWithoutRecovery=True)
    secret_store.client("ssm").delete_parameter(Name=vault_ref.split(":", 1)[1])
    assert invoke(second) == []
    assert len(before) == 1 and sessions() == before
    tokenizer = Tokenizer(load_token_keys(keys["token.key"]))
    with psycopg.connect(database_url) as conn:
        assert_exact_ledger(conn, config, ids(first, second))
        masked = {r[0] for r in fetch(conn, "SELECT masked_device_id FROM user_logins")}
    assert masked == {tokenizer.token("device_id", login(i)["device_id"]) for i in (1, 2)}
    assert_no_value_in(logs.text, [login(1), login(2)])
    assert database_url not in logs.text  # botocore logs response bodies at DEBUG
    assert keys["token.key"].read_text().split()[-1] not in logs.text


def test_an_empty_event_and_a_record_without_an_id() -> None:
    assert lambda_handler.handler({"Records": []}, None) == {"batchItemFailures": []}
    with pytest.raises(ValueError, match=r"Records\[0\] is not an SQS record"):
        lambda_handler.handler({"Records": [{"body": "{}"}]}, None)
