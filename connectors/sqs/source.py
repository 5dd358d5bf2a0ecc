"""SQS source (a Bytewax DynamicSource) and the deleter the sink calls after commit.

Every worker polls the same queue; SQS hands out disjoint messages. `next_batch` never blocks
the worker: background receiver threads long-poll (WaitTimeSeconds) into a bounded buffer,
and `next_batch` only drains what is already there. Retries of SQS calls (throttling,
connection errors) are botocore's own retry modes: exponential backoff with jitter. Every
client speaks the server's protocol (`source.protocol`, see connectors/sqs/protocol.py).

A transient failure is logged with the server's error code and message and retried; a
permanent one (the queue deleted, access denied, credentials revoked: connectors/errors.py)
stops the flow through `shutdown.fail`: what it holds is committed, then it exits 2.

Metrics this module owns: `logins_held_messages` (the InFlight set below) and
`logins_queue_messages{state}` (QueueCounts: one GetQueueAttributes per process per
`source.queue_metrics_interval_seconds`, also used by batch mode's idle check).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from bytewax.inputs import DynamicSource, StatelessSourcePartition

from connectors.errors import Failure, sqs_failure, sqs_where
from connectors.sqs.protocol import SqsClient, make_client
from logins.core import metrics, shutdown
from logins.core.config import SqsSourceConfig
from logins.core.records import SqsMessage

__all__ = [
    "Acker",
    "InFlight",
    "NoAcker",
    "QueueCounts",
    "SqsAcker",
    "SqsSource",
    "sqs_client",
    "to_message",
]

log = logging.getLogger(__name__)

IDLE_POLL = timedelta(milliseconds=50)
_RECEIVE_ATTRIBUTES = ["SentTimestamp", "ApproximateReceiveCount", "AWSTraceHeader"]
_MESSAGE_ATTRIBUTES = ["traceparent"]  # W3C trace context, as OpenTelemetry's SQS producers set it
# queue state (the logins_queue_messages label) -> GetQueueAttributes name
_QUEUE_COUNTS = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


def sqs_client(config: SqsSourceConfig, max_attempts: int | None = None) -> SqsClient:
    """An SQS client in the configured protocol, with botocore's retry mode and a read timeout
    above the long poll."""
    attempts = max_attempts or config.retry.max_attempts
    return make_client(
        config.protocol,
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        config=Config(
            retries={"mode": config.retry.mode, "max_attempts": attempts},
            connect_timeout=5,
            read_timeout=config.wait_time_seconds + 10,
            max_pool_connections=max(10, config.receivers * 2 + config.ack_concurrency),
        ),
    )


def where(config: SqsSourceConfig) -> str:
    """The queue (and endpoint) as error messages name it."""
    return sqs_where(config.queue_url, config.endpoint_url)


def _failed(exc: BaseException, config: SqsSourceConfig) -> Failure:
    """Describe a failed call; a permanent failure stops the flow (after what it holds)."""
    failure = sqs_failure(exc, where(config))
    if failure.permanent:
        shutdown.fail(str(failure))
    return failure


def to_message(raw: dict[str, Any], received_at: float) -> SqsMessage:
    attributes = raw.get("Attributes", {})
    traceparent = raw.get("MessageAttributes", {}).get("traceparent", {}).get("StringValue")
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


class QueueCounts:
    """The queue's approximate counts, read for this process's partitions by one thread: at
    most one GetQueueAttributes per `queue_metrics_interval_seconds` sets the
    `logins_queue_messages` gauges. Batch mode's idle check asks for a fresher reading and
    refreshes them too. Started by the first partition, stopped by the last one to close."""

    def __init__(self, config: SqsSourceConfig) -> None:
        self._config = config
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
            failure = _failed(exc, self._config)
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


class InFlight:
    """Every message this process received and has not deleted or released yet, kept
    invisible by one heartbeat: whatever waited half its visibility timeout (in the receive
    buffer, queued behind a slow write, or in a write that retries) gets a fresh timeout.
    An entry is dropped on delete or release, or when SQS refuses to extend it (another
    process of a cluster deleted it)."""

    def __init__(self, config: SqsSourceConfig) -> None:
        self._config = config
        self._held: dict[str, SqsMessage] = {}
        self._lock = threading.Lock()
        self._started = False
        self._users = 0
        self._stop = threading.Event()

    def add(self, messages: Sequence[SqsMessage]) -> None:
        with self._lock:
            before = len(self._held)
            for message in messages:
                self._held[message.receipt_handle] = message
            metrics.HELD.inc(len(self._held) - before)

    def discard(self, messages: Sequence[SqsMessage]) -> None:
        with self._lock:
            before = len(self._held)
            for message in messages:
                self._held.pop(message.receipt_handle, None)
            metrics.HELD.dec(before - len(self._held))

    def __len__(self) -> int:
        return len(self._held)

    def start(self, acker: SqsAcker) -> None:
        """A user starts (every source partition, every sink's acker): the first one starts
        the heartbeat; `release` by the last one stops it."""
        with self._lock:
            self._users += 1
            if self._started:
                return
            self._started = True
        interval = min(1.0, self._config.visibility_timeout / 4)
        thread = threading.Thread(
            target=self._beat, args=(acker, interval), name="sqs-visibility", daemon=True
        )
        thread.start()

    def release(self) -> None:
        """A user is done. After the last (the sinks closed: nothing more will be deleted)
        nothing is extended: what is still held comes back after its visibility timeout, as
        when the process exits. A heartbeat outliving its flow in a process that runs another
        (tests, a reused Lambda sandbox) would keep those messages hidden, and its first
        failure on a since-deleted queue would stop the next flow."""
        with self._lock:
            self._users -= 1
            last = self._users <= 0
        if last:
            self.stop()

    def stop(self) -> None:
        self._stop.set()

    def _beat(self, acker: SqsAcker, interval: float) -> None:
        while not self._stop.wait(interval):
            limit = time.time() - self._config.visibility_timeout / 2
            with self._lock:
                due = [m for m in self._held.values() if m.received_at < limit]
            if due:
                self.discard(acker.extend(due))


class _SqsPartition(StatelessSourcePartition[SqsMessage]):
    """One worker's receivers. Ends on idle (LOGINS_STOP_WHEN_IDLE) or on SIGTERM/SIGINT:
    it hands over what it buffered; messages a receive brings after that are released
    (visibility 0) so they return to the queue at once instead of after the timeout."""

    def __init__(
        self,
        config: SqsSourceConfig,
        worker_index: int,
        inflight: InFlight,
        counts: QueueCounts,
    ) -> None:
        self._config = config
        self._client = sqs_client(config)
        self._inflight = inflight
        self._counts = counts
        counts.acquire()
        self._closed = False
        self._acker = SqsAcker(config, inflight, self._client)
        inflight.start(SqsAcker(config, inflight))
        self._buffer: queue.SimpleQueue[SqsMessage] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders "buffer a receive" against "the source ended"
        self._stopping = threading.Event()
        self._finished = False
        self._idle_since: float | None = None
        self._next_count_check = 0.0
        self._awake: datetime | None = None
        self._threads = [
            threading.Thread(
                target=self._receive_loop, name=f"sqs-receiver-{worker_index}-{i}", daemon=True
            )
            for i in range(config.receivers)
        ]
        for thread in self._threads:
            thread.start()

    def _receive_loop(self) -> None:
        config = self._config
        while not self._stopping.is_set():
            if self._buffer.qsize() + config.max_messages > config.prefetch:
                time.sleep(0.01)  # back-pressure: the flow is behind; don't hold more messages
                continue
            try:
                response = self._client.receive_message(
                    QueueUrl=config.queue_url,
                    MaxNumberOfMessages=config.max_messages,
                    WaitTimeSeconds=config.wait_time_seconds,
                    VisibilityTimeout=config.visibility_timeout,
                    MessageSystemAttributeNames=_RECEIVE_ATTRIBUTES,
                    MessageAttributeNames=_MESSAGE_ATTRIBUTES,
                )
            except (BotoCoreError, ClientError) as exc:
                metrics.SQS_ERRORS.inc()
                failure = _failed(exc, config)
                if failure.permanent:
                    return
                log.warning("receive failed after retries; trying again: %s", failure)
                self._stopping.wait(1.0)
                continue
            now = time.time()
            messages = [to_message(raw, now) for raw in response.get("Messages", [])]
            metrics.SQS_RECEIVED.inc(len(messages))
            self._inflight.add(messages)
            with self._lock:
                if not self._finished:
                    for message in messages:
                        self._buffer.put(message)
                    continue
            self._acker.release(messages)

    def _drain(self) -> list[SqsMessage]:
        items: list[SqsMessage] = []
        try:
            while len(items) < self._config.max_batch:
                items.append(self._buffer.get_nowait())
        except queue.Empty:
            pass
        return items

    def next_batch(self) -> list[SqsMessage]:
        if shutdown.STOPPING.is_set() or self._finished:
            return self._finish("stop requested")
        items = self._drain()
        now = time.monotonic()
        if items:
            self._idle_since = None
            self._awake = None
            return items
        self._awake = datetime.now(timezone.utc) + IDLE_POLL
        if self._idle_since is None:
            self._idle_since = now
        limit = self._config.stop_when_idle
        if limit is not None and now - self._idle_since >= limit and now >= self._next_count_check:
            self._next_count_check = now + 0.5
            if self._queue_is_empty(max_age=min(1.0, limit)):
                return self._finish(f"queue idle for {limit}s and empty")
        return items

    def _finish(self, why: str) -> list[SqsMessage]:
        """Stop receiving and hand over everything buffered, then end this partition."""
        self._stopping.set()
        with self._lock:
            first = not self._finished
            self._finished = True
            leftover: list[SqsMessage] = []
            while batch := self._drain():
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
        for thread in self._threads:
            thread.join(self._config.wait_time_seconds + 5)
        if not self._closed:
            self._closed = True
            self._counts.release()
            self._inflight.release()


class SqsSource(DynamicSource[SqsMessage]):
    """Receives from one SQS queue.

    Delivery guarantee: at least once. A message is deleted only through the acker, after
    the sink committed it; anything not deleted comes back after its visibility timeout.

    Unit of parallelism: one partition per worker, all on the same queue (SQS hands each
    message to one receiver); each partition runs `source.receivers` receive threads.

    `config` is the config's `source:`; the acker it makes shares this process's record of
    held messages, whose visibility one heartbeat keeps extending."""

    def __init__(self, config: SqsSourceConfig) -> None:
        self._config = config
        self.inflight = InFlight(config)  # shared by this process's partitions and sinks
        self.counts = QueueCounts(config)  # shared by this process's partitions

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SqsPartition:
        return _SqsPartition(self._config, worker_index, self.inflight, self.counts)

    def acker(self) -> SqsAcker:
        """A sink partition's acker: it keeps the heartbeat going until the sink closes it."""
        acker = SqsAcker(self._config, self.inflight)
        self.inflight.start(acker)
        acker.holds_heartbeat = True
        return acker


class Acker(Protocol):
    """What the sink calls after its transaction: delete committed messages, keep held ones
    invisible, let refused ones come back. The SQS source provides one; in-process sources
    use `NoAcker`."""

    def delete(self, messages: Sequence[SqsMessage]) -> int: ...
    def extend(self, messages: Sequence[SqsMessage]) -> list[SqsMessage]: ...
    def release(self, messages: Sequence[SqsMessage], after_seconds: int = 0) -> int: ...
    def close(self) -> None:
        """The sink is done: it will delete nothing more."""


class SqsAcker(Acker):
    """Deletes committed messages and moves visibility, ten per batch call, up to
    `source.ack_concurrency` calls at once; each method returns when all its calls did.

    None of these failing is an error for the flow: a message not deleted comes back after
    its visibility timeout and its write is a no-op; a visibility change that fails leaves
    the message on its old clock (it may come back once more, with the same no-op).
    """

    def __init__(
        self, config: SqsSourceConfig, inflight: InFlight, client: Any | None = None
    ) -> None:
        self._config = config
        self._inflight = inflight
        self._client = client or sqs_client(config)
        self._pool: ThreadPoolExecutor | None = None  # started by the first call of > 10
        self._pool_lock = threading.Lock()
        self.holds_heartbeat = False  # a sink's acker, counted among the heartbeat's users

    def close(self) -> None:
        """The sink is done with this acker: its calls' threads end, and so (after the last
        user) does the heartbeat."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self.holds_heartbeat:
            self.holds_heartbeat = False
            self._inflight.release()

    def delete(self, messages: Sequence[SqsMessage]) -> int:
        self._inflight.discard(messages)
        failed = len(self._batched("delete_message_batch", messages, {}))
        metrics.SQS_DELETED.inc(len(messages) - failed)
        metrics.SQS_DELETE_FAILED.inc(failed)
        return failed

    def extend(self, messages: Sequence[SqsMessage]) -> list[SqsMessage]:
        """Restart the visibility clock of messages still held; returns those SQS refused."""
        failed = self._batched(
            "change_message_visibility_batch",
            messages,
            {"VisibilityTimeout": self._config.visibility_timeout},
        )
        now = time.time()
        for message in messages:
            message.received_at = now
        metrics.SQS_VISIBILITY_EXTENDED.inc(len(messages) - len(failed))
        return failed

    def release(self, messages: Sequence[SqsMessage], after_seconds: int = 0) -> int:
        """Let messages come back (after `after_seconds`) instead of after the full timeout."""
        self._inflight.discard(messages)
        failed = self._batched(
            "change_message_visibility_batch", messages, {"VisibilityTimeout": after_seconds}
        )
        return len(failed)

    def _batched(
        self, operation: str, messages: Sequence[SqsMessage], extra: dict[str, Any]
    ) -> list[SqsMessage]:
        """Call `operation` ten messages at a time, `ack_concurrency` calls in flight (a
        committed batch of 1,000 is 100 calls: one after the other they, not the database,
        would set the sink's pace); returns the messages it failed for, once all returned."""
        call = getattr(self._client, operation)

        def one(chunk: Sequence[SqsMessage]) -> list[SqsMessage]:
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle, **extra}
                for i, m in enumerate(chunk)
            ]
            try:
                response = call(QueueUrl=self._config.queue_url, Entries=entries)
                return [chunk[int(f["Id"])] for f in response.get("Failed", [])]
            except (BotoCoreError, ClientError) as exc:
                failure = _failed(exc, self._config)
                log.warning("%s failed for %d messages: %s", operation, len(chunk), failure)
                return list(chunk)

        chunks = [messages[start : start + 10] for start in range(0, len(messages), 10)]
        if len(chunks) <= 1 or self._config.ack_concurrency == 1:
            return [m for chunk in chunks for m in one(chunk)]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self._config.ack_concurrency, thread_name_prefix="sqs-ack"
                )
            pool = self._pool
        return [m for failed in pool.map(one, chunks) for m in failed]


class NoAcker(Acker):
    """For sources that need no acknowledgement (tests, benchmarks, in-process input)."""

    def delete(self, messages: Sequence[SqsMessage]) -> int:
        return 0

    def extend(self, messages: Sequence[SqsMessage]) -> list[SqsMessage]:
        return []

    def release(self, messages: Sequence[SqsMessage], after_seconds: int = 0) -> int:
        return 0

    def close(self) -> None:
        pass
