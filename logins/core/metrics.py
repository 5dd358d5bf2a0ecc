"""Prometheus metrics. Labels are fixed vocabularies (outcome, reason code, queue state), never
data.

Bytewax serves prometheus_client's default registry next to its own metrics on
:3030/metrics (BYTEWAX_DATAFLOW_API_PORT) when BYTEWAX_DATAFLOW_API_ENABLED=1. The names are a
contract: deploy/monitoring/ (alert rules, dashboard) is written against them, and
tests/unit/test_monitoring.py checks that it references nothing else.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

MESSAGES = Counter(
    "logins_messages", "Messages committed, by outcome (row, rejected, duplicate)", ["outcome"]
)
REDELIVERED = Counter(
    "logins_redelivered", "Deliveries whose message was already in the ledger (no effect)"
)
REJECTED = Counter("logins_rejected", "Rejected deliveries by reason code", ["reason"])
VAULT_SEALED = Counter(
    "logins_vault_entries",
    "Vault entries offered to the vault (new or not: the pipeline cannot tell)",
)
SQS_RECEIVED = Counter("logins_sqs_received", "Messages received from SQS")
SQS_DELETED = Counter("logins_sqs_deleted", "Messages deleted from SQS after commit")
SQS_DELETE_FAILED = Counter(
    "logins_sqs_delete_failed", "Deletes SQS refused; those messages come back and are no-ops"
)
SQS_VISIBILITY_EXTENDED = Counter(
    "logins_sqs_visibility_extended", "Messages whose visibility was extended during a slow write"
)
POISON = Counter("logins_poison", "Messages the database refused, by what happened", ["action"])
SQS_ERRORS = Counter("logins_sqs_receive_errors", "ReceiveMessage calls that failed after retries")
DB_RETRIES = Counter("logins_db_retries", "Database write attempts that failed and were retried")
BATCH_SECONDS = Histogram(
    "logins_sink_batch_seconds",
    "Time to commit one batch (write + commit)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

QUEUE_STATES = ("visible", "in_flight", "delayed")
QUEUE_MESSAGES = Gauge(
    "logins_queue_messages",
    "The queue's approximate message counts (GetQueueAttributes), by state",
    ["state"],
)
HELD = Gauge(
    "logins_held_messages", "Messages this process received and has not deleted or released yet"
)
LAST_COMMIT = Gauge(
    "logins_last_commit_timestamp_seconds",
    "Unix time of this process's last commit (its start, until the first commit)",
)

LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600,
)  # fmt: skip


class BatchHistogram(Collector):
    """A histogram observed a batch at a time: one bisect per value and one lock per batch,
    where prometheus_client's Histogram takes locks on every observation (several times the
    cost per value: `python -m bench.metrics_cost`, figures in docs/operations.md). The sink
    observes every message it commits, so this is on the hot path. Exported through the
    default registry like any other metric.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], *, register: bool = True
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        if register:
            REGISTRY.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        where = bisect.bisect_left
        bounds = self._bounds
        counts = [0] * len(self._counts)
        total = 0.0
        for value in values:
            counts[where(bounds, value)] += 1
            total += value
        with self._lock:
            for i, n in enumerate(counts):
                self._counts[i] += n
            self._sum += total

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation)]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, n in zip((*self._bounds, float("inf")), counts, strict=True):
            running += n
            cumulative.append((_le(bound), running))
        family = HistogramMetricFamily(self._name, self._documentation)
        family.add_metric([], cumulative, total)
        yield family


def _le(bound: float) -> str:
    """The `le` label as prometheus_client writes it ("0.01", "60.0", "+Inf")."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


COMMIT_LATENCY = BatchHistogram(
    "logins_commit_latency_seconds",
    "Commit time minus SentTimestamp, per committed message: how far behind the flow is",
    LATENCY_BUCKETS,
)

EXTRA_FIELDS = Counter(
    "logins_messages_with_extra_fields",
    "Messages whose JSON object has keys the schema does not declare (ignored; their names"
    " are logged at most once a minute, never their values)",
)

DEDUPE_EVICTED_EARLY = Counter(
    "logins_dedupe_evicted_early",
    "Dedupe fingerprints dropped before their window ended (state full): a resend of one"
    " becomes a row",
)

TOKEN_KMS_CALLS = Counter(
    "logins_token_kms_calls", "GenerateMac calls made for tokens (a KMS token key; retries count)"
)
TOKEN_CACHE = Counter(
    "logins_token_cache", "Token lookups of a KMS token key by result (hit, miss)", ["result"]
)
