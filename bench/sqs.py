"""`python -m bench sqs`: the SQS path (only with an endpoint, e.g. LocalStack): the whole flow
(`flows.logins`, the operator contract's variables, LOGINS_STOP_WHEN_IDLE) draining N seeded
messages, beside a bare drain of the same N messages (ReceiveMessage + DeleteMessageBatch,
nothing else), in one run and interleaved, so both see the same machine:

* **same receivers**: the flow with `-w 2` and one receiver per worker against a bare drain
  with two receiver threads (target: the flow reaches 90 % of it);
* **defaults**: the flow with its default settings and `-w 2` against a bare drain with four
  receiver threads (target: 80 %).

Each pair is repeated; the ratio of each repeat is flow / the drain measured right beside it,
and the figures quoted are medians. The flow is measured from its first commit to the moment
the queue is seen empty (nothing visible or in flight: its last delete), polled every 0.1 s
(at most 0.1 s against the flow) once its ledger holds every message, so that the bench's
polling adds no load on the SQS server while the flow drains, as none is added while the bare
drain does; the bare drain from its first to its last delete. In the same command,
alternating, medians:

* **the flow's marginal CPU per message on SQS**: `flows.logins -w 2` (its defaults) draining
  `small` and then `large` seeded messages; the process CPU of the large run minus the small
  one's, over the messages between (start-up, imports and the idle wait cancel out);
* **the core path's**, the same difference for `bench.flow -w 2` (in-process source);
* **a bare one-thread boto3 drain's client CPU per message**: ReceiveMessage of 10 with the
  attributes the flow asks for + DeleteMessageBatch, the process's CPU while it runs; and
  the same drain through the flow's own client (connectors/sqs/wire.py);
* **a distant server** (`delay_ms`): the fault proxy (tests/faults/sqs_proxy.py) holds every
  call that long; the flow's defaults against a bare drain with as many calls in flight as the
  flow's receivers may reach (2 workers times `source.max_receivers`)."""

from __future__ import annotations

import contextlib
import threading
import time
from argparse import Namespace
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import psycopg
from botocore.config import Config
from psycopg import sql

from bench import core
from bench.common import (
    PYTHON,
    ROOT,
    Rig,
    as_dict,
    dataset,
    flow_env,
    log,
    prepare_schema,
    read_ledger,
    run_process,
    session,
    tail,
)
from bench.generated import Dataset
from bench.server import Poller
from connectors.sqs.protocol import Protocol, make_client
from logins.core.config import SqsSourceConfig, load_config
from logins.dev.seed import send_bodies

TARGET_SAME = 0.9  # the flow / a bare drain with as many receivers
TARGET_DEFAULT = 0.8  # the flow's defaults (-w 2) / a four-receiver bare drain
TARGET_VS_CORE = 1.5  # the flow's marginal CPU per message on SQS / on the core path
TARGET_DELAYED = 0.8  # the flow's defaults / a bare drain with as many calls, 20 ms a call
WORKERS = 2
ATTRIBUTES = ["SentTimestamp", "ApproximateReceiveCount", "AWSTraceHeader"]  # the flow's
MESSAGE_ATTRIBUTES = ["traceparent"]


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
class Pair:
    """The flow against a bare drain, repeated (each ratio from a flow and the drain beside it)."""

    name: str
    target: float
    receivers: int  # the bare drain's receiver threads
    flow: list[FlowRun] = field(default_factory=list)
    drain: list[float] = field(default_factory=list)  # msg/s of each bare drain
    seeds: list[float] = field(default_factory=list)  # msg/s of each SendMessageBatch seeding

    @property
    def ratios(self) -> list[float]:
        return [f.msgs_per_s / d for f, d in zip(self.flow, self.drain, strict=False)]

    def summary(self) -> dict[str, Any]:
        ratios = self.ratios
        ratio = median(ratios) if ratios else 0.0
        return {
            "receivers": self.receivers,
            "flow_msgs_per_s": round(median(f.msgs_per_s for f in self.flow), 1),
            "drain_msgs_per_s": round(median(self.drain), 1),
            "ratio": round(ratio, 4),
            "ratios": [round(r, 4) for r in ratios],
            "target": self.target,
            "met": ratio >= self.target,
            "flow_runs": [round(f.msgs_per_s, 1) for f in self.flow],
            "drain_runs": [round(d, 1) for d in self.drain],
            "flow_cpu_us_per_msg": round(
                median(f.cpu_seconds / max(sum(f.outcomes.values()), 1) * 1e6 for f in self.flow),
                1,
            ),
            "exact": all(f.exact for f in self.flow),
        }


def client(endpoint: str, pool: int = 32, protocol: Protocol = "auto", fast: bool = True) -> Any:
    """An SQS client on `endpoint` with throwaway credentials (LocalStack accepts any)."""
    return make_client(
        protocol,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 (a local endpoint's throwaway)
        config=Config(max_pool_connections=pool, retries={"mode": "standard", "max_attempts": 10}),
        fast=fast,
    )


@contextlib.contextmanager
def queue(sqs: Any, prefix: str) -> Iterator[str]:
    """A fresh queue (60 s visibility), deleted afterwards."""
    url = sqs.create_queue(
        QueueName=f"{prefix}-{int(time.time())}", Attributes={"VisibilityTimeout": "60"}
    )["QueueUrl"]
    try:
        yield url
    finally:
        sqs.delete_queue(QueueUrl=url)


def seed(sqs: Any, queue_url: str, bodies: list[str], threads: int = 8) -> float:
    """SendMessageBatch from `threads` threads; returns messages/s."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: send_bodies(sqs, queue_url, bodies[i : i + 10]),
                      range(0, len(bodies), 10)))  # fmt: skip
    return len(bodies) / (time.perf_counter() - started)


def receive_and_delete(sqs: Any, queue_url: str, attributes: bool = False) -> int:
    """One ReceiveMessage (10, long poll 1 s; with the flow's `attributes`) and one
    DeleteMessageBatch of what came; returns how many."""
    wanted = {"MessageSystemAttributeNames": ATTRIBUTES,
              "MessageAttributeNames": MESSAGE_ATTRIBUTES} if attributes else {}  # fmt: skip
    got = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=60,
        **wanted,
    ).get("Messages", [])  # fmt: skip
    if got:
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )
    return len(got)


def bare_drain(
    sqs: Any, queue_url: str, expected: int, receivers: int, attributes: bool = False
) -> tuple[float, float]:
    """Receive and delete on `receivers` threads until `expected` are deleted (or 10 s of
    nothing): msg/s from the first to the last delete, and µs of this process's CPU per
    message (awscrt's own threads count too; nothing else runs in it meanwhile)."""
    lock = threading.Lock()
    state = {"deleted": 0, "first": 0.0, "last": 0.0}

    def receiver() -> None:
        idle_since = time.perf_counter()
        while state["deleted"] < expected and time.perf_counter() - idle_since < 10:
            got = receive_and_delete(sqs, queue_url, attributes)
            if got:
                with lock:
                    idle_since = state["last"] = time.perf_counter()
                    state["first"] = state["first"] or idle_since
                    state["deleted"] += got

    cpu = time.process_time()
    threads = [threading.Thread(target=receiver) for _ in range(receivers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu_us = (time.process_time() - cpu) / max(state["deleted"], 1) * 1e6
    span = state["last"] - state["first"]
    if state["deleted"] < expected:
        log(f"bare drain: only {state['deleted']:,} of {expected:,} messages came back")
    return (state["deleted"] / span if span > 0 else 0.0), cpu_us


class EmptyWatch(Poller):
    """Polls the queue's counts every `interval` s once the flow's ledger (`table` at `dsn`)
    holds `expected` entries; `empty_at` is the first epoch time it saw nothing visible, in
    flight or delayed.

    The ledger is counted on PostgreSQL, not on the SQS server the flow shares the cores with,
    so no GetQueueAttributes reaches that server while the flow drains. Ten of them a second
    cost LocalStack about 5 % more CPU per message drained and a bare drain about 15 % of its
    rate (measured: 690 against 838 msg/s, three alternating rounds), a load the bare drain
    beside it did not carry."""

    def __init__(
        self, sqs: Any, queue_url: str, dsn: str, table: str, expected: int, interval: float = 0.1
    ) -> None:
        self._sqs, self._url, self._interval = sqs, queue_url, interval
        self._dsn, self._count = (
            dsn,
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)),
        )
        self._expected = expected
        self.empty_at: float | None = None
        super().__init__()

    def _poll(self) -> None:
        names = [f"ApproximateNumberOfMessages{s}" for s in ("", "NotVisible", "Delayed")]
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            while not self._stop.wait(self._interval):
                try:
                    if int(conn.execute(self._count).fetchone()[0]) >= self._expected:  # type: ignore[index]
                        break
                except psycopg.Error:
                    continue  # the flow's schema is not there yet, or the server is busy
        while not self._stop.wait(self._interval):
            attrs = self._sqs.get_queue_attributes(QueueUrl=self._url, AttributeNames=names)
            if not any(int(v) for v in attrs["Attributes"].values()):
                self.empty_at = time.time()
                return


def sendable(data: Path, messages: int) -> tuple[list[str], dict[str, int]]:
    """The first `messages` bodies SQS accepts (it refuses an empty body: the generator's few
    empty not-JSON bodies are left out), and the outcomes they must have."""
    bodies: list[str] = []
    expected = {"row": 0, "rejected": 0, "duplicate": 0}
    outcome = {"valid": "row", "malformed": "rejected", "resend": "duplicate"}
    with Dataset(data) as opened:
        for _, body, kind in opened.messages():
            if len(bodies) == messages:
                break
            if body:
                bodies.append(body)
                expected[outcome[kind]] += 1
    return bodies, expected


def run_flow(
    rig: Rig,
    sqs: Any,
    endpoint: str,
    queue_url: str,
    bodies: list[str],
    expected: dict[str, int],
    receivers_per_worker: int | None,
    name: str,
    source: dict[str, Any] | None = None,
) -> FlowRun:
    """`python -m bytewax.run flows.logins -w 2` until the queue is idle and empty; `source`
    overrides keys of the configuration's `source:`."""
    database, server, work = f"bench_sqs_{name}", rig.server, rig.work
    dsn = server.fresh_database(database)
    extra = {"LOGINS_STOP_WHEN_IDLE": "3"}
    source = dict(source or {})
    if receivers_per_worker is not None:
        source["receivers"] = receivers_per_worker
    if source:
        override = work / f"sqs-{name}.yaml"
        keys = "".join(f"  {key}: {value}\n" for key, value in source.items())
        override.write_text(f"extends: {ROOT / 'config' / 'local.yaml'}\nsource:\n{keys}")
        extra["LOGINS_CONFIG"] = str(override)
    env = flow_env(rig.keys, dsn, queue_url, endpoint, **extra)
    config = load_config(env)
    prepare_schema(dsn, config)
    argv = [PYTHON, "-m", "bytewax.run", "flows.logins", "-w", str(WORKERS)]
    with EmptyWatch(sqs, queue_url, dsn, config.sink.ledger_table, len(bodies)) as watch:
        process = run_process(argv, env, work / f"sqs-{name}.log", len(bodies) / 50 + 300)
    if process.returncode != 0:
        raise RuntimeError(f"sqs flow exited {process.returncode}:\n{tail(process.log_path)}")
    ledger = read_ledger(dsn, config)
    server.drop_database(database)
    exact = core.accounted(ledger.total, ledger.outcomes, len(bodies), expected)
    span = max(ledger.last_commit or 0.0, watch.empty_at or 0.0) - (ledger.first_commit or 0.0)
    return FlowRun(WORKERS, receivers_per_worker, ledger.total / span if span > 0 else 0.0,
                   exact, span, process.cpu_seconds, ledger.outcomes)  # fmt: skip


def race(
    rig: Rig,
    sqs: Any,
    endpoint: str,
    queue_url: str,
    pair: Pair,
    name: str,
    sent: tuple[list[str], dict[str, int]],
    per_worker: int | None = None,
    drain: Any = None,
) -> None:
    """One round of `pair`: the queue seeded with `sent`'s bodies, the flow (on `endpoint`)
    drains it, the queue seeded again, a bare drain (`drain`'s client, else `sqs`) empties it."""
    bodies, expected = sent
    pair.seeds.append(seed(sqs, queue_url, bodies))
    flow = run_flow(rig, sqs, endpoint, queue_url, bodies, expected, per_worker, name)
    pair.flow.append(flow)
    pair.seeds.append(seed(sqs, queue_url, bodies))
    pair.drain.append(bare_drain(drain or sqs, queue_url, len(bodies), pair.receivers)[0])
    log(f"sqs {name}: flow {flow.msgs_per_s:,.0f} msg/s"
        f" ({'exact' if flow.exact else flow.outcomes}), bare drain ({pair.receivers}"
        f" receivers) {pair.drain[-1]:,.0f} msg/s: {pair.ratios[-1]:.0%}")  # fmt: skip


def sqs_path(rig: Rig, endpoint: str, messages: int, repeats: int = 3) -> dict[str, Any]:
    """Both pairs, `repeats` times, interleaved: flow (1 receiver/worker), drain(2), flow
    (defaults), drain(4); the queue is seeded with the same messages before each."""
    sqs = client(endpoint)
    sent = sendable(rig.data, messages)
    same = Pair("same_receivers", TARGET_SAME, receivers=WORKERS)
    default = Pair("defaults", TARGET_DEFAULT, receivers=4)
    with queue(sqs, "bench-logins") as queue_url:
        for attempt in range(repeats):
            for pair, per_worker in ((same, 1), (default, None)):
                race(rig, sqs, endpoint, queue_url, pair, f"{pair.name}_{attempt}", sent,
                     per_worker)  # fmt: skip
    summaries = {"same_receivers": same.summary(), "defaults": default.summary()}
    return {
        "endpoint": endpoint, "messages": len(sent[0]), "repeats": repeats, "workers": WORKERS,
        "seed_msgs_per_s": round(median(same.seeds + default.seeds), 1), **summaries,
        "exact": all(s.pop("exact") for s in summaries.values()),
        "runs": as_dict([same, default]),
    }  # fmt: skip


def cpu_per_message(
    rig: Rig,
    endpoint: str,
    small: int,
    large: int,
    repeats: int,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Each repeat: the SQS flow at both sizes (`source` overrides its `source:` keys), the
    core flow at both sizes, both one-thread drains."""
    sqs = client(endpoint)
    drains = {"boto3_drain": client(endpoint, 10, "json", fast=False),
              "wire_drain": client(endpoint, 10, "json", fast=True)}  # fmt: skip
    runs: dict[str, list[float]] = {k: [] for k in ("sqs_flow", "core_flow", *drains)}
    exact: list[bool] = []

    def marginal(cpu: dict[int, float]) -> float:
        return (cpu[large] - cpu[small]) / (large - small) * 1e6

    with queue(sqs, "bench-cpu") as queue_url:
        for attempt in range(repeats):
            cpu: dict[int, float] = {}
            for size in (small, large):
                bodies, expected = sendable(rig.data, size)
                seed(sqs, queue_url, bodies)
                run = run_flow(rig, sqs, endpoint, queue_url, bodies, expected, None,
                               f"cpu_{size}_{attempt}", source)  # fmt: skip
                cpu[size] = run.cpu_seconds
                exact.append(run.exact)
            runs["sqs_flow"].append(marginal(cpu))
            runs["core_flow"].append(marginal({
                size: core.run_flow(rig, name=f"cpu_core_{size}",
                                    messages=size, workers=WORKERS)[0].process.cpu_seconds
                for size in (small, large)
            }))  # fmt: skip
            bodies, _ = sendable(rig.data, small)
            for name, drain in drains.items():
                seed(sqs, queue_url, bodies)
                runs[name].append(bare_drain(drain, queue_url, len(bodies), 1, True)[1])
            log(f"cpu #{attempt + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items())
                + " µs/msg")  # fmt: skip
    sqs_us, core_us, boto_us = (median(runs[k]) for k in ("sqs_flow", "core_flow", "boto3_drain"))
    return {
        "sizes": [small, large],
        **{f"{k}_cpu_us_per_msg": round(median(v), 1) for k, v in runs.items()},
        "sqs_vs_core": round(sqs_us / core_us, 2),
        "sqs_vs_boto3_drain": round(sqs_us / boto_us, 2),
        "target_vs_core": TARGET_VS_CORE,
        "met_vs_core": sqs_us / core_us <= TARGET_VS_CORE,
        "met_vs_boto3_drain": sqs_us < boto_us,
        "runs": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "exact": all(exact),
    }


def delayed(
    rig: Rig, endpoint: str, messages: int, repeats: int, delay_ms: float
) -> dict[str, Any]:
    """The flow's defaults and a bare drain behind the fault proxy holding each call."""
    from tests.faults.sqs_proxy import SqsFaultProxy  # the fault tests' proxy (repository root)

    sqs = client(endpoint)
    threads = WORKERS * SqsSourceConfig.model_fields["max_receivers"].default
    pair = Pair("delayed", TARGET_DELAYED, threads)
    proxy = SqsFaultProxy(endpoint)
    proxy.delay(delay_ms / 1000)
    far = client(proxy.endpoint_url, pool=threads + 4)
    sent = sendable(rig.data, messages)
    try:
        with queue(sqs, "bench-delay") as queue_url:
            for attempt in range(repeats):
                race(rig, sqs, proxy.endpoint_url, queue_url, pair, f"delay_{attempt}", sent,
                     drain=far)  # fmt: skip
    finally:
        proxy.close()
    return {"delay_ms": delay_ms, "drain_threads": threads} | pair.summary()


def measure(
    rig: Rig,
    endpoint: str,
    *,
    messages: int,
    repeats: int,
    cpu_sizes: list[int],
    delay_ms: float,
    delay_messages: int,
    pairs: bool = True,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The parts asked for: the CPU per message between `cpu_sizes` ([] skips), the flow
    behind a `delay_ms` proxy (0 skips), the pairs."""
    figures: dict[str, Any] = {}
    if cpu_sizes:
        figures["cpu"] = cpu_per_message(rig, endpoint, cpu_sizes[0], cpu_sizes[1], repeats, source)
    if delay_ms:
        figures["delayed"] = delayed(rig, endpoint, delay_messages, repeats, delay_ms)
    if pairs:
        figures |= sqs_path(rig, endpoint, messages, repeats)
    return figures


def in_full_run(rig: Rig, endpoint: str, messages: int, repeats: int) -> dict[str, Any]:
    """`make bench --sqs-endpoint`: the pairs, the CPU per message (4,000 -> up to 24,000
    messages) and the flow behind a 20 ms proxy (up to 8,000 messages)."""
    sizes = [4000, min(24000, messages)]
    return measure(rig, endpoint, messages=messages, repeats=repeats,
                   cpu_sizes=sizes if sizes[1] > sizes[0] else [], delay_ms=20.0,
                   delay_messages=min(8000, messages))  # fmt: skip


def alone(args: Namespace) -> dict[str, Any]:
    """`python -m bench sqs`: the parts asked for, into fresh databases on the server
    (BENCH_DATABASE_URL, else embedded)."""
    with session(args.work) as (server, keyfiles):
        sizes = [int(x) for x in args.cpu_sizes.split(",") if x]
        most = max([args.messages, args.delay_messages, *sizes])
        data, _ = dataset(args.work, most + 100, args.seed)  # room for refused bodies
        return measure(
            Rig(server, args.work, keyfiles, data), args.endpoint, messages=args.messages,
            repeats=args.repeats, cpu_sizes=sizes, delay_ms=args.delay_ms,
            delay_messages=args.delay_messages, pairs=not args.no_pairs,
            source=dict(kv.split("=", 1) for kv in args.flow_source.split(",") if kv),
        )  # fmt: skip
