"""The flow against a real PostgreSQL and a real SQS-protocol server, run in-process.

The ledger: every message sent ends as exactly one row, one rejected row or one recognised
duplicate; the three sets of message ids are disjoint and together are what was sent.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from bytewax.testing import TestingSource

from connectors.sqs.source import NoAcker, to_message
from logins.core.config import AppConfig
from logins.core.pipeline_keys import load_secrets
from logins.dev.embedded import EmbeddedSqs
from logins.dev.generator import GeneratedMessage, generate
from tests.helpers import assert_exact_ledger, config_for, fetch, run

Generated = tuple[list[GeneratedMessage], list[str], AppConfig]


@pytest.fixture
def run_generated(
    flow_env: dict[str, str], send_to_queue: Callable[[list[str]], list[str]], tmp_path: Path
) -> Callable[..., Generated]:
    """`run_generated(n, seed, yaml_text="", workers=1)`: `n` generated logins sent to this
    test's queue, then one run of the flow (its config: `yaml_text` over flow_env's); the
    messages, the ids SQS gave them and the config."""

    def run_them(n: int, seed: int, yaml_text: str = "", workers: int = 1) -> Generated:
        messages = generate(n, seed=seed)
        sent_ids = send_to_queue([m.body for m in messages])
        config = config_for(flow_env, tmp_path, yaml_text)
        run(config, workers=workers)
        return messages, sent_ids, config

    return run_them


def test_generated_messages_end_exactly_once(
    run_generated: Callable[..., Generated], database_url: str, queue_counts: Callable[[], int]
) -> None:
    messages, sent_ids, config = run_generated(300, seed=7)

    with psycopg.connect(database_url) as conn:
        outcome = assert_exact_ledger(conn, config, sent_ids)
        kinds = Counter(m.kind for m in messages)
        assert len(outcome["row"]) == kinds["valid"]
        assert len(outcome["duplicate"]) == kinds["resend"]
        assert len(outcome["rejected"]) == kinds["malformed"]
        expected_reasons = Counter(m.reason for m in messages if m.kind == "malformed")
        assert (
            dict(fetch(conn, "SELECT reason, count(*) FROM user_logins_rejected GROUP BY reason"))
            == expected_reasons
        )
        # each duplicate repeats the fields of a row (the table does not name which one: the
        # dedupe state keeps nothing that could)
        row_bodies = {messages[sent_ids.index(m)].body for m in outcome["row"]}
        for (dup,) in fetch(conn, "SELECT message_id FROM user_logins_duplicates"):
            assert messages[sent_ids.index(dup)].body in row_bodies

        rows = fetch(
            conn,
            "SELECT message_id, masked_ip, masked_device_id, app_version,"
            " app_version_text, create_date, sent_at FROM user_logins",
        )
        secrets = load_secrets(config)
        raw_ips = {m.body for m in messages}
        for message_id, masked_ip, masked_device, _version, version_text, day, sent_at in rows:
            body = messages[sent_ids.index(message_id)].body
            assert masked_ip not in body and masked_device not in body
            assert version_text in body
            assert day == sent_at.date()
            assert masked_ip.startswith(secrets.tokenizer.key_id + ".")
        assert raw_ips  # sanity: the comparison above had bodies to look into

        vault = Counter(f for (f,) in fetch(conn, "SELECT field FROM pii_vault"))
        distinct = fetch(
            conn,
            "SELECT count(DISTINCT masked_ip), count(DISTINCT masked_device_id) FROM user_logins",
        )[0]
        assert (vault["ip"], vault["device_id"]) == distinct  # each distinct value sealed once
    assert queue_counts() == 0


def test_two_workers_keep_the_ledger_exact(
    run_generated: Callable[..., Generated], database_url: str, queue_counts: Callable[[], int]
) -> None:
    messages, sent_ids, config = run_generated(200, seed=11, workers=2)
    with psycopg.connect(database_url) as conn:
        outcome = assert_exact_ledger(conn, config, sent_ids)
        assert len(outcome["rejected"]) == sum(m.kind == "malformed" for m in messages)
    assert queue_counts() == 0


def test_the_visibility_heartbeat_ends_with_the_flow(
    flow_env: dict[str, str], send_to_queue: Callable[[list[str]], list[str]]
) -> None:
    """A heartbeat that outlived its flow kept extending what that flow still held, and its
    first error on the since-deleted queue stopped the next flow in the same process."""
    send_to_queue([m.body for m in generate(50, seed=13)])
    earlier = _heartbeats()  # of flows other tests in this process ran (and failed) before
    run(config_for(flow_env), workers=2)
    deadline = time.monotonic() + 5
    while _heartbeats() - earlier and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _heartbeats() - earlier == set()


def _heartbeats() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "sqs-visibility" and t.is_alive()}


def test_a_message_delivered_twice_gives_one_row(
    flow_env: dict[str, str],
    sqs: EmbeddedSqs,
    send_to_queue: Callable[[list[str]], list[str]],
    queue_url: str,
    database_url: str,
    queue_counts: Callable[[], int],
) -> None:
    """First delivery committed but never deleted (a crash between commit and delete); SQS
    delivers it again after its visibility timeout, and the second write has no effect."""
    messages = generate(60, seed=3)
    sent_ids = send_to_queue([m.body for m in messages])
    client = sqs.client()
    first: dict[str, Any] = {}  # by id: on a slow machine a message can come back mid-loop
    while len(first) < len(messages):
        response = client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=2,
            MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
        )
        for raw in response.get("Messages", []):
            first.setdefault(raw["MessageId"], to_message(raw, time.time()))
    config = config_for(flow_env)
    run(config, source=TestingSource(list(first.values())), acker_factory=NoAcker)
    with psycopg.connect(database_url) as conn:
        before = assert_exact_ledger(conn, config, sent_ids)

    run(config)  # the real source: every message comes back with ApproximateReceiveCount 2
    with psycopg.connect(database_url) as conn:
        after = assert_exact_ledger(conn, config, sent_ids)
        assert after == before
        counts = fetch(conn, "SELECT max(receive_count) FROM user_logins_rejected")
        assert counts[0][0] == 1  # the stored rejection is from the first delivery
    assert queue_counts() == 0


def test_existing_producer_table_is_upgraded_and_keeps_its_rows(
    run_generated: Callable[..., Generated], database_url: str
) -> None:
    old_rows = [
        ("u1", "ios", "m-ip-1", "m-dev-1", "RU", 230, "2024-01-02"),
        ("u2", "android", "m-ip-2", "m-dev-2", None, None, "2024-01-03"),
    ]
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "CREATE TABLE user_logins(user_id varchar(128), device_type varchar(32),"
            " masked_ip varchar(256), masked_device_id varchar(256), locale varchar(32),"
            " app_version integer, create_date date)"
        )
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO user_logins VALUES (%s, %s, %s, %s, %s, %s, %s)", old_rows)
    messages, _, config = run_generated(50, seed=5)
    run(config)  # a second start runs the migrations again: idempotent
    with psycopg.connect(database_url) as conn:
        kept = fetch(
            conn,
            "SELECT user_id, device_type, masked_ip, masked_device_id, locale,"
            " app_version, create_date::text FROM user_logins"
            " WHERE message_id IS NULL ORDER BY user_id",
        )
        assert kept == old_rows
        types = dict(
            fetch(
                conn,
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'user_logins'",
            )
        )
        assert types["app_version"] == "integer" and types["create_date"] == "date"
        assert types["user_id"] == "character varying"
        assert types["app_version_text"] == "text" and types["message_id"] == "text"
        new = fetch(conn, "SELECT count(*) FROM user_logins WHERE message_id IS NOT NULL")[0][0]
        assert new == sum(m.kind == "valid" for m in messages)


def test_masking_another_field_and_another_table_is_configuration(
    run_generated: Callable[..., Generated], database_url: str
) -> None:
    messages, _, config = run_generated(
        80,
        seed=9,
        yaml_text="""
sink:
  table: logins_eu
steps:
  - type: validate
    fields:
      user_id:     {type: string, max_length: 128, pii: true}
      app_version: {type: version, max_length: 64}
      device_type: {type: string, max_length: 32}
      ip:          {type: string, max_length: 64, format: ip, pii: true}
      locale:      {type: string, max_length: 32, required: false, nullable: true}
      device_id:   {type: string, max_length: 256, pii: true}
  - type: dedupe
  - type: mask
    fields: {ip: masked_ip, device_id: masked_device_id, user_id: masked_user_id}
""",
    )
    with psycopg.connect(database_url) as conn:
        rows = fetch(conn, "SELECT user_id, masked_user_id FROM logins_eu")
        assert len(rows) == sum(m.kind == "valid" for m in messages)
        assert all(user is None and token.startswith(masked_prefix(config)) for user, token in rows)
        assert fetch(conn, "SELECT count(*) FROM pii_vault WHERE field = 'user_id'")[0][0] == len(
            {t for _, t in rows}
        )
        assert fetch(conn, "SELECT to_regclass('user_logins') IS NULL")[0][0]


def masked_prefix(config: AppConfig) -> str:
    return load_secrets(config).tokenizer.key_id + "."
