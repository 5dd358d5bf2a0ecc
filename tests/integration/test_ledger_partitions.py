"""The ledger against a real PostgreSQL: keyed (sent_at, message_id), partitioned by day,
partitions made ahead and dropped after the retention, a day without a partition never
failing a batch, a message without SentTimestamp counted once, and the retention the
owner's alone (connectors/postgres/ledger.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from connectors.postgres import ledger, roles
from connectors.postgres.migrations import migrate
from connectors.postgres.schema import table_schema
from connectors.postgres.writer import PostgresWriter
from connectors.sqs.source import to_message
from logins.core.config import AppConfig, ConfigError
from logins.core.records import Event, SqsMessage
from logins.dev.generator import generate
from tests.helpers import config_for, fetch, masked_batches
from tests.integration.rolekit import role_database

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


def _create_day_partition(conn: Any, day: dt.date) -> dt.datetime:
    """The ledger's partition for `day` (UTC), as the maintenance names it; its first instant."""
    lo = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    conn.execute(
        sql.SQL("CREATE TABLE {} PARTITION OF logins_ledger FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(_day_name(day)), sql.Literal(lo), sql.Literal(lo + dt.timedelta(days=1))
        )
    )
    return lo


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
            lo = _create_day_partition(conn, day)
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
        assert ledger.maintain(conn, "logins_ledger") == 1  # the old day dropped
        assert _day_name(old) not in _partitions(conn)
        assert _day_name(kept) in _partitions(conn)
        assert sorted(r[0] for r in fetch(conn, "SELECT message_id FROM logins_ledger")) == [
            "default-new",
            f"in-{kept}",
        ]
        assert ledger.maintain(conn, "logins_ledger") == 0  # nothing more to do
        # the function refuses a retention SQS could outlive, even the owner's
        conn.execute(
            "UPDATE logins_control SET value = 14 WHERE name = 'logins_ledger:retention_days'"
        )
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="more than 14 days"):
            conn.execute("SELECT logins_ledger_maintain()")
        conn.rollback()


def test_the_pipeline_cannot_shorten_the_owners_retention(
    pg_admin_dsn: str, tmp_path: Path
) -> None:
    """The review's abuse: the pipeline's login calling the maintenance with its own
    retention (15 days) to drop partitions the owner's keeps. The function takes no
    argument and reads the owner's setting, which the pipeline cannot write."""
    with role_database(pg_admin_dsn, tmp_path) as db:
        retention = db.config.sink.ledger_retention_days
        young = _today() - dt.timedelta(days=17)  # older than 15 days, younger than the owner's
        assert retention > 18
        expired = _today() - dt.timedelta(days=retention + 2)
        with db.connect(roles.OWNER) as conn:
            conn.execute("SET ROLE logins_owner")  # as the migrations make them
            for day in (young, expired):
                _create_day_partition(conn, day)
        abuse = [
            "SELECT logins_ledger_maintain(15, 366)",
            "SELECT logins_ledger_maintain(15)",
            "UPDATE logins_control SET value = 15",
            "INSERT INTO logins_control (name, value) VALUES ('logins_ledger:retention_days', 15)"
            " ON CONFLICT (name) DO UPDATE SET value = 15",
            "DELETE FROM logins_control",
            f"DROP TABLE {_day_name(young)}",
        ]
        with (
            db.connect(roles.ANALYST) as analyst,
            db.connect(roles.PIPELINE, autocommit=False) as conn,
        ):
            # the advisory lock an earlier maintenance took: held by an analyst, it changes
            # nothing (the maintenance locks a control row only the owner can lock)
            analyst.execute("SELECT pg_advisory_lock(7417302, hashtext('logins_ledger'))")
            found = {}
            for statement in abuse:
                try:
                    conn.execute(statement)  # the attacker's SQL
                    found[statement] = "ran"
                except psycopg.Error as exc:
                    found[statement] = str(exc.sqlstate)
                conn.rollback()
            # the owner's retention: the expired day goes, the young one stays
            assert conn.execute("SELECT logins_ledger_maintain()").fetchone() == (1,)
            conn.commit()
        assert (
            found
            == {
                "SELECT logins_ledger_maintain(15, 366)": "42883",  # no such function
                "SELECT logins_ledger_maintain(15)": "42883",
                **{s: "42501" for s in abuse[2:]},
            }
        )
        with db.connect(roles.OWNER) as conn:
            assert _day_name(young) in _partitions(conn)
            assert _day_name(expired) not in _partitions(conn)
            assert fetch(
                conn,
                "SELECT value FROM logins_control WHERE name = 'logins_ledger:retention_days'",
            ) == [(retention,)]


def test_the_retention_must_outlast_sqs(flow_env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ledger_retention_days"):
        config_for(flow_env, tmp_path, "sink:\n  ledger_retention_days: 14\n")
    assert config_for(flow_env, tmp_path, "sink:\n  ledger_retention_days: 15\n")
