"""SQS source (a Bytewax DynamicSource).

Every worker polls the same queue; SQS hands out disjoint messages. `next_batch` never blocks
the worker: background receiver threads long-poll (WaitTimeSeconds) into a bounded buffer,
and `next_batch` only takes what is already there. Each partition starts `source.receivers`
receivers and adds one (up to `source.max_receivers`) whenever the flow finds the buffer dry
while receives come back full, so that a distant server (10-30 ms a call) still keeps the
flow fed; a receiver beyond `source.receivers` ends when its receive comes back empty.

Retries of SQS calls (throttling, connection errors) are botocore's standard mode. A transient
failure is logged with the server's error code and message and retried; a permanent one (the
queue deleted, access denied, credentials revoked: connectors/errors.py) stops the flow
through its `Stop` (logins/core/stop.py, `fail`): what it holds is committed, then it exits 2.

The acker (connectors/sqs/acker.py) deletes after commit; the heartbeat
(connectors/sqs/heartbeat.py) keeps what this process holds invisible; the queue counts
(connectors/sqs/counts.py) serve the metrics and batch mode's idle check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from bytewax.inputs import DynamicSource, StatelessSourcePartition

from connectors.sqs.acker import Acker, NoAcker, SqsAcker
from connectors.sqs.calls import failed, sqs_client, where
from connectors.sqs.counts import QueueCounts
from connectors.sqs.heartbeat import Heartbeat, InFlight
from logins.core import metrics
from logins.core.config import SqsSourceConfig
from logins.core.records import SqsMessage
from logins.core.stop import Stop

__all__ = [  # the acker's and the heartbeat's names too: what the flow and sink import
    "Acker",
    "Heartbeat",
    "InFlight",
    "NoAcker",
    "QueueCounts",
    "SqsAcker",
    "SqsSource",
    "sqs_client",
    "to_message",
    "where",
]

log = logging.getLogger(__name__)

IDLE_POLL = timedelta(milliseconds=50)
GROW_EVERY = 0.05  # seconds between two receivers added while the buffer stays dry
_RECEIVE_ATTRIBUTES = ["SentTimestamp", "ApproximateReceiveCount", "AWSTraceHeader"]
_MESSAGE_ATTRIBUTES = ["traceparent"]  # W3C trace context, as OpenTelemetry's SQS producers set it


def to_message(raw: dict[str, Any], received_at: float) -> SqsMessage:
    attributes = raw.get("Attributes") or {}
    message_attributes = raw.get("MessageAttributes")
    traceparent = (
        message_attributes.get("traceparent", {}).get("StringValue") if message_attributes else None
    )
    sent_ms = int(attributes.get("SentTimestamp", 0))
    return SqsMessage(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=raw.get("Body", ""),
        sent_timestamp_ms=sent_ms or int(received_at * 1000),
        receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
        received_at=received_at,
        trace_header=traceparent or attributes.get("AWSTraceHeader"),
        sent_timestamp_known=sent_ms > 0,
    )


class _SqsPartition(StatelessSourcePartition[SqsMessage]):
    """One worker's receivers. Ends on idle (LOGINS_STOP_WHEN_IDLE) or once the flow's `stop`
    is requested (SIGTERM/SIGINT, a failure): it hands over what it buffered; messages a
    receive brings after that are released (visibility 0) so they return to the queue at once
    instead of after the timeout."""

    def __init__(
        self,
        config: SqsSourceConfig,
        worker_index: int,
        inflight: InFlight,
        counts: QueueCounts,
        heartbeat: Heartbeat | None = None,
        stop: Stop | None = None,
    ) -> None:
        self._config = config
        self._worker = worker_index
        self._flow_stop = stop or Stop()
        self._client = sqs_client(config)
        self._inflight = inflight
        self._counts = counts
        self._heartbeat = heartbeat
        counts.acquire()
        if heartbeat is not None:
            heartbeat.acquire()
        self._closed = False
        self._acker = SqsAcker(config, inflight, self._client, stop=self._flow_stop)
        # Whole receives, not messages: one append per call, one pop per call's messages.
        self._buffer: deque[list[SqsMessage]] = deque()
        self._buffered = 0
        self._lock = threading.Lock()  # the buffer, and "buffer a receive" against "ended"
        self._stopping = threading.Event()
        self._finished = False
        self._idle_since: float | None = None
        self._next_count_check = 0.0
        self._awake: datetime | None = None
        self._last_full = False  # the latest receive brought max_messages: more are waiting
        self._next_grow = 0.0
        self._threads: list[threading.Thread] = []
        self._running = 0  # receivers running (under _lock)
        for _ in range(config.receivers):
            self._add_receiver()

    def _add_receiver(self) -> None:
        with self._lock:
            self._running += 1
            number = len(self._threads)
            thread = threading.Thread(
                target=self._receive_loop, name=f"sqs-receiver-{self._worker}-{number}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _receive_loop(self) -> None:
        try:
            self._receive_until_stopped()
        finally:
            with self._lock:
                self._running -= 1

    def _receive_until_stopped(self) -> None:
        config = self._config
        receive = self._client.receive_message
        while not self._stopping.is_set():
            if self._buffered + config.max_messages > config.prefetch:
                time.sleep(0.01)  # back-pressure: the flow is behind; don't hold more messages
                continue
            try:
                response = receive(
                    QueueUrl=config.queue_url,
                    MaxNumberOfMessages=config.max_messages,
                    WaitTimeSeconds=config.wait_time_seconds,
                    VisibilityTimeout=config.visibility_timeout,
                    MessageSystemAttributeNames=_RECEIVE_ATTRIBUTES,
                    MessageAttributeNames=_MESSAGE_ATTRIBUTES,
                )
            except (BotoCoreError, ClientError) as exc:
                metrics.SQS_ERRORS.inc()
                failure = failed(exc, config, self._flow_stop)
                if failure.permanent:
                    return
                log.warning("receive failed after retries; trying again: %s", failure)
                self._stopping.wait(1.0)
                continue
            now = time.time()
            messages = [to_message(raw, now) for raw in response.get("Messages", ())]
            self._last_full = len(messages) >= config.max_messages
            if not messages:
                with self._lock:
                    if self._running > config.receivers:
                        return  # an added receiver ends when the queue has nothing for it
                continue
            metrics.SQS_RECEIVED.inc(len(messages))
            self._inflight.add(messages)
            with self._lock:
                if not self._finished:
                    self._buffer.append(messages)
                    self._buffered += len(messages)
                    continue
            self._acker.release(messages)

    def _take(self) -> list[SqsMessage]:
        """Up to max_batch buffered messages (the caller holds _lock)."""
        limit = self._config.max_batch
        if len(self._buffer) == 1 and len(self._buffer[0]) <= limit:
            items = self._buffer.popleft()
        else:
            items = []
            while self._buffer and len(items) < limit:
                chunk = self._buffer.popleft()
                room = limit - len(items)
                if len(chunk) > room:
                    self._buffer.appendleft(chunk[room:])
                    chunk = chunk[:room]
                items += chunk
        self._buffered -= len(items)
        return items

    def next_batch(self) -> list[SqsMessage]:
        if self._flow_stop.is_set() or self._finished:
            return self._finish("stop requested")
        if self._buffer:
            with self._lock:
                items = self._take()
            self._idle_since = None
            self._awake = None
            return items
        now = time.monotonic()
        if self._last_full and now >= self._next_grow:
            self._grow(now)
        self._awake = datetime.now(timezone.utc) + IDLE_POLL
        if self._idle_since is None:
            self._idle_since = now
        limit = self._config.stop_when_idle
        if limit is not None and now - self._idle_since >= limit and now >= self._next_count_check:
            self._next_count_check = now + 0.5
            if self._queue_is_empty(max_age=min(1.0, limit)):
                return self._finish(f"queue idle for {limit}s and empty")
        return []

    def _grow(self, now: float) -> None:
        """The flow waits on receives while the queue has more: one more call in flight."""
        self._next_grow = now + GROW_EVERY
        bound = max(self._config.receivers, self._config.max_receivers)
        if self._running < bound and not self._stopping.is_set():
            self._add_receiver()

    def _finish(self, why: str) -> list[SqsMessage]:
        """Stop receiving and hand over everything buffered, then end this partition."""
        self._stopping.set()
        with self._lock:
            first = not self._finished
            self._finished = True
            leftover: list[SqsMessage] = []
            while batch := self._take():
                leftover += batch
        if first:
            log.info("%s: source finished (%d buffered messages handed over)", why, len(leftover))
        if leftover:
            return leftover
        raise StopIteration

    def _queue_is_empty(self, max_age: float) -> bool:
        """Nothing visible, in flight (invisible) or delayed: everything was committed."""
        reading = self._counts.read(max_age)
        return reading is not None and not any(reading.values())

    def next_awake(self) -> datetime | None:
        return self._awake

    def close(self) -> None:
        """Wait for receive calls still in flight, so what they bring is released, not held
        invisible until its timeout (adds up to wait_time_seconds to a stop)."""
        self._stopping.set()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(self._config.wait_time_seconds + 5)
        if not self._closed:
            self._closed = True
            self._counts.release()
            if self._heartbeat is not None:
                self._heartbeat.release()


class SqsSource(DynamicSource[SqsMessage]):
    """Receives from one SQS queue.

    Delivery guarantee: at least once. A message is deleted only through the acker, after
    the sink committed it; anything not deleted comes back after its visibility timeout.

    Unit of parallelism: one partition per worker, all on the same queue (SQS hands each
    message to one receiver); each partition runs `source.receivers` to
    `source.max_receivers` receive threads.

    `config` is the config's `source:`; `stop` the flow's (build_flow's): its partitions end
    once it is requested, and a permanent failure of any SQS call fails it. The source owns
    this process's record of held messages and the one heartbeat that keeps them invisible;
    its partitions and the sinks' ackers (`acker()`) each hold the heartbeat while they run."""

    def __init__(self, config: SqsSourceConfig, stop: Stop | None = None) -> None:
        self._config = config
        self.stop = stop or Stop()
        self.inflight = InFlight(config)  # shared by this process's partitions and sinks
        self.counts = QueueCounts(config, self.stop)  # shared by this process's partitions
        self.heartbeat = Heartbeat(
            config, self.inflight, lambda: SqsAcker(config, self.inflight, stop=self.stop)
        )

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SqsPartition:
        return _SqsPartition(
            self._config, worker_index, self.inflight, self.counts, self.heartbeat, self.stop
        )

    def acker(self) -> SqsAcker:
        """A sink partition's acker: the heartbeat runs at least until the sink closes it."""
        self.heartbeat.acquire()
        return SqsAcker(
            self._config, self.inflight, on_close=self.heartbeat.release, stop=self.stop
        )
