"""The SQS path (only with an endpoint, e.g. LocalStack): the whole flow (`flows.logins`, the
operator contract's variables, LOGINS_STOP_WHEN_IDLE) draining N seeded messages, beside a
bare drain of the same N messages (ReceiveMessage + DeleteMessageBatch, nothing else), in one
run and interleaved, so both see the same machine:

* **same receivers**: the flow with `-w 2` and one receiver per worker against a bare drain
  with two receiver threads (target: the flow reaches 90 % of it);
* **defaults**: the flow with its default settings and `-w 2` against a bare drain with four
  receiver threads (target: 80 %).

Each pair is repeated; the ratio of each repeat is flow / the drain measured right beside it,
and the figures quoted are medians. The flow is measured from its first commit to the moment
the queue is seen empty (nothing visible or in flight: its last delete), polled every 0.1 s
(at most 0.1 s against the flow) once its ledger holds every message, so that the bench's
polling adds no load on the SQS server while the flow drains, as none is added while the bare
drain does; the bare drain from its first to its last delete."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import psycopg
from botocore.config import Config
from psycopg import sql

from bench.common import (
    PYTHON,
    ROOT,
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
from bench.generated import Dataset
from connectors.sqs.protocol import make_client
from logins.dev.generator import KINDS

_DUMMY = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
TARGET_SAME = 0.9  # the flow / a bare drain with as many receivers
TARGET_DEFAULT = 0.8  # the flow's defaults (-w 2) / a four-receiver bare drain
WORKERS = 2


@dataclass
class FlowRun:
    workers: int
    receivers_per_worker: int | None  # None: the configuration's default
    msgs_per_s: float
    exact: bool
    seconds: float  # first commit to the queue seen empty
    cpu_seconds: float  # user + system of the flow process
    outcomes: dict[str, int]


@dataclass
class DrainRun:
    receivers: int
    msgs_per_s: float


@dataclass
class Pair:
    """The flow against a bare drain, repeated (each ratio from a flow and the drain beside it)."""

    name: str
    target: float
    receivers: int  # the bare drain's receiver threads
    flow: list[FlowRun] = field(default_factory=list)
    drain: list[DrainRun] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [f.msgs_per_s / d.msgs_per_s for f, d in zip(self.flow, self.drain, strict=False)]

    def summary(self) -> dict[str, Any]:
        ratios = self.ratios
        ratio = median(ratios) if ratios else 0.0
        return {
            "receivers": self.receivers,
            "flow_msgs_per_s": round(median(f.msgs_per_s for f in self.flow), 1),
            "drain_msgs_per_s": round(median(d.msgs_per_s for d in self.drain), 1),
            "ratio": round(ratio, 4),
            "ratios": [round(r, 4) for r in ratios],
            "target": self.target,
            "met": ratio >= self.target,
            "flow_runs": [round(f.msgs_per_s, 1) for f in self.flow],
            "drain_runs": [round(d.msgs_per_s, 1) for d in self.drain],
            "flow_cpu_us_per_msg": round(
                median(f.cpu_seconds / max(sum(f.outcomes.values()), 1) * 1e6 for f in self.flow),
                1,
            ),
        }


@dataclass
class SqsResult:
    endpoint: str
    messages: int
    repeats: int
    seed_msgs_per_s: float
    same: Pair
    default: Pair

    @property
    def exact(self) -> bool:
        return all(f.exact for p in (self.same, self.default) for f in p.flow)

    def summary(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "messages": self.messages,
            "repeats": self.repeats,
            "workers": WORKERS,
            "seed_msgs_per_s": round(self.seed_msgs_per_s, 1),
            "same_receivers": self.same.summary(),
            "defaults": self.default.summary(),
            "exact": self.exact,
        }


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


class EmptyWatch:
    """Polls the queue's counts every `interval` s; `empty_at` is the first epoch time it saw
    nothing visible, in flight or delayed after having seen something.

    With `ready`, the queue is polled only once `ready()` is true (checked every `interval`
    s): the flow's run waits for its ledger to hold every message, so no GetQueueAttributes
    reaches the server while the flow drains. Ten of them a second cost LocalStack about 5 %
    more CPU per message drained and a bare drain about 15 % of its rate (measured: 690
    against 838 msg/s, three alternating rounds), a load the bare drain beside it did not
    carry."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        interval: float = 0.1,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self._client, self._url, self._interval = client, queue_url, interval
        self._ready = ready
        self._stop = threading.Event()
        self.empty_at: float | None = None
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> EmptyWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        while self._ready is not None and not self._stop.wait(self._interval):
            try:
                if self._ready():
                    break
            except psycopg.Error:
                continue  # the flow's schema is not there yet, or the server is busy
        while not self._stop.wait(self._interval):
            attrs = self._client.get_queue_attributes(QueueUrl=self._url, AttributeNames=names)
            if not any(int(v) for v in attrs["Attributes"].values()):
                self.empty_at = time.time()
                return


class LedgerCount:
    """`ledger_holds()` is true once the flow's ledger has `expected` entries: one count on
    PostgreSQL (not on the SQS server the flow shares the cores with) per call."""

    def __init__(self, dsn: str, table: str, expected: int) -> None:
        self._dsn, self._expected = dsn, expected
        self._query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        self._conn: psycopg.Connection[Any] | None = None

    def __call__(self) -> bool:
        if self._conn is None:
            self._conn = psycopg.connect(self._dsn, autocommit=True)
        row = self._conn.execute(self._query).fetchone()
        return row is not None and int(row[0]) >= self._expected

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


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


def run_flow(
    server: Server,
    work: Path,
    keyfiles: dict[str, Path],
    client: Any,
    endpoint: str,
    queue_url: str,
    bodies: list[str],
    expected: dict[str, int],
    receivers_per_worker: int | None,
    name: str,
    source: dict[str, Any] | None = None,
    wrap: list[str] | None = None,
) -> FlowRun:
    """`python -m bytewax.run flows.logins -w 2` until the queue is idle and empty; `source`
    overrides keys of the configuration's `source:`."""
    database = f"bench_sqs_{name}"
    dsn = server.fresh_database(database)
    extra = {"SQS_ENDPOINT_URL": endpoint, "SQS_QUEUE_URL": queue_url,
             "LOGINS_STOP_WHEN_IDLE": "3", **_DUMMY}  # fmt: skip
    source = dict(source or {})
    if receivers_per_worker is not None:
        source["receivers"] = receivers_per_worker
    if source:
        override = work / f"sqs-{name}.yaml"
        keys = "".join(f"  {key}: {value}\n" for key, value in source.items())
        override.write_text(f"extends: {ROOT / 'config' / 'local.yaml'}\nsource:\n{keys}")
        extra["LOGINS_CONFIG"] = str(override)
    env = flow_env(keyfiles, dsn, **extra)
    config = config_for(env)
    prepare_schema(dsn, config)
    argv = [*(wrap or []), PYTHON, "-m", "bytewax.run", "flows.logins", "-w", str(WORKERS)]
    complete = LedgerCount(dsn, config.sink.ledger_table, len(bodies))
    try:
        with EmptyWatch(client, queue_url, ready=complete) as watch:
            process = run_process(
                argv, env, work / f"sqs-{name}.log", timeout=len(bodies) / 50 + 300
            )
    finally:
        complete.close()
    if process.returncode != 0:
        raise RuntimeError(f"sqs flow exited {process.returncode}:\n{tail(process.log_path)}")
    ledger = read_ledger(dsn, config)
    server.drop_database(database)
    exact = accounted(ledger.total, ledger.outcomes, len(bodies), expected)
    first = ledger.first_commit or 0.0
    end = max(ledger.last_commit or 0.0, watch.empty_at or 0.0)
    span = end - first
    return FlowRun(
        WORKERS,
        receivers_per_worker,
        ledger.total / span if span > 0 else 0.0,
        exact,
        span,
        process.cpu_seconds,
        ledger.outcomes,
    )


def sqs_path(
    server: Server,
    work: Path,
    keyfiles: dict[str, Path],
    data: Path,
    endpoint: str,
    messages: int,
    repeats: int = 3,
) -> SqsResult:
    """Both pairs, `repeats` times, interleaved: flow (1 receiver/worker), drain(2), flow
    (defaults), drain(4); the queue is seeded with the same messages before each."""
    client = _client(endpoint)
    bodies, expected = sendable(data, messages)
    name = f"bench-logins-{int(time.time())}"
    queue_url = client.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})[
        "QueueUrl"
    ]
    same = Pair("same_receivers", TARGET_SAME, receivers=WORKERS)
    default = Pair("defaults", TARGET_DEFAULT, receivers=4)
    seeds: list[float] = []
    try:
        for attempt in range(repeats):
            for pair, per_worker in ((same, 1), (default, None)):
                seeds.append(seed(client, queue_url, bodies))
                flow = run_flow(server, work, keyfiles, client, endpoint, queue_url, bodies,
                                expected, per_worker, f"{pair.name}_{attempt}")  # fmt: skip
                pair.flow.append(flow)
                seeds.append(seed(client, queue_url, bodies))
                drained = bare_drain(client, queue_url, len(bodies), pair.receivers)
                pair.drain.append(DrainRun(pair.receivers, drained))
                log(
                    f"sqs {pair.name} #{attempt + 1}: flow {flow.msgs_per_s:,.0f} msg/s"
                    f" ({'exact' if flow.exact else flow.outcomes}), bare drain"
                    f" ({pair.receivers} receivers) {pair.drain[-1].msgs_per_s:,.0f} msg/s:"
                    f" {pair.ratios[-1]:.0%}"
                )
    finally:
        client.delete_queue(QueueUrl=queue_url)
    return SqsResult(endpoint, len(bodies), repeats, median(seeds), same, default)
