"""`python -m tests.container.throughput`: the flow's throughput as 1, 2 and 3 containers, as
one Bytewax cluster (`-i/-a`, the StatefulSet's way) and as independent consumers (the
Deployment's), on one LocalStack queue and one PostgreSQL (tests/container/lab.py; needs a
Docker engine). Prints a Markdown table for docs/kubernetes.md and writes
bench/.work/containers.json.

Each run: a fresh queue holding the same N generated logins and a fresh database, migrated by a
`logins migrate` container; then the flow containers in batch mode until the queue is drained.
Throughput = messages in the ledger / (last commit - first commit), so container start-up and
cluster formation are left out. CPU is each container's cgroup usage between the first and the last
commit (sampled every 0.2 s, interpolated), for the flow containers, LocalStack and PostgreSQL:
per committed message. The drain ceiling is N threads doing nothing but
ReceiveMessage(10) + DeleteMessageBatch on the same queue from a container on the network.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import psycopg
from psycopg import sql

from bench.common import log, read_ledger
from logins.core.config import load_config
from logins.dev.generator import GeneratedMessage, generate
from logins.dev.seed import send_bodies
from tests.container.lab import Lab, lab
from tests.helpers import REPO

_DRAIN = """
import boto3, sys, threading, time
queue, threads = sys.argv[1], int(sys.argv[2])
done, lock, stamps = [0], threading.Lock(), []
def drain():
    sqs = boto3.client("sqs", endpoint_url="http://localstack:4566", region_name="us-east-1")
    idle = 0
    while idle < 3:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        msgs = got.get("Messages", [])
        if not msgs:
            idle += 1
            continue
        idle = 0
        sqs.delete_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])
        with lock:
            done[0] += len(msgs)
            stamps.append(time.time())
workers = [threading.Thread(target=drain) for _ in range(threads)]
[w.start() for w in workers]
[w.join() for w in workers]
print(done[0], min(stamps), max(stamps))
"""


@dataclass
class Result:
    mode: str  # "cluster" | "independent" | "drain"
    processes: int
    messages: int
    seconds: float
    msgs_per_s: float
    flow_cpu_us_per_msg: float | None
    localstack_cpu_us_per_msg: float | None
    postgres_cpu_us_per_msg: float | None
    peak_container_mb: float | None  # the largest flow container's peak (cgroup, incl. cache)
    duplicates: int | None = None  # resends recognised (the rest were stored as rows)
    resends: int | None = None  # resends the generator made


class Sampler:
    """Each container's cumulative CPU seconds and peak memory, sampled every 0.2 s, so CPU can
    be read between two moments (the first and the last commit): start-up is left out."""

    def __init__(self, the_lab: Lab, names: list[str]) -> None:
        self.lab, self.names = the_lab, names
        self.samples: dict[str, list[tuple[float, float, int]]] = {n: [] for n in names}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for name in self.names:
                reading = self.lab.usage(name)
                if reading is not None:
                    self.samples[name].append((time.time(), *reading))
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_between(self, name: str, start: float, end: float) -> float:
        """CPU seconds `name` used from `start` to `end` (epoch seconds), interpolated."""
        return self._cpu_at(name, end) - self._cpu_at(name, start)

    def _cpu_at(self, name: str, moment: float) -> float:
        samples = self.samples[name]
        if not samples:
            return 0.0
        before = [s for s in samples if s[0] <= moment]
        after = [s for s in samples if s[0] > moment]
        if not before or not after:
            return (before or after)[-1 if before else 0][1]
        (t0, c0, _), (t1, c1, _) = before[-1], after[0]
        return c0 + (c1 - c0) * (moment - t0) / (t1 - t0)

    def peak_mb(self, name: str) -> float:
        return max((peak for _, _, peak in self.samples[name]), default=0) / 2**20


def _prepare(the_lab: Lab, name: str, bodies: list[str]) -> tuple[str, str, dict[str, str]]:
    host_dsn, inside_dsn = the_lab.database(name)
    host_queue, inside_queue = the_lab.queue(name)
    send_bodies(the_lab.sqs(), host_queue, bodies)
    env = the_lab.env(inside_dsn, inside_queue, LOGINS_STOP_WHEN_IDLE="3")
    the_lab.migrate(env)
    with psycopg.connect(host_dsn, autocommit=True) as conn:  # as bench/common.prepare_schema
        alter = "ALTER TABLE {} ALTER COLUMN committed_at SET DEFAULT clock_timestamp()"
        conn.execute(sql.SQL(alter).format(sql.Identifier("logins_ledger")))
    return host_dsn, host_queue, env


SERVICES = ["localstack", "postgres"]


def flow_run(
    the_lab: Lab, mode: str, processes: int, messages: list[GeneratedMessage], tag: str
) -> Result:
    bodies = [m.body for m in messages]
    host_dsn, host_queue, env = _prepare(the_lab, f"{mode}{processes}{tag}", bodies)
    names = [f"flow-{i}" for i in range(processes)]
    addresses = the_lab.cluster_addresses(names)
    for i, name in enumerate(names):
        args = ["flows.logins", "-w", "1"]
        if mode == "cluster" and processes > 1:
            args += ["-i", str(i), "-a", addresses]
        the_lab.flow(name, env, args)
    sampler = Sampler(the_lab, names + SERVICES)
    codes = [the_lab.wait(name, 900) for name in names]
    sampler.stop()
    if any(codes):
        raise RuntimeError(f"{mode} x{processes} exited {codes}: {the_lab.logs(names[0])[-2000:]}")
    if the_lab.in_queue(host_queue) != (0, 0):
        raise RuntimeError(f"{mode} x{processes}: the queue was not drained")
    config = load_config({"SQS_QUEUE_URL": "q", "LOGINS_TOKEN_KEY_FILE": "k",
                          "LOGINS_VAULT_PUBLIC_KEY_FILE": "v"})  # fmt: skip
    ledger = read_ledger(host_dsn, config)
    if ledger.total != len(bodies):
        raise RuntimeError(f"{mode} x{processes}: ledger {ledger.total} != {len(bodies)} sent")
    assert ledger.first_commit is not None and ledger.last_commit is not None
    first, last, n = ledger.first_commit, ledger.last_commit, ledger.total

    def per_message(names: list[str]) -> float:
        return sum(sampler.cpu_between(name, first, last) for name in names) / n * 1e6

    return Result(
        mode,
        processes,
        n,
        last - first,
        n / (last - first),
        per_message(names),
        per_message(["localstack"]),
        per_message(["postgres"]),
        max(sampler.peak_mb(name) for name in names),
        ledger.outcomes.get("duplicate", 0),
        sum(m.kind == "resend" for m in messages),
    )


def drain_run(the_lab: Lab, threads: int, bodies: list[str], tag: str) -> Result:
    name = f"drain{threads}{tag}"
    host_queue, inside_queue = the_lab.queue(name)
    send_bodies(the_lab.sqs(), host_queue, bodies)
    sampler = Sampler(the_lab, SERVICES)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    options = [f"-e{k}={v}" for k, v in env.items()] + ["--entrypoint", "python"]
    the_lab.run(name, options, the_lab.image, ["-c", _DRAIN, inside_queue, str(threads)])
    code = the_lab.wait(name, 900)
    sampler.stop()
    if code != 0:
        raise RuntimeError(f"drain x{threads}: {the_lab.logs(name)[-2000:]}")
    count, first, last = the_lab.logs(name).split()[-3:]
    n, start, end = int(count), float(first), float(last)
    ls_cpu = sampler.cpu_between("localstack", start, end) / n * 1e6
    return Result("drain", threads, n, end - start, n / (end - start), None, ls_cpu, None, None)


def markdown(results: list[Result]) -> str:
    def cell(value: float | None, fmt: str = ",.0f") -> str:
        return "" if value is None else format(value, fmt)

    lines = [
        "| arrangement | processes | msg/s | flow CPU µs/msg | LocalStack CPU µs/msg"
        " | PostgreSQL CPU µs/msg | largest flow container peak MB | resends recognised |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "cluster": "one Bytewax cluster (-i/-a)",
        "independent": "independent consumers",
        "drain": "bare drain (threads)",
    }
    for r in results:
        lines.append(
            f"| {labels[r.mode]} | {r.processes} | {cell(r.msgs_per_s)} |"
            f" {cell(r.flow_cpu_us_per_msg)} | {cell(r.localstack_cpu_us_per_msg)} |"
            f" {cell(r.postgres_cpu_us_per_msg)} | {cell(r.peak_container_mb)} |"
            f" {'' if r.resends is None else f'{r.duplicates} of {r.resends}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.container.throughput", description=__doc__
    )
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the median is kept")
    parser.add_argument("--image", default=None, help="an image already built (else: build)")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / ".work" / "containers")
    args = parser.parse_args(argv)
    messages = generate(args.messages, seed=args.seed)
    bodies = [m.body for m in messages]
    results: list[Result] = []
    runs: list[Result] = []
    started, load_before = time.strftime("%Y-%m-%dT%H:%M:%S%z"), os.getloadavg()

    def median_of(measure: Callable[[str], Result], what: str) -> None:
        tries = []
        for _ in range(args.repeats):
            log(what)
            tries.append(measure(str(len(runs))))
            runs.append(tries[-1])
            log(f"  {tries[-1].msgs_per_s:,.0f} msg/s")
        results.append(sorted(tries, key=lambda r: r.msgs_per_s)[len(tries) // 2])

    with lab(args.work, args.image) as the_lab:
        for processes in args.processes:
            # one process is the same either way: `-w 1`, no -i/-a
            for mode in ("independent",) if processes == 1 else ("cluster", "independent"):
                median_of(
                    partial(flow_run, the_lab, mode, processes, messages),
                    f"{mode} x{processes}: {len(bodies):,} messages",
                )
        for threads in (1, max(args.processes), 2 * max(args.processes)):
            median_of(partial(drain_run, the_lab, threads, bodies), f"drain x{threads}")
    load_after = os.getloadavg()
    out = args.work / "containers.json"
    out.write_text(
        json.dumps(
            {
                "started": started,
                "load_average_before_after": [load_before, load_after],
                "median": [asdict(r) for r in results],
                "runs": [asdict(r) for r in runs],
            }
        )
    )
    print(f"{args.messages:,} messages, median of {args.repeats}; started {started}; load average"
          f" {load_before[0]:.1f} before, {load_after[0]:.1f} after")  # fmt: skip
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
