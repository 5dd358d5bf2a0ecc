"""The database goes away, refuses a row, or is slow: retried, isolated, kept invisible."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from connectors.postgres.migrations import migrate
from logins.core.config import AppConfig
from logins.core.metrics import SQS_RECEIVED
from logins.dev.embedded import EmbeddedPostgres
from logins.dev.generator import generate
from tests.faults.conftest import Rig, ledger_size
from tests.helpers import config_for, fetch, ledger_from_dsn, run, wait_for


def test_database_outage_is_retried_and_the_flow_keeps_running(
    rig: Rig, own_postgres: EmbeddedPostgres
) -> None:
    database_url = own_postgres.create_database("logins")
    _, producer = rig.produce(1000, seed=71)
    env = rig.env(database_url)
    flow = rig.start_flow(env, "-w", "2")
    wait_for(lambda: ledger_size(database_url) >= 150, 120, "150 committed messages")

    own_postgres.stop()
    time.sleep(6)
    assert flow.running(), flow.output()[-3000:]
    own_postgres.start()
    wait_for(lambda: ledger_size(database_url) >= 300, 120, "commits after the outage")

    rig.drain_and_check(database_url, env, producer, running=[flow])
    assert "database unavailable" in flow.output()


def test_database_away_too_long_exits_nonzero_and_loses_nothing(
    rig: Rig, own_postgres: EmbeddedPostgres
) -> None:
    database_url = own_postgres.create_database("logins")
    _, producer = rig.produce(600, seed=73)
    env = rig.env(database_url, "sink:\n  retry: {give_up_after_seconds: 3}\n")
    flow = rig.start_flow(env, "-w", "2")
    wait_for(lambda: ledger_size(database_url) >= 100, 120, "100 committed messages")

    own_postgres.stop()
    code = flow.wait(60)
    assert code != 0
    assert "database still unavailable after 3.0s" in flow.output()
    assert "nothing of this batch was deleted from the queue" in flow.output()

    own_postgres.start()
    rig.drain_and_check(database_url, env, producer)


def migrated_with_trigger(
    env: dict[str, str], tmp_path: Path, yaml_text: str, function: str, trigger: str
) -> AppConfig:
    """The config of `yaml_text` over `env`, its tables made, and the fault: a trigger
    `function` that `trigger` fires on them."""
    config = config_for(env, tmp_path, yaml_text)
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        migrate(conn, config)
        conn.execute(function)
        conn.execute(trigger)
    return config


def test_a_row_the_database_refuses_is_isolated_then_parked(
    flow_env_faults: dict[str, str],
    tmp_path: Path,
    send_to_queue: Callable[[list[str]], list[str]],
    queue_counts: Callable[[], int],
) -> None:
    database_url = flow_env_faults["DATABASE_URL"]
    config = migrated_with_trigger(
        flow_env_faults,
        tmp_path,
        "source: {visibility_timeout: 3}\nsink: {poison_after_attempts: 3}\n",
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.device_type = 'poison' THEN RAISE EXCEPTION 'refused'; END IF;"
        " RETURN NEW; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON user_logins FOR EACH ROW"
        " EXECUTE FUNCTION refuse_poison()",
    )
    messages = [m.body for m in generate(120, seed=75)]
    valid = [json.loads(b) for b in messages if _is_valid(b)]
    poison = [
        json.dumps({**valid[i], "device_type": "poison", "user_id": f"p{i}"}) for i in range(3)
    ]
    sent = send_to_queue(messages + poison)

    run(config, workers=2)

    with psycopg.connect(database_url) as conn:
        outcome = ledger_from_dsn(database_url, sent)
        parked = fetch(
            conn, "SELECT message_id, detail FROM user_logins_rejected WHERE reason = 'poison'"
        )
        assert {m for m, _ in parked} == set(sent[-3:])
        assert all(
            d == "the database refused the row: SQLSTATE P0001 (RaiseException)" for _, d in parked
        )
        assert set(sent[:-3]) - outcome["rejected"] - outcome["duplicate"] == outcome["row"]
    assert queue_counts() == 0


def test_a_batch_slower_than_the_visibility_timeout_stays_invisible(
    flow_env_faults: dict[str, str],
    tmp_path: Path,
    send_to_queue: Callable[[list[str]], list[str]],
    queue_counts: Callable[[], int],
) -> None:
    # margins wide enough for a loaded 2-core machine: the heartbeat runs every 2 s, a
    # message waits at most ~2 s before its write extends it, each statement takes 6 s
    config = migrated_with_trigger(
        flow_env_faults,
        tmp_path,
        "source: {visibility_timeout: 4}\n",
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " PERFORM pg_sleep(6); RETURN NULL; END $$",
        "CREATE TRIGGER slow AFTER INSERT ON logins_ledger FOR EACH STATEMENT"
        " EXECUTE FUNCTION slow()",
    )
    messages = generate(40, seed=77)
    sent = send_to_queue([m.body for m in messages])
    received_before = SQS_RECEIVED._value.get()

    run(config)

    ledger_from_dsn(flow_env_faults["DATABASE_URL"], sent)
    assert SQS_RECEIVED._value.get() - received_before == len(sent)  # none came back mid-write
    assert queue_counts() == 0


def test_two_independent_flows_on_one_queue(rig: Rig, database_url: str) -> None:
    """Concurrent consumers (two deployments, not a cluster): SQS may hand both the same
    message (at least once: after a visibility timeout ran out); the ledger keeps one outcome
    per message."""
    _, producer = rig.produce(800, seed=79)
    env = rig.env(database_url)
    flows = [rig.start_flow(env, "-w", "2") for _ in range(2)]
    rig.drain_and_check(database_url, env, producer, running=flows)


def _is_valid(body: str) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(data, dict)
        and all(
            isinstance(data.get(k), str) and data.get(k)
            for k in ("user_id", "app_version", "device_type", "ip", "device_id")
        )
        and len(data["device_type"]) <= 32
        and len(data["user_id"]) <= 120
    )
