"""The queue's approximate counts (`logins_queue_messages{state}`), read by one thread per
process: at most one GetQueueAttributes per `source.queue_metrics_interval_seconds`, also used
by batch mode's idle check. A cold call: it stays on boto3."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from connectors.sqs.calls import failed, sqs_client
from logins.core import metrics
from logins.core.config import SqsSourceConfig
from logins.core.stop import Stop

__all__ = ["QueueCounts"]

log = logging.getLogger(__name__)

# queue state (the logins_queue_messages label) -> GetQueueAttributes name
_QUEUE_COUNTS = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


class QueueCounts:
    """The queue's approximate counts, read for this process's partitions by one thread: at
    most one GetQueueAttributes per `queue_metrics_interval_seconds` sets the
    `logins_queue_messages` gauges. Batch mode's idle check asks for a fresher reading and
    refreshes them too. Started by the first partition, stopped by the last one to close.
    A permanent failure (the queue deleted) stops the flow through `stop` (alone: its own)."""

    def __init__(self, config: SqsSourceConfig, stop: Stop | None = None) -> None:
        self._config = config
        self._flow_stop = stop or Stop()
        self._client: Any = None
        self._call = threading.Lock()  # one call at a time; a worker never waits for it
        self._users = 0
        self._users_lock = threading.Lock()
        self._stop = threading.Event()
        self._reading: dict[str, int] | None = None
        self._read_at = 0.0

    def read(self, max_age: float) -> dict[str, int] | None:
        """Counts by state no older than `max_age` seconds; None if they cannot be had now
        (SQS refused, or another thread is reading them at this moment)."""
        if self._reading is not None and time.monotonic() - self._read_at <= max_age:
            return self._reading
        if not self._call.acquire(blocking=False):
            return None
        try:
            if self._client is None:
                self._client = sqs_client(self._config)
            attrs = self._client.get_queue_attributes(
                QueueUrl=self._config.queue_url, AttributeNames=list(_QUEUE_COUNTS.values())
            )["Attributes"]
        except (BotoCoreError, ClientError) as exc:
            failure = failed(exc, self._config, self._flow_stop)
            if not failure.permanent:
                log.warning("cannot read queue counts: %s", failure)
            return None
        finally:
            self._call.release()
        reading = {state: int(attrs.get(name, 0)) for state, name in _QUEUE_COUNTS.items()}
        for state, count in reading.items():
            metrics.QUEUE_MESSAGES.labels(state).set(count)
        self._reading, self._read_at = reading, time.monotonic()
        return reading

    def acquire(self) -> None:
        """A partition starts using the counts (the first one starts the refresh thread)."""
        with self._users_lock:
            self._users += 1
            if self._users > 1:
                return
            self._stop = stop = threading.Event()  # this thread's own: a restart gets another
        threading.Thread(
            target=self._refresh, args=(stop,), name="sqs-queue-counts", daemon=True
        ).start()

    def release(self) -> None:
        with self._users_lock:
            self._users -= 1
            if self._users == 0:
                self._stop.set()

    def _refresh(self, stop: threading.Event) -> None:
        interval = self._config.queue_metrics_interval_seconds
        while True:
            self.read(max_age=interval / 2)
            if stop.wait(interval):
                return
