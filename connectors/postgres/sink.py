"""Postgres sink: one transaction per batch for rows, rejected rows, duplicates and vault
entries; the batch's messages are deleted from SQS only after that transaction committed.

The write path is connectors/postgres/writer.py (SQL, COPY, retries), the poison rule
connectors/postgres/committer.py, the writer threads and the writers' construction
connectors/postgres/pool.py. This module is the Bytewax sink: per batch, the commit, the
deletes, the batch span and the metrics. It receives the writers (built from the config's
`sink:`, the table's columns and the sealer), the seal cache it shares with the steps and the
flow's stop; it never sees the rest of the configuration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from opentelemetry.trace import SpanKind

from connectors.postgres.committer import BatchCommitter
from connectors.postgres.pool import WriterPool, Writers
from connectors.postgres.writer import BatchResult, DatabaseUnavailable
from connectors.sqs.source import Acker
from logins.core import metrics
from logins.core.config import PostgresSinkConfig
from logins.core.records import Event
from logins.core.sealcache import SealCache
from logins.core.stop import Stop
from logins.core.telemetry import producer_links, tracer

__all__ = ["PostgresSink"]

log = logging.getLogger(__name__)


class _PostgresPartition(StatelessSinkPartition[Event]):
    """Commits each batch, then deletes its messages. A batch the database refuses because of
    one row's data is split until that row is alone; it is retried through SQS redelivery and
    parked as a rejected row (`poison`) once it was received `poison_after_attempts` times.

    Batches are written on the writer threads of a WriterPool (connectors/postgres/pool.py),
    each with its own connection. A failure on a writer thread is raised on the worker by
    the next `write_batch` (or by `close`)."""

    def __init__(
        self,
        settings: PostgresSinkConfig,
        committers: Sequence[BatchCommitter],
        *,
        cache: SealCache,
        acker: Acker,
        max_release_seconds: int,
        queue_name: str,
        stop: Stop,
    ) -> None:
        self._settings = settings
        self._stop = stop
        self._max_release_seconds = max_release_seconds
        self._span_attributes = _messaging_attributes(queue_name)
        self._cache = cache
        self._acker = acker
        self._refused = False  # the database refused this login for good: release, never write
        self._pool = WriterPool(
            committers,
            queued_batches=settings.queued_batches,
            write=self._write_logged,
            release=lambda items: acker.release([e.message for e in items]),
            stop=stop,
        )
        metrics.LAST_COMMIT.set(time.time())  # "stalled" counts from the start until a commit

    def write_batch(self, items: list[Event]) -> None:
        if not items:
            return
        unmasked = sum(1 for e in items if not e.masked)
        if unmasked:  # configuration policy prevents this; never write raw PII regardless
            raise RuntimeError(f"{unmasked} events reached the sink without a mask step")
        self._pool.submit(items)

    def _write_logged(self, items: list[Event], committer: BatchCommitter) -> None:
        try:
            self._write_batch(items, committer)
        except Exception:
            # In a cluster other processes only see a bare panic: log the traceback here.
            log.exception(
                "sink failed; the flow stops and uncommitted messages return to the "
                "queue after their visibility timeout"
            )
            raise

    def _write_batch(self, items: list[Event], committer: BatchCommitter) -> None:
        if self._refused:
            self._acker.release([e.message for e in items])
            return
        with tracer().start_as_current_span(
            "logins.sink.write_batch",
            kind=SpanKind.CONSUMER,
            attributes={**self._span_attributes, "messaging.batch.message_count": len(items)},
        ) as span:
            if span.is_recording():  # parse the producers' headers only when traces are kept
                headers = ((e.message.message_id, e.message.trace_header) for e in items)
                for link in producer_links(headers):
                    span.add_link(link.context, link.attributes)
            started = time.perf_counter()
            try:
                committed = committer.commit(items)
            except DatabaseUnavailable as exc:
                self._acker.release([e.message for e in items])  # back to the queue at once
                if not exc.permanent:
                    raise
                # Refused for good: stop the flow gracefully (exit 2), write nothing more.
                self._refused = True
                self._stop.fail(str(exc))
                return
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            done, poisoned = committed.events, committed.refused
            if done:
                committed_at = time.time()
                metrics.LAST_COMMIT.set(committed_at)
                metrics.COMMIT_LATENCY.observe_many(
                    committed_at - e.message.sent_timestamp_ms / 1000 for e in done
                )
            self._cache.mark_committed(v.token for e in done for v in e.vault_entries)
            failed = self._acker.delete([e.message for e in done])
            if poisoned:
                self._retry_later(poisoned)
            result = committed.result
            span.set_attributes(
                {
                    "logins.batch.size": len(items),
                    "logins.batch.rows": result.rows,
                    "logins.batch.rejected": result.rejected,
                    "logins.batch.duplicates": result.duplicates,
                    "logins.batch.redelivered": result.redelivered,
                    "logins.batch.vault_entries": result.vault_entries,
                    "logins.batch.poisoned": len(poisoned),
                    "logins.batch.delete_failed": failed,
                }
            )
        _count(done, result)
        log.debug("committed batch: %s, %d deletes failed", result, failed)

    def _retry_later(self, poisoned: list[tuple[Event, str]]) -> None:
        """Not deleted: the message comes back after a short, growing delay and is tried alone."""
        for event, reason in poisoned:
            metrics.POISON.labels("retried").inc()
            log.warning(
                "message %s refused by the database (attempt %d of %d): %s",
                event.message.message_id,
                event.message.receive_count,
                self._settings.poison_after_attempts,
                reason,
            )
        for event, _ in poisoned:
            delay = min(2**event.message.receive_count, self._max_release_seconds)
            self._acker.release([event.message], after_seconds=delay)

    def close(self) -> None:
        """Write what is queued, then close; raises if a writer thread failed and no
        write_batch has raised that yet."""
        try:
            self._pool.close()
        finally:
            self._acker.close()  # whatever happened, this sink deletes nothing more
        self._pool.raise_unraised_failure()


def _messaging_attributes(queue_name: str) -> dict[str, str]:
    """OpenTelemetry's messaging attributes of a batch span (semantic conventions for a batch
    that is received and processed): the system and the queue's name, never a message's data."""
    return {
        "messaging.system": "aws_sqs",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": queue_name,
    }


def _count(items: Sequence[Event], result: BatchResult) -> None:
    metrics.MESSAGES.labels("row").inc(result.rows)
    metrics.MESSAGES.labels("rejected").inc(result.rejected)
    metrics.MESSAGES.labels("duplicate").inc(result.duplicates)
    metrics.REDELIVERED.inc(result.redelivered)
    metrics.VAULT_SEALED.inc(result.vault_entries)
    for event in items:
        if event.rejection is not None:
            metrics.REJECTED.labels(event.rejection.reason).inc()


class PostgresSink(DynamicSink[Event]):
    """Writes every event into PostgreSQL: a row, a rejected row or a duplicate, plus the
    batch's vault entries, in one transaction per batch.

    Delivery guarantee: exactly-once effect over an at-least-once source. Each message id is
    claimed once in the ledger, so a redelivered message writes nothing; its message is
    deleted from the queue (through the acker) only after its transaction committed.

    Unit of parallelism: one partition per worker, each with its own connection and writer
    thread. Partitions share nothing but the database (and the seal cache of the process).

    `writers` builds the writers (connectors/postgres/pool.py: the config's `sink:`, the row
    table's columns, the vault table, the sealer for a row the database keeps refusing, the
    schema check on connecting); `cache` the seal cache the mask step shares;
    `acker_factory` gives each partition its acker; `max_release_seconds` caps the delay
    before a refused row comes back (the source's visibility timeout); `queue_name` names
    the queue in the batch spans; `stop` is the flow's, which a writer's failure requests
    and a database refusing for good fails (exit 2)."""

    def __init__(
        self,
        writers: Writers,
        *,
        cache: SealCache,
        acker_factory: Callable[[], Acker],
        max_release_seconds: int,
        queue_name: str,
        stop: Stop,
    ) -> None:
        self.writers = writers  # each partition builds `sink.writers` committers from it
        self._settings = writers.settings
        self._queue_name = queue_name
        self._cache = cache
        self._acker_factory = acker_factory
        self._max_release_seconds = max_release_seconds
        self.stop = stop

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PostgresPartition:
        return _PostgresPartition(
            self._settings,
            [self.writers.committer() for _ in range(self._settings.writers)],  # > 1: a queue
            cache=self._cache,
            acker=self._acker_factory(),
            max_release_seconds=self._max_release_seconds,
            queue_name=self._queue_name,
            stop=self.stop,
        )
