"""The queue gauges' source: one GetQueueAttributes per process per interval, counted on the
wire by a proxy in front of the real SQS-protocol server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from prometheus_client import REGISTRY

from connectors.sqs.source import QueueCounts
from logins.dev.embedded import EmbeddedSqs
from logins.dev.seed import send_entries
from tests.faults.sqs_proxy import SqsFaultProxy
from tests.helpers import config_for


def calls(proxy: SqsFaultProxy) -> int:
    return proxy.counts["forwarded", "GetQueueAttributes"]


def refresh_threads() -> int:
    return sum(t.name == "sqs-queue-counts" for t in threading.enumerate())


def gauge(state: str) -> float | None:
    return REGISTRY.get_sample_value("logins_queue_messages", {"state": state})


def test_counts_are_read_at_most_once_per_interval_and_set_the_gauges(
    flow_env: dict[str, str], sqs: EmbeddedSqs, queue_url: str, tmp_path: Path
) -> None:
    send_entries(sqs.client(), queue_url, [{"MessageBody": "a"}, {"MessageBody": "b"}])
    send_entries(sqs.client(), queue_url, [{"MessageBody": "c", "DelaySeconds": 900}])
    proxy = SqsFaultProxy(sqs.endpoint_url)
    try:
        env = {**flow_env, "SQS_ENDPOINT_URL": proxy.endpoint_url}
        config = config_for(env, tmp_path, "source:\n  queue_metrics_interval_seconds: 1\n")
        counts = QueueCounts(config.source)

        assert counts.read(max_age=60) == {"visible": 2, "in_flight": 0, "delayed": 1}
        assert counts.read(max_age=60) is not None and calls(proxy) == 1  # served from the last
        assert (gauge("visible"), gauge("in_flight"), gauge("delayed")) == (2, 0, 1)
        counts.read(max_age=0)
        assert calls(proxy) == 2

        before, others = calls(proxy), refresh_threads()  # other flows of this process
        counts.acquire()
        counts.acquire()  # a second partition of the process: still one thread
        time.sleep(2.5)  # the interval is what is under test
        refreshed = calls(proxy) - before
        assert 2 <= refreshed <= 3, refreshed  # at 0 (a fresh reading may serve), 1 and 2 s
        assert refresh_threads() == others + 1
        counts.release()
        counts.release()  # the last partition closed: the thread ends
        deadline = time.monotonic() + 5
        while refresh_threads() > others:
            assert time.monotonic() < deadline, "the refresh thread did not stop"
            time.sleep(0.05)
    finally:
        proxy.close()
