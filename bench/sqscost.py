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
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from botocore.config import Config

from bench import core
from bench.common import Server, log
from bench.sqs import _DUMMY, WORKERS, _client, bare_drain, run_flow, seed, sendable
from connectors.sqs.protocol import make_client
from logins.core.config import SqsSourceConfig

ATTRIBUTES = ["SentTimestamp", "ApproximateReceiveCount", "AWSTraceHeader"]
MESSAGE_ATTRIBUTES = ["traceparent"]
TARGET_VS_CORE = 1.5  # the flow's marginal CPU per message on SQS / on the core path
TARGET_DELAYED = 0.8  # the flow's defaults / a bare drain with as many calls, 20 ms a call


def one_thread_drain_cpu(client: Any, queue_url: str, expected: int) -> float:
    """µs of this process's CPU per message (nothing else runs in it meanwhile) to receive
    (10, the flow's attributes) and delete `expected` messages on one thread."""
    done, started = 0, time.process_time()  # awscrt's own threads count too
    idle_since = time.monotonic()
    while done < expected and time.monotonic() - idle_since < 10:
        got = client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
            MessageSystemAttributeNames=ATTRIBUTES,
            MessageAttributeNames=MESSAGE_ATTRIBUTES,
        ).get("Messages", [])
        if not got:
            continue
        idle_since = time.monotonic()
        client.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )
        done += len(got)
    return (time.process_time() - started) / max(done, 1) * 1e6


def _drain_client(endpoint: str, fast: bool) -> Any:
    return make_client(
        "json",
        endpoint_url=endpoint,
        region_name=_DUMMY["AWS_REGION"],
        aws_access_key_id=_DUMMY["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=_DUMMY["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"mode": "standard", "max_attempts": 10}),
        fast=fast,
    )


@dataclass
class CpuResult:
    small: int
    large: int
    sqs_flow_us: list[float] = field(default_factory=list)  # marginal, per repeat
    core_flow_us: list[float] = field(default_factory=list)
    boto3_drain_us: list[float] = field(default_factory=list)
    wire_drain_us: list[float] = field(default_factory=list)
    sqs_flow_exact: list[bool] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        sqs, core_, boto = (median(v) for v in
                            (self.sqs_flow_us, self.core_flow_us, self.boto3_drain_us))  # fmt: skip
        return {
            "sizes": [self.small, self.large],
            "sqs_flow_cpu_us_per_msg": round(sqs, 1),
            "core_flow_cpu_us_per_msg": round(core_, 1),
            "boto3_drain_cpu_us_per_msg": round(boto, 1),
            "wire_drain_cpu_us_per_msg": round(median(self.wire_drain_us), 1),
            "sqs_vs_core": round(sqs / core_, 2),
            "sqs_vs_boto3_drain": round(sqs / boto, 2),
            "target_vs_core": TARGET_VS_CORE,
            "met_vs_core": sqs / core_ <= TARGET_VS_CORE,
            "met_vs_boto3_drain": sqs < boto,
            "runs": {
                "sqs_flow": [round(x, 1) for x in self.sqs_flow_us],
                "core_flow": [round(x, 1) for x in self.core_flow_us],
                "boto3_drain": [round(x, 1) for x in self.boto3_drain_us],
                "wire_drain": [round(x, 1) for x in self.wire_drain_us],
            },
            "exact": all(self.sqs_flow_exact),
        }


def cpu_per_message(
    server: Server,
    work: Path,
    keyfiles: dict[str, Path],
    data: Path,
    endpoint: str,
    small: int,
    large: int,
    repeats: int,
    source: dict[str, Any] | None = None,
) -> CpuResult:
    """Each repeat: the SQS flow at both sizes (`source` overrides its `source:` keys), the
    core flow at both sizes, both drains."""
    client = _client(endpoint)
    result = CpuResult(small, large)
    boto3_client, wire_client = _drain_client(endpoint, False), _drain_client(endpoint, True)
    queue_url = client.create_queue(
        QueueName=f"bench-cpu-{int(time.time())}", Attributes={"VisibilityTimeout": "60"}
    )["QueueUrl"]
    try:
        for attempt in range(repeats):
            cpu: dict[int, float] = {}
            for size in (small, large):
                bodies, expected = sendable(data, size)
                seed(client, queue_url, bodies)
                run = run_flow(server, work, keyfiles, client, endpoint, queue_url, bodies,
                               expected, None, f"cpu_{size}_{attempt}", source)  # fmt: skip
                cpu[size] = run.cpu_seconds
                result.sqs_flow_exact.append(run.exact)
            result.sqs_flow_us.append((cpu[large] - cpu[small]) / (large - small) * 1e6)
            core_cpu = {
                size: core.run_flow(server, work, keyfiles, data, name=f"cpu_core_{size}",
                                    messages=size, workers=WORKERS)[0].process.cpu_seconds
                for size in (small, large)
            }  # fmt: skip
            result.core_flow_us.append((core_cpu[large] - core_cpu[small]) / (large - small) * 1e6)
            bodies, _ = sendable(data, small)
            for drain_client, runs in ((boto3_client, result.boto3_drain_us),
                                       (wire_client, result.wire_drain_us)):  # fmt: skip
                seed(client, queue_url, bodies)
                runs.append(one_thread_drain_cpu(drain_client, queue_url, len(bodies)))
            log(
                f"cpu #{attempt + 1}: flow on SQS {result.sqs_flow_us[-1]:.1f} µs/msg marginal,"
                f" core {result.core_flow_us[-1]:.1f}, boto3 drain {result.boto3_drain_us[-1]:.1f},"
                f" wire drain {result.wire_drain_us[-1]:.1f}"
            )
    finally:
        client.delete_queue(QueueUrl=queue_url)
    return result


@dataclass
class DelayedResult:
    delay_ms: float
    drain_threads: int
    flow_msgs_per_s: list[float] = field(default_factory=list)
    drain_msgs_per_s: list[float] = field(default_factory=list)
    exact: list[bool] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ratios = [f / d for f, d in zip(self.flow_msgs_per_s, self.drain_msgs_per_s, strict=False)]
        ratio = median(ratios)
        return {
            "delay_ms": self.delay_ms,
            "drain_threads": self.drain_threads,
            "flow_msgs_per_s": round(median(self.flow_msgs_per_s), 1),
            "drain_msgs_per_s": round(median(self.drain_msgs_per_s), 1),
            "ratio": round(ratio, 4),
            "ratios": [round(r, 4) for r in ratios],
            "target": TARGET_DELAYED,
            "met": ratio >= TARGET_DELAYED,
            "exact": all(self.exact),
        }


def delayed(
    server: Server,
    work: Path,
    keyfiles: dict[str, Path],
    data: Path,
    endpoint: str,
    messages: int,
    repeats: int,
    delay_ms: float,
) -> DelayedResult:
    """The flow's defaults and a bare drain behind the fault proxy holding each call."""
    from tests.faults.sqs_proxy import SqsFaultProxy  # the fault tests' proxy (repository root)

    client = _client(endpoint)
    threads = WORKERS * SqsSourceConfig.model_fields["max_receivers"].default
    result = DelayedResult(delay_ms, threads)
    proxy = SqsFaultProxy(endpoint)
    proxy.delay(delay_ms / 1000)
    far = _client(proxy.endpoint_url, pool=threads + 4)
    bodies, expected = sendable(data, messages)
    queue_url = client.create_queue(
        QueueName=f"bench-delay-{int(time.time())}", Attributes={"VisibilityTimeout": "60"}
    )["QueueUrl"]
    try:
        for attempt in range(repeats):
            seed(client, queue_url, bodies)
            run = run_flow(server, work, keyfiles, client, proxy.endpoint_url, queue_url, bodies,
                           expected, None, f"delay_{attempt}")  # fmt: skip
            result.flow_msgs_per_s.append(run.msgs_per_s)
            result.exact.append(run.exact)
            seed(client, queue_url, bodies)
            result.drain_msgs_per_s.append(bare_drain(far, queue_url, len(bodies), threads))
            log(
                f"delay {delay_ms:g} ms #{attempt + 1}: flow {run.msgs_per_s:,.0f} msg/s,"
                f" bare drain ({threads} threads) {result.drain_msgs_per_s[-1]:,.0f} msg/s"
            )
    finally:
        proxy.close()
        client.delete_queue(QueueUrl=queue_url)
    return result
