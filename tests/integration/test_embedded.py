"""The embedded services are real servers on the network, not in-process fakes.

Every other integration and end-to-end test relies on that, so it is proven here once:
PostgreSQL over TCP on 127.0.0.1 (never the system server on 5432), a database per test, a
restart that keeps data (the fault tests' outage), and SQS's wire protocol end to end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from logins.dev.embedded import EmbeddedPostgres, EmbeddedSqs, free_port
from tests.helpers import fetch, private_data_dir, queue_total

pytestmark = pytest.mark.integration

EMBEDDED = not os.environ.get("LOGINS_TEST_DATABASE_URL")


def _processes() -> list[tuple[int, int]]:
    """(pid, ppid) of every live process; zombies are dead and left out. /proc, else ps."""
    rows: list[tuple[int, int, str]] = []
    if Path("/proc/self/stat").exists():
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat_file.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # exited while we looked
            rows.append((int(stat_file.parent.name), int(fields[1]), fields[0]))
    else:
        out = subprocess.run(
            ["ps", "-eo", "pid=,ppid=,stat="], capture_output=True, text=True, check=True
        ).stdout
        for line in out.splitlines():
            pid, ppid, state = line.split()
            rows.append((int(pid), int(ppid), state))
    return [(pid, ppid) for pid, ppid, state in rows if not state.startswith("Z")]


def _assert_gone(postmaster_pid: int) -> None:
    """Neither the postmaster nor any of its backends or workers is still running."""
    leftovers = [(p, pp) for p, pp in _processes() if postmaster_pid in (p, pp)]
    assert leftovers == [], f"postgres processes survived stop(): {leftovers}"


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_is_real_and_reached_over_tcp(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT version(), inet_server_addr()::text, inet_server_port()"
        ).fetchone()
        assert row is not None
        version, server_addr, server_port = row
        assert version.startswith("PostgreSQL ")
        # inet_server_addr() is NULL over a unix socket: this proves TCP.
        assert server_addr is not None
        assert conn.info.host == urlsplit(database_url).hostname
        assert server_port == conn.info.port
        if EMBEDDED:
            assert conn.info.host == "127.0.0.1"
            assert server_addr == "127.0.0.1/32"
            assert server_port != 5432  # not the system PostgreSQL


def test_each_database_is_fresh_and_distinct(
    database_url: str, make_database: Callable[[], str]
) -> None:
    other_url = make_database()
    assert other_url != database_url
    with psycopg.connect(database_url) as one, psycopg.connect(other_url) as other:
        one.execute("CREATE TABLE marker (x int)")
        one.commit()
        names = {fetch(conn, "SELECT current_database()")[0][0] for conn in (one, other)}
        assert len(names) == 2
        assert other.execute("SELECT to_regclass('marker')").fetchone() == (None,)


@pytest.fixture
def pg_data_dir() -> Iterator[Path]:
    """A data folder outside pytest's basetemp (see tests.helpers.private_data_dir)."""
    with private_data_dir() as data_dir:
        yield data_dir


def test_restart_keeps_data_port_and_dsn(pg_data_dir: Path) -> None:
    server = EmbeddedPostgres(pg_data_dir)
    try:
        server.start()
        dsn, port, first_pid = server.dsn, server.port, server.pid
        assert first_pid is not None
        url = server.create_database("restart_check")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (id int PRIMARY KEY)")
            conn.execute("INSERT INTO kept VALUES (1), (2), (3)")
        held = psycopg.connect(url, autocommit=True)  # a client caught by the outage

        server.restart()

        assert (server.dsn, server.port) == (dsn, port)
        assert server.pid not in (None, first_pid)
        _assert_gone(first_pid)
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")  # its server went away, as in a real outage
        held.close()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (3,)
    finally:
        last_pid = server.pid
        server.stop()
        server.stop()  # idempotent
    assert last_pid is not None
    _assert_gone(last_pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)


def test_stop_then_start_is_an_outage_on_the_same_port(pg_data_dir: Path) -> None:
    port = free_port()
    with EmbeddedPostgres(pg_data_dir, port=port) as server:
        assert server.dsn == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        server.stop()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(server.dsn, connect_timeout=2)
        server.start()
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


# --------------------------------------------------------------------------- SQS


def test_sqs_speaks_the_wire_protocol_on_loopback(sqs: EmbeddedSqs, queue_url: str) -> None:
    endpoint = urlsplit(sqs.endpoint_url)
    assert endpoint.hostname == "127.0.0.1"
    assert queue_url.startswith(sqs.endpoint_url + "/")
    with socket.create_connection((endpoint.hostname, sqs.port), timeout=2):
        pass  # a real listening socket

    client = sqs.client()
    bodies = {f"login-{i}": f'{{"user_id": "u{i}", "ip": "10.0.0.{i}"}}' for i in range(10)}
    sent = client.send_message_batch(
        QueueUrl=queue_url,
        Entries=[
            {
                "Id": entry_id,
                "MessageBody": body,
                "MessageAttributes": {
                    "trace_id": {"DataType": "String", "StringValue": uuid.uuid4().hex}
                },
            }
            for entry_id, body in bodies.items()
        ],
    )
    assert sent.get("Failed", []) == []
    assert len(sent["Successful"]) == 10

    received: list[Any] = []
    deadline = time.monotonic() + 10
    while len(received) < 10 and time.monotonic() < deadline:  # SQS may return fewer per call
        batch = client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        )
        received.extend(batch.get("Messages", []))
    assert sorted(m["Body"] for m in received) == sorted(bodies.values())
    for message in received:
        assert int(message["Attributes"]["SentTimestamp"]) > 0
        assert message["Attributes"]["ApproximateReceiveCount"] == "1"
        assert message["MessageAttributes"]["trace_id"]["DataType"] == "String"

    deleted = client.delete_message_batch(
        QueueUrl=queue_url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)
        ],
    )
    assert deleted.get("Failed", []) == []
    assert len(deleted["Successful"]) == 10

    assert queue_total(client, queue_url) == 0  # none visible, none in flight
    assert client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0).get("Messages", []) == []


def test_sqs_redelivers_after_the_visibility_timeout(sqs: EmbeddedSqs) -> None:
    """At-least-once delivery, which the flow's idempotent writes are built for, really happens."""
    url = sqs.create_queue(f"logins-test-{uuid.uuid4().hex[:12]}", VisibilityTimeout="1")
    client = sqs.client()
    client.send_message(QueueUrl=url, MessageBody="again")
    first = client.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    assert first[0]["Attributes"]["ApproximateReceiveCount"] == "1"
    time.sleep(1.2)
    second = client.receive_message(QueueUrl=url, WaitTimeSeconds=2, AttributeNames=["All"])
    assert second["Messages"][0]["Body"] == "again"
    assert second["Messages"][0]["Attributes"]["ApproximateReceiveCount"] == "2"
    client.delete_queue(QueueUrl=url)


def test_sqs_stop_releases_the_port() -> None:
    server = EmbeddedSqs().start()
    port = server.port
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_sqs_deletes_and_receives_wait_for_the_queue_lock_that_sends_hold(
    sqs: EmbeddedSqs, queue_url: str
) -> None:
    """moto changes a queue's messages on delete and receive without the lock its sends
    hold (a send racing two deletes could vanish; two receives could take one message);
    the embedded server makes both take that lock."""
    from moto.sqs.models import sqs_backends

    client = sqs.client()
    client.send_message(QueueUrl=queue_url, MessageBody="x")
    handle = client.receive_message(QueueUrl=queue_url)["Messages"][0]["ReceiptHandle"]
    queue = sqs_backends["123456789012"]["us-east-1"].get_queue(queue_url.rsplit("/", 1)[-1])
    calls = {
        "delete": lambda: client.delete_message(QueueUrl=queue_url, ReceiptHandle=handle),
        "receive": lambda: client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0),
    }
    for name, call in calls.items():
        done = threading.Event()

        def run(call: Callable[[], Any] = call, done: threading.Event = done) -> None:
            call()
            done.set()

        with queue._messages_lock:  # as a send holds it while it appends
            worker = threading.Thread(target=run)
            worker.start()
            assert not done.wait(1.0), f"a {name} ran while a send held the queue's lock"
        assert done.wait(10), name
        worker.join()
    assert client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0).get("Messages") is None
