"""The ledger against a real PostgreSQL: keyed (sent_at, message_id), partitioned by day,
partitions made ahead and dropped after the retention, a day without a partition never
failing a batch, a message without SentTimestamp counted once, and an earlier release's
unpartitioned ledger converted by `logins migrate` with its rows (connectors/postgres/ledger.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from connectors.postgres import ledger
from connectors.postgres.migrations import migrate
from connectors.postgres.schema import table_schema
from connectors.postgres.writer import PostgresWriter
from connectors.sqs.source import to_message
from logins.core.config import AppConfig, ConfigError
from logins.core.records import Event, SqsMessage
from logins.dev.generator import generate
from tests.helpers import config_for, fetch, masked_batches

DAY_MS = 86_400_000


def _today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def _ms(day: dt.date, offset_ms: int = 0) -> int:
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    return int(midnight.timestamp() * 1000) + offset_ms


def _events(config: AppConfig, messages: list[SqsMessage]) -> list[Event]:
    return masked_batches(config, [messages])[0]


def _bodies(n: int) -> list[str]:
    return [m.body for m in generate(n * 2, seed=5) if m.kind == "valid"][:n]


def _writer(config: AppConfig) -> PostgresWriter:
    return PostgresWriter(config.sink, table_schema(config), vault_table=config.vault.table)


def _partitions(conn: Any) -> list[str]:
    return sorted(
        r[0]
        for r in fetch(
            conn,
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'logins_ledger'::regclass",
        )
    )


def _day_name(day: dt.date) -> str:
    return f"logins_ledger_p{day:%Y%m%d}"


def test_migrate_makes_a_partitioned_ledger_keyed_by_sent_time_and_one_unique_key(
    flow_env: dict[str, str], database_url: str
) -> None:
    config = config_for(flow_env)
    with psycopg.connect(database_url) as conn:
        migrate(conn, config)
        assert fetch(
            conn, "SELECT relkind::text FROM pg_class WHERE relname = 'logins_ledger'"
        ) == [("p",)]
        assert fetch(
            conn,
            "SELECT pg_get_indexdef(indexrelid) LIKE '%%(sent_at, message_id)'"
            " FROM pg_index WHERE indrelid = 'logins_ledger'::regclass AND indisprimary",
        ) == [(True,)]
        today = _today()
        days = [today + dt.timedelta(days=d) for d in range(-1, ledger.DAYS_AHEAD + 1)]
        assert _partitions(conn) == sorted(["logins_ledger_default", *(_day_name(d) for d in days)])
        # the outcome tables: no unique index on message_id; the rejected one a plain index
        unique = fetch(
            conn,
            "SELECT c.relname::text FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid"
            " JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey)"
            " WHERE x.indisunique AND a.attname = 'message_id' AND c.relname = ANY(%s)",
            ["user_logins", "user_logins_rejected", "user_logins_duplicates"],
        )
        assert unique == []
        assert fetch(
            conn,
            "SELECT indexname FROM pg_indexes WHERE tablename = 'user_logins_rejected'"
            " AND indexdef LIKE '%%(message_id)'",
        ) == [("user_logins_rejected_message_id_idx",)]
        migrate(conn, config)  # idempotent
        assert len(_partitions(conn)) == len(days) + 1


def test_a_day_without_a_partition_never_fails_a_batch_and_a_redelivery_writes_nothing(
    flow_env: dict[str, str], database_url: str
) -> None:
    config = config_for(flow_env)
    with psycopg.connect(database_url) as conn:
        migrate(conn, config)
    far = _today() + dt.timedelta(days=40)  # no partition: the default one takes it
    bodies = _bodies(4)
    sent = [_ms(_today(), 1000), _ms(far, 2000), _ms(_today() - dt.timedelta(days=9), 3), 5]
    messages = [SqsMessage(f"id-{i}", f"r-{i}", b, sent[i], 1) for i, b in enumerate(bodies)]
    writer = _writer(config)
    try:
        first = writer.write(_events(config, messages))
        again = writer.write(_events(config, messages))  # a redelivery, same SentTimestamp
    finally:
        writer.close()
    assert (first.rows, first.redelivered) == (4, 0)
    assert (again.rows, again.redelivered) == (0, 4)
    with psycopg.connect(database_url) as conn:
        placed = dict(fetch(conn, "SELECT message_id, tableoid::regclass::text FROM logins_ledger"))
        assert fetch(conn, "SELECT count(*) FROM user_logins") == [(4,)]
    assert placed == {
        "id-0": _day_name(_today()),
        "id-1": "logins_ledger_default",
        "id-2": "logins_ledger_default",
        "id-3": "logins_ledger_default",
    }


def test_a_message_without_sent_timestamp_is_keyed_at_the_epoch_and_counted_once(
    flow_env: dict[str, str], database_url: str
) -> None:
    config = config_for(flow_env)
    with psycopg.connect(database_url) as conn:
        migrate(conn, config)
    (body,) = _bodies(1)
    raw = {"MessageId": "no-sent-time", "ReceiptHandle": "r", "Body": body, "Attributes": {}}
    first, second = to_message(raw, 1_780_000_000.0), to_message(raw, 1_780_000_090.0)
    assert not first.sent_timestamp_known
    assert first.sent_timestamp_ms != second.sent_timestamp_ms  # the receive times differ
    writer = _writer(config)
    try:
        assert writer.write(_events(config, [first])).rows == 1
        assert writer.write(_events(config, [second])).redelivered == 1
    finally:
        writer.close()
    with psycopg.connect(database_url) as conn:
        assert fetch(
            conn,
            "SELECT sent_at = 'epoch'::timestamptz, tableoid::regclass::text FROM logins_ledger",
        ) == [(True, "logins_ledger_default")]
        # the row keeps the receive time as its sent_at and create_date, as before
        assert fetch(conn, "SELECT extract(epoch FROM sent_at)::bigint FROM user_logins") == [
            (1_780_000_000,)
        ]


def test_maintenance_drops_what_the_retention_no_longer_needs(
    flow_env: dict[str, str], database_url: str
) -> None:
    config = config_for(flow_env)
    retention = config.sink.ledger_retention_days
    old = _today() - dt.timedelta(days=retention + 2)
    kept = _today() - dt.timedelta(days=retention - 1)
    with psycopg.connect(database_url) as conn:
        migrate(conn, config)
        conn.execute("SET ROLE logins_owner")  # as the migrations and the function make them
        for day in (old, kept):
            lo = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} PARTITION OF logins_ledger FOR VALUES FROM ({}) TO ({})"
                ).format(
                    sql.Identifier(_day_name(day)),
                    sql.Literal(lo),
                    sql.Literal(lo + dt.timedelta(days=1)),
                )
            )
            conn.execute(
                "INSERT INTO logins_ledger (message_id, outcome, sent_at) VALUES (%s, 'row', %s)",
                (f"in-{day}", lo + dt.timedelta(hours=1)),
            )
        # the default partition: rows committed before the retention go, newer ones stay
        conn.execute(
            "INSERT INTO logins_ledger (message_id, outcome, sent_at, committed_at) VALUES"
            " ('default-old', 'row', 'epoch', now() - make_interval(days => %s)),"
            " ('default-new', 'row', 'epoch', now() - make_interval(days => %s))",
            (retention + 1, retention - 1),
        )
        conn.execute("RESET ROLE")
        conn.commit()
        assert ledger.maintain(conn, "logins_ledger", retention) == 1  # the old day dropped
        assert _day_name(old) not in _partitions(conn)
        assert _day_name(kept) in _partitions(conn)
        assert sorted(r[0] for r in fetch(conn, "SELECT message_id FROM logins_ledger")) == [
            "default-new",
            f"in-{kept}",
        ]
        assert ledger.maintain(conn, "logins_ledger", retention) == 0  # nothing more to do
        # the function refuses a retention SQS could outlive, whoever calls it
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="more than 14 days"):
            conn.execute("SELECT logins_ledger_maintain(14, 7)")
        conn.rollback()


def test_the_retention_must_outlast_sqs(flow_env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ledger_retention_days"):
        config_for(flow_env, tmp_path, "sink:\n  ledger_retention_days: 14\n")
    assert config_for(flow_env, tmp_path, "sink:\n  ledger_retention_days: 15\n")


# An earlier release's tables (schema version 2), as its migrations made them.
V2_TABLES = """
CREATE TABLE logins_ledger (message_id text PRIMARY KEY,
  outcome text NOT NULL CHECK (outcome IN ('row', 'rejected', 'duplicate')),
  sent_at timestamptz, committed_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE user_logins_rejected (message_id text PRIMARY KEY, reason text NOT NULL,
  detail text NOT NULL, sealed_body bytea NOT NULL, vault_key_id text NOT NULL,
  sent_at timestamptz, create_date date, receive_count integer,
  rejected_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE user_logins_duplicates (message_id text PRIMARY KEY, duplicate_of text NOT NULL,
  sent_at timestamptz, create_date date, recorded_at timestamptz NOT NULL DEFAULT now());
"""


def test_migrate_converts_an_earlier_releases_ledger_with_its_rows(
    flow_env: dict[str, str], database_url: str
) -> None:
    config = config_for(flow_env)
    bodies = _bodies(3)
    today_ms = _ms(_today(), 5000)
    messages = [
        SqsMessage(f"old-{i}", f"r-{i}", b, today_ms - i * DAY_MS * 5, 1)
        for i, b in enumerate(bodies)
    ]
    with psycopg.connect(database_url) as conn:
        conn.execute(V2_TABLES)
        conn.execute(
            "INSERT INTO logins_ledger (message_id, outcome, sent_at, committed_at)"
            " SELECT 'old-' || i, 'row', to_timestamp(%s / 1000.0 - i * 5 * 86400),"
            " now() - make_interval(days => i * 5) FROM generate_series(0, 2) i",
            (today_ms,),
        )
        conn.execute(
            "INSERT INTO logins_ledger (message_id, outcome, sent_at)"
            " VALUES ('null-sent', 'row', NULL)"
        )
        conn.execute(  # committed before the retention: no redelivery can come any more
            "INSERT INTO logins_ledger (message_id, outcome, sent_at, committed_at)"
            " VALUES ('expired', 'row', now() - interval '40 days', now() - interval '40 days')"
        )
        conn.commit()
        migrate(conn, config)
        migrate(conn, config)  # again: nothing left to convert
        assert fetch(
            conn, "SELECT relkind::text FROM pg_class WHERE relname = 'logins_ledger'"
        ) == [("p",)]
        assert fetch(conn, "SELECT to_regclass('logins_ledger_unpartitioned')") == [(None,)]
        assert sorted(fetch(conn, "SELECT message_id, outcome FROM logins_ledger")) == [
            ("null-sent", "row"),
            ("old-0", "row"),
            ("old-1", "row"),
            ("old-2", "row"),
        ]
        # each day of the retention in its own partition, not in the default one
        assert dict(
            fetch(conn, "SELECT message_id, tableoid::regclass::text FROM logins_ledger")
        ) == {
            "old-0": _day_name(_today()),
            "old-1": _day_name(_today() - dt.timedelta(days=5)),
            "old-2": _day_name(_today() - dt.timedelta(days=10)),
            "null-sent": "logins_ledger_default",
        }
        assert fetch(
            conn,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'p'"
            " AND conrelid = ANY(ARRAY['user_logins_rejected'::regclass,"
            " 'user_logins_duplicates'::regclass])",
        ) == [(0,)]
    # what the earlier release committed is still claimed: a redelivery writes nothing
    writer = _writer(config)
    try:
        result = writer.write(_events(config, messages))
    finally:
        writer.close()
    assert (result.rows, result.redelivered) == (0, 3)
