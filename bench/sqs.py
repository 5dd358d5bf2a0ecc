"""The SQS path (only with an endpoint, e.g. LocalStack): the whole flow (`flows.logins`, the
operator contract's variables, LOGINS_STOP_WHEN_IDLE) draining N seeded messages, against a
bare drain of the same N messages (ReceiveMessage + DeleteMessageBatch, nothing else) with the
same number of concurrent receivers. Both are measured from the first to the last message
made final: committed (the flow) or deleted (the bare drain)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.config import Config

from bench.common import (
    PYTHON,
    Ledger,
    ProcessResult,
    Server,
    config_for,
    flow_env,
    log,
    prepare_schema,
    read_ledger,
    run_process,
    tail,
)
from bench.core import accounted
from connectors.sqs_protocol import make_client
from logins.dev.generated import Dataset
from logins.dev.generator import KINDS

_DUMMY = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}


@dataclass
class SqsResult:
    endpoint: str
    messages: int
    receivers: int
    seed_msgs_per_s: float
    flow_msgs_per_s: float
    drain_msgs_per_s: float
    flow_exact: bool
    flow_process: ProcessResult
    ledger: Ledger

    @property
    def ratio(self) -> float:
        return self.flow_msgs_per_s / self.drain_msgs_per_s if self.drain_msgs_per_s else 0.0


def _client(endpoint: str, pool: int = 32) -> Any:
    return make_client(
        "auto",
        endpoint_url=endpoint,
        region_name=_DUMMY["AWS_REGION"],
        aws_access_key_id=_DUMMY["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=_DUMMY["AWS_SECRET_ACCESS_KEY"],
        config=Config(max_pool_connections=pool, retries={"mode": "standard", "max_attempts": 10}),
    )


def seed(client: Any, queue_url: str, bodies: list[str], threads: int = 8) -> float:
    """SendMessageBatch from `threads` threads; returns messages/s."""

    def send(start: int) -> None:
        entries = [
            {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])
        ]
        while entries:
            failed = client.send_message_batch(QueueUrl=queue_url, Entries=entries).get(
                "Failed", []
            )
            if any(f.get("SenderFault") for f in failed):
                raise RuntimeError(f"SQS refused a message: {failed}")
            retry = {f["Id"] for f in failed}
            entries = [e for e in entries if e["Id"] in retry]

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, range(0, len(bodies), 10)))
    return len(bodies) / (time.perf_counter() - started)


def bare_drain(client: Any, queue_url: str, expected: int, receivers: int) -> float:
    """Receive (10 per call, long poll 1 s) and DeleteMessageBatch on `receivers` threads."""
    lock = threading.Lock()
    state = {"deleted": 0, "first": 0.0, "last": 0.0}

    def receiver() -> None:
        idle_since = time.perf_counter()
        while True:
            got = client.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=60
            ).get("Messages", [])
            if not got:
                with lock:
                    if state["deleted"] >= expected:
                        return
                if time.perf_counter() - idle_since > 10:
                    return
                continue
            idle_since = time.perf_counter()
            client.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
                ],
            )
            now = time.perf_counter()
            with lock:
                state["first"] = state["first"] or now
                state["last"] = now
                state["deleted"] += len(got)

    threads = [threading.Thread(target=receiver) for _ in range(receivers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    span = state["last"] - state["first"]
    if state["deleted"] < expected:
        log(f"bare drain: only {state['deleted']:,} of {expected:,} messages came back")
    return state["deleted"] / span if span > 0 else 0.0


def sendable(data: Path, messages: int) -> tuple[list[str], dict[str, int]]:
    """The first `messages` bodies SQS accepts (it refuses an empty body: the generator's few
    empty not-JSON bodies are left out), and the outcomes they must have."""
    bodies: list[str] = []
    expected = {"row": 0, "rejected": 0, "duplicate": 0}
    outcome = {"valid": "row", "malformed": "rejected", "resend": "duplicate"}
    dataset = Dataset(data)
    try:
        for number in range(dataset.blocks):
            block, kinds = dataset.block(number)
            for body, code in zip(block, kinds, strict=True):
                if len(bodies) == messages:
                    return bodies, expected
                if body:
                    bodies.append(body)
                    expected[outcome[KINDS[code]]] += 1
    finally:
        dataset.close()
    return bodies, expected


def sqs_path(
    server: Server,
    work: Path,
    keyfiles: dict[str, Path],
    data: Path,
    endpoint: str,
    messages: int,
    receivers: int,
) -> SqsResult:
    client = _client(endpoint)
    bodies, expected = sendable(data, messages)
    name = f"bench-logins-{int(time.time())}"
    queue_url = client.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})[
        "QueueUrl"
    ]
    try:
        log(f"sqs: seeding {len(bodies):,} messages into {queue_url}")
        seed_rate = seed(client, queue_url, bodies)
        log(f"sqs: seeded at {seed_rate:,.0f} msg/s; the flow drains it with {receivers} worker(s)")
        dsn = server.fresh_database("bench_sqs")
        env = flow_env(
            keyfiles, dsn, SQS_ENDPOINT_URL=endpoint, SQS_QUEUE_URL=queue_url,
            LOGINS_STOP_WHEN_IDLE="3", **_DUMMY,
        )  # fmt: skip
        config = config_for(env)
        prepare_schema(dsn, config)
        argv = [PYTHON, "-m", "bytewax.run", "flows.logins", "-w", str(receivers)]
        process = run_process(argv, env, work / "sqs-flow.log", timeout=messages / 50 + 300)
        if process.returncode != 0:
            raise RuntimeError(f"sqs flow exited {process.returncode}:\n{tail(process.log_path)}")
        ledger = read_ledger(dsn, config)
        exact = accounted(ledger.total, ledger.outcomes, len(bodies), expected)
        span = (ledger.last_commit or 0) - (ledger.first_commit or 0)
        flow_rate = ledger.total / span if span > 0 else 0.0
        log(f"sqs: flow {flow_rate:,.0f} msg/s (ledger {'exact' if exact else ledger.outcomes})")
        server.drop_database("bench_sqs")
        log("sqs: seeding the same messages again for the bare drain")
        seed(client, queue_url, bodies)
        drain_rate = bare_drain(client, queue_url, len(bodies), receivers)
        log(f"sqs: bare drain {drain_rate:,.0f} msg/s")
    finally:
        client.delete_queue(QueueUrl=queue_url)
    return SqsResult(
        endpoint, len(bodies), receivers, seed_rate, flow_rate, drain_rate, exact, process, ledger
    )
