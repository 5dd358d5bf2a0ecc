"""A real Prometheus scrapes a real run: `python -m bytewax.run flows.logins` with
BYTEWAX_DATAFLOW_API_ENABLED=1 on a free port, Debian's `prometheus` on loopback scraping it
every second with deploy/monitoring/alerts.yml loaded. The test puts the queue in a state it
knows (messages it holds itself, messages delayed for 15 minutes, logins delayed 2 s) and reads
the values back through Prometheus' HTTP API."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from logins.core import metrics
from logins.core.config import config_dir
from logins.dev.embedded import EmbeddedSqs, free_port
from logins.dev.generator import generate
from logins.dev.seed import send_entries
from tests.helpers import (
    REPO,
    make_keys,
    module_logging_to,
    require_binary,
    service_env,
    wait_for,
)

ALERTS = REPO / "deploy" / "monitoring" / "alerts.yml"
DEADLINE = 90.0  # seconds for any one wait: start, drain, scrape, stop
POLL: dict[str, Any] = {"every": 0.25, "tolerate": (OSError,)}  # OSError: not listening yet


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    return json.loads(body) if body.startswith("{") else body


class Prometheus:
    """Debian's prometheus on a free loopback port with a temporary storage folder."""

    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{ALERTS}']\n"
            "scrape_configs:\n"
            "  - job_name: logins-etl\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.log = (tmp / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                require_binary("prometheus", "prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> dict[str, float]:
        """An instant query: {the labels other than name, job, instance, as text: value}."""
        answer = get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert answer["status"] == "success", answer
        results = {}
        for item in answer["data"]["result"]:
            skip = ("__name__", "job", "instance")
            labels = {k: v for k, v in item["metric"].items() if k not in skip}
            key = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            results[key] = float(item["value"][1])
        return results

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def prometheus_binary() -> str:
    return require_binary("prometheus", "prometheus")


@pytest.fixture
def flow_process(
    prometheus_binary: str, tmp_path: Path, database_url: str, queue_url: str, sqs: EmbeddedSqs
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """The flow as an operator runs it (no batch mode: it runs until SIGTERM), its metrics
    on a free port, queue counts refreshed every second."""
    custom = tmp_path / "monitoring.yaml"
    custom.write_text(
        f"extends: {config_dir() / 'local.yaml'}\nsource:\n  queue_metrics_interval_seconds: 1\n"
    )
    port = free_port()
    env = {
        **service_env(
            make_keys(tmp_path / "keys"),
            database_url=database_url,
            queue_url=queue_url,
            endpoint_url=sqs.endpoint_url,
        ),
        "LOGINS_CONFIG": str(custom),
        "LOGINS_STOP_WHEN_IDLE": "",  # not set: it runs until SIGTERM
        "BYTEWAX_DATAFLOW_API_ENABLED": "1",
        "BYTEWAX_DATAFLOW_API_PORT": str(port),
        "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(tmp_path),  # it writes dataflow.json there
    }
    log = tmp_path / "flow.log"
    with module_logging_to(["bytewax.run", "flows.logins"], env, log) as process:
        yield process, port, log


def test_prometheus_reads_the_lag_histogram_and_the_queue_gauges_of_a_running_flow(
    flow_process: tuple[subprocess.Popen[bytes], int, Path],
    tmp_path: Path,
    sqs: EmbeddedSqs,
    queue_url: str,
) -> None:
    started = time.time()
    flow, port, flow_log = flow_process
    client = sqs.client()
    # The queue's state, known: 4 messages delayed for 15 minutes, 3 held by this test
    # (received, never deleted: in flight), and 40 logins delayed 2 s, so every one of them
    # is committed at least 2 s after its SentTimestamp.
    send_entries(client, queue_url, ({"MessageBody": "later", "DelaySeconds": 900},) * 4)
    send_entries(client, queue_url, ({"MessageBody": "held by the test"},) * 3)
    held: list[str] = []
    while len(held) < 3:
        response = client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=3, VisibilityTimeout=900
        )
        held += [m["MessageId"] for m in response.get("Messages", [])]
    assert len(held) == 3
    logins = generate(40, seed=44)
    sent_at = time.time()
    send_entries(client, queue_url, ({"MessageBody": m.body, "DelaySeconds": 2} for m in logins))
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{port}")
    try:
        wait_for(lambda: get(f"{prometheus.url}/-/ready"), DEADLINE, "Prometheus ready", **POLL)
        job = '{job="logins-etl"}'
        wait_for(
            lambda: prometheus.query(f"logins_commit_latency_seconds_count{job}") == {"": 40.0},
            DEADLINE,
            f"all 40 commits observed (flow log: {flow_log})",
            **POLL,
        )
        # the histogram: every login committed 2 s or more after it was sent, and before now
        elapsed = time.time() - sent_at
        buckets = prometheus.query(f"logins_commit_latency_seconds_bucket{job}")
        assert buckets["le=1.0"] == 0 and buckets["le=+Inf"] == 40
        assert elapsed < 120 and buckets["le=120.0"] == 40
        total = prometheus.query(f"logins_commit_latency_seconds_sum{job}")[""]
        assert 2 * 40 <= total <= elapsed * 40
        kinds = Counter(m.kind for m in logins)
        assert prometheus.query(f"logins_messages_total{job}") == {
            "outcome=row": kinds["valid"],
            "outcome=rejected": kinds["malformed"],
            "outcome=duplicate": kinds["resend"],
        }
        # the gauges: the queue as the test left it, nothing held by the flow, a fresh commit
        wait_for(
            lambda: (
                prometheus.query(f"logins_queue_messages{job}")
                == {"state=visible": 0, "state=in_flight": 3, "state=delayed": 4}
            ),
            DEADLINE,
            "the queue gauges to settle",
            **POLL,
        )
        assert prometheus.query(f"logins_held_messages{job}") == {"": 0}
        last_commit = prometheus.query(f"logins_last_commit_timestamp_seconds{job}")[""]
        assert started < last_commit <= time.time()
        assert prometheus.query(f"up{job}") == {"": 1}

        # the shipped alert rules load and evaluate in a real Prometheus, and none fires for a
        # healthy flow (LoginsFlowDown may be pending from before the first scrape: it clears)
        def quiet() -> list[dict[str, Any]]:
            groups = get(f"{prometheus.url}/api/v1/rules")["data"]["groups"]
            found = [r for g in groups for r in g["rules"]]
            ok = all(r["health"] == "ok" and r["state"] == "inactive" for r in found)
            return found if ok else []

        rules = wait_for(quiet, DEADLINE, "every rule evaluated, none firing or pending", **POLL)
        assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in alert_rules())
        # and /metrics itself, during the run, has every metric logins.core.metrics defines
        exposition = get(f"http://127.0.0.1:{port}/metrics")
        for value in vars(metrics).values():
            describe = getattr(value, "describe", None)
            if callable(describe) and not isinstance(value, type):
                for family in describe():
                    assert f"# TYPE {family.name}" in exposition, family.name
    finally:
        prometheus.stop()
    flow.send_signal(signal.SIGTERM)
    assert flow.wait(timeout=DEADLINE) == 0, flow_log.read_text()[-3000:]
