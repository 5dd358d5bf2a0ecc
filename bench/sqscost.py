"""What a message costs on the SQS path, in CPU, beside what it costs on the core path and what
SQS's client alone costs, all from one run, alternating, medians:

* **the flow's marginal CPU per message on SQS**: `flows.logins -w 2` (its defaults) draining
  `small` and then `large` seeded messages; the process CPU of the large run minus the small
  one's, over the messages between (start-up, imports and the idle wait cancel out);
* **the core path's**, the same difference for `bench.flow -w 2` (in-process source);
* **a bare one-thread boto3 drain's client CPU per message**: ReceiveMessage of 10 with the
  attributes the flow asks for + DeleteMessageBatch, the process's CPU while it runs; and
  the same drain through the flow's own client (connectors/sqs/wire.py);
* **a distant server** (`delay_ms`): the fault proxy (tests/faults/sqs_proxy.py) holds every
  call that long; the flow's defaults against a bare drain with as many calls in flight as the
  flow's receivers may reach (2 workers times `source.max_receivers`).
"""

from __future__ import annotations

import time
from statistics import median
from typing import Any

from bench import core
from bench.common import Rig, log
from bench.sqs import (
    WORKERS,
    Pair,
    bare_drain,
    client,
    queue,
    receive_and_delete,
    run_flow,
    seed,
    sendable,
)
from logins.core.config import SqsSourceConfig

TARGET_VS_CORE = 1.5  # the flow's marginal CPU per message on SQS / on the core path
TARGET_DELAYED = 0.8  # the flow's defaults / a bare drain with as many calls, 20 ms a call


def one_thread_drain_cpu(sqs: Any, queue_url: str, expected: int) -> float:
    """µs of this process's CPU per message (nothing else runs in it meanwhile) to receive
    (10, the flow's attributes) and delete `expected` messages on one thread."""
    done, started = 0, time.process_time()  # awscrt's own threads count too
    idle_since = time.monotonic()
    while done < expected and time.monotonic() - idle_since < 10:
        got = receive_and_delete(sqs, queue_url, attributes=True)
        if got:
            idle_since = time.monotonic()
            done += got
    return (time.process_time() - started) / max(done, 1) * 1e6


def cpu_per_message(
    rig: Rig,
    endpoint: str,
    small: int,
    large: int,
    repeats: int,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Each repeat: the SQS flow at both sizes (`source` overrides its `source:` keys), the
    core flow at both sizes, both drains."""
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
                runs[name].append(one_thread_drain_cpu(drain, queue_url, len(bodies)))
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
    bodies, expected = sendable(rig.data, messages)
    try:
        with queue(sqs, "bench-delay") as queue_url:
            for attempt in range(repeats):
                seed(sqs, queue_url, bodies)
                run = run_flow(rig, sqs, proxy.endpoint_url, queue_url, bodies, expected, None,
                               f"delay_{attempt}")  # fmt: skip
                pair.flow.append(run)
                seed(sqs, queue_url, bodies)
                pair.drain.append(bare_drain(far, queue_url, len(bodies), threads))
                log(
                    f"delay {delay_ms:g} ms #{attempt + 1}: flow {pair.flow[-1].msgs_per_s:,.0f}"
                    f" msg/s, bare drain ({threads} threads) {pair.drain[-1]:,.0f} msg/s"
                )
    finally:
        proxy.close()
    out = pair.summary()
    return {"delay_ms": delay_ms, "drain_threads": threads,
            **{k: out[k] for k in ("flow_msgs_per_s", "drain_msgs_per_s", "ratio", "ratios",
                                   "target", "met", "exact")}}  # fmt: skip
