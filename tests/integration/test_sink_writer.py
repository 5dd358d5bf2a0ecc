"""The sink's writer thread against a real PostgreSQL: batches queue behind the one being
committed, messages are deleted only after their commit, and a failure on the writer thread
stops the flow on the worker's next call without losing a message.

The acker records what the sink asks SQS to do (the SQS side is tested through the flow
elsewhere); what is under test here is the ordering of commits and acks, and the database is
real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
import pytest
from bytewax.outputs import StatelessSinkPartition

from flows.builder import postgres_sink
from logins.core.config import AppConfig
from logins.core.pipeline_keys import load_secrets
from logins.core.records import Event, SqsMessage
from logins.core.sealcache import SealCache
from logins.core.stop import Stop
from logins.dev.generator import generate
from tests.helpers import config_for, fetch, masked_batches

QUEUED = "sink:\n  queued_batches: 2\n  writers: 1\n"  # one connection: batches commit in order


class RecordingAcker:
    """Checks, at each delete, that the messages' outcomes are already committed."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self.deleted: list[str] = []
        self.released: list[str] = []
        self.uncommitted_at_delete: list[str] = []
        self.threads: set[str] = set()
        self.closed_after: int | None = None  # deletes before the sink closed its acker

    def delete(self, messages: Sequence[SqsMessage]) -> int:
        ids = [m.message_id for m in messages]
        self.threads.add(threading.current_thread().name)
        with psycopg.connect(self._database_url) as conn:  # another session: sees commits only
            found = {r[0] for r in fetch(conn, "SELECT message_id FROM logins_ledger")}
        self.uncommitted_at_delete += [i for i in ids if i not in found]
        self.deleted += ids
        return 0

    def extend(self, messages: Sequence[SqsMessage]) -> list[SqsMessage]:
        return []

    def release(self, messages: Sequence[SqsMessage], after_seconds: int = 0) -> int:
        self.released += [m.message_id for m in messages]
        return 0

    def close(self) -> None:
        self.closed_after = len(self.deleted)


def _batches(config: AppConfig, count: int, size: int) -> list[list[Event]]:
    bodies = [m.body for m in generate(count * size, seed=11) if m.kind != "resend"]
    messages = [
        SqsMessage(f"m-{i:05d}", f"r-{i}", body, 1_760_000_000_000 + i, 1)
        for i, body in enumerate(bodies)
    ]
    return masked_batches(config, [messages[i : i + size] for i in range(0, len(messages), size)])


def _partition(
    config: AppConfig, acker: RecordingAcker, stop: Stop | None = None
) -> StatelessSinkPartition[Event]:
    sink = postgres_sink(
        config,
        cache=SealCache(1000),
        sealer=load_secrets(config).sealer,
        acker_factory=lambda: acker,
        stop=stop or Stop(),
    )
    return sink.build("postgres", 0, 1)


def test_batches_commit_in_the_background_and_are_deleted_after_commit(
    flow_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    config = config_for(flow_env, tmp_path, QUEUED)
    acker = RecordingAcker(database_url)
    batches = _batches(config, 8, 100)
    partition = _partition(config, acker)
    for batch in batches:
        partition.write_batch(batch)
    partition.close()  # waits for the queued batches

    sent = [e.message.message_id for batch in batches for e in batch]
    assert acker.deleted == sent  # every message, in order, once
    assert acker.uncommitted_at_delete == []
    assert acker.threads == {"postgres-writer"}  # the worker thread did not wait for SQS
    assert acker.closed_after == len(sent)  # closed once, after the last delete
    with psycopg.connect(database_url) as conn:
        assert fetch(conn, "SELECT count(*) FROM logins_ledger") == [(len(sent),)]


def test_a_failure_on_the_writer_thread_stops_the_flow_and_loses_nothing(
    flow_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    config = config_for(flow_env, tmp_path, QUEUED)
    acker = RecordingAcker(database_url)
    batches = _batches(config, 6, 50)
    stop = Stop()  # the flow's, which the sources poll
    partition = _partition(config, acker, stop)
    partition.write_batch(batches[0])
    first = [e.message.message_id for e in batches[0]]
    deadline = time.monotonic() + 30
    while acker.deleted != first and time.monotonic() < deadline:
        time.sleep(0.02)
    assert acker.deleted == first  # committed and deleted in the background
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE logins_ledger RENAME TO logins_ledger_away")
    accepted = [batches[0]]
    with pytest.raises(RuntimeError, match="sink failed") as failed:
        for batch in batches[1:]:
            partition.write_batch(batch)  # raises once the writer thread has failed
            accepted.append(batch)
    assert isinstance(failed.value.__cause__, psycopg.errors.UndefinedTable)
    assert stop.is_set()  # the sources stop even if no batch follows
    # Bytewax calls close() while unwinding the error write_batch raised: raising it again
    # there is a panic during a panic, and the process aborts (seen as "Fatal Python error").
    partition.close()

    assert acker.deleted == first  # nothing deleted after the failure
    # the batch that failed comes back after its visibility timeout; the batches queued
    # behind it were never tried and are released at once
    assert len(accepted) >= 2
    assert acker.released == [e.message.message_id for batch in accepted[2:] for e in batch]


def test_a_failure_first_seen_at_close_is_raised_by_close(
    flow_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    config = config_for(flow_env, tmp_path, QUEUED)
    acker = RecordingAcker(database_url)
    batches = _batches(config, 1, 50)
    partition = _partition(config, acker)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE logins_ledger RENAME TO logins_ledger_away")
    partition.write_batch(batches[0])  # queued: fails on the writer thread
    with pytest.raises(RuntimeError, match="sink failed") as failed:
        partition.close()
    assert isinstance(failed.value.__cause__, psycopg.errors.UndefinedTable)
    assert acker.deleted == []


def test_a_second_writer_takes_batches_while_the_first_is_held_up(
    flow_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """`sink.writers: 2`: once the first writer's queue is full, the next batch commits on the
    second connection, past a batch held up in PostgreSQL, and is deleted after its commit."""
    config = config_for(flow_env, tmp_path, "sink:\n  queued_batches: 1\n  writers: 2\n")
    acker = RecordingAcker(database_url)
    held, queued, third = _batches(config, 3, 100)
    partition = _partition(config, acker)
    first = held[0].message
    with psycopg.connect(database_url) as blocker:
        # An uncommitted claim of the held batch's first id: that batch's ledger insert waits
        # for this transaction to end.
        blocker.execute(
            "INSERT INTO logins_ledger (message_id, outcome, sent_at)"
            " VALUES (%s, 'row', to_timestamp(%s / 1000.0))",
            (first.message_id, first.sent_timestamp_ms),
        )
        writing = threading.Thread(
            target=lambda: [partition.write_batch(b) for b in (held, queued, third)]
        )
        writing.start()  # on a thread: with one writer the third batch would wait for room
        # Whichever of the other two found the first queue full went to the second writer.
        passed = [sorted(e.message.message_id for e in b) for b in (queued, third)]
        deadline = time.monotonic() + 30
        while sorted(acker.deleted) not in passed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(acker.deleted) in passed  # committed past the held batch
        assert acker.threads == {"postgres-writer-2"}
        blocker.rollback()  # the held batch's insert goes on and claims its id after all
    writing.join(30)
    partition.close()

    sent = [e.message.message_id for batch in (held, queued, third) for e in batch]
    assert sorted(acker.deleted) == sorted(sent)  # every message once
    assert acker.uncommitted_at_delete == []
    with psycopg.connect(database_url) as conn:
        assert fetch(conn, "SELECT count(*) FROM logins_ledger") == [(len(sent),)]


def test_batches_the_first_writer_keeps_up_with_commit_on_one_connection(
    flow_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """A second writer adds a connection's round trips and SQS calls only when needed."""
    config = config_for(flow_env, tmp_path, "sink:\n  queued_batches: 1\n  writers: 2\n")
    acker = RecordingAcker(database_url)
    partition = _partition(config, acker)
    for batch in _batches(config, 4, 50):
        partition.write_batch(batch)
        ids = [e.message.message_id for e in batch]
        deadline = time.monotonic() + 30
        while acker.deleted[-len(ids) :] != ids and time.monotonic() < deadline:
            time.sleep(0.02)
    partition.close()
    assert len(acker.deleted) == len(set(acker.deleted)) > 0
    assert acker.threads == {"postgres-writer"}
