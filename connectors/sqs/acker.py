"""What the sink calls after its transaction: delete committed messages, keep held ones
invisible, let refused ones come back. The SQS source makes `SqsAcker`s; in-process sources
use `NoAcker`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from connectors.sqs.calls import failed, sqs_client
from connectors.sqs.heartbeat import InFlight
from logins.core import metrics
from logins.core.config import SqsSourceConfig
from logins.core.records import SqsMessage
from logins.core.stop import Stop

__all__ = ["Acker", "NoAcker", "SqsAcker"]

log = logging.getLogger(__name__)


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
    `on_close` runs once when the acker closes (the source's heartbeat lease); `stop` is the
    flow's, which a permanent failure (the queue deleted) stops (alone: a stop of its own).

    None of these failing is an error for the flow: a message not deleted comes back after
    its visibility timeout and its write is a no-op; a visibility change that fails leaves
    the message on its old clock (it may come back once more, with the same no-op).
    """

    def __init__(
        self,
        config: SqsSourceConfig,
        inflight: InFlight,
        client: Any | None = None,
        on_close: Callable[[], None] | None = None,
        *,
        stop: Stop | None = None,
    ) -> None:
        self._config = config
        self._stop = stop or Stop()
        self._inflight = inflight
        self._client = client or sqs_client(config)
        self._pool: ThreadPoolExecutor | None = None  # started by the first call of > 10
        self._pool_lock = threading.Lock()
        self._on_close = on_close

    def close(self) -> None:
        """The sink is done with this acker: its calls' threads end."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
            on_close, self._on_close = self._on_close, None
        if pool is not None:
            pool.shutdown(wait=True)
        if on_close is not None:
            on_close()

    def delete(self, messages: Sequence[SqsMessage]) -> int:
        self._inflight.discard(messages)
        failed_ = len(self._batched("delete_message_batch", messages, {}))
        metrics.SQS_DELETED.inc(len(messages) - failed_)
        metrics.SQS_DELETE_FAILED.inc(failed_)
        return failed_

    def extend(self, messages: Sequence[SqsMessage]) -> list[SqsMessage]:
        """Restart the visibility clock of messages still held; returns those SQS refused."""
        refused = self._batched(
            "change_message_visibility_batch",
            messages,
            {"VisibilityTimeout": self._config.visibility_timeout},
        )
        now = time.time()
        for message in messages:
            message.received_at = now
        metrics.SQS_VISIBILITY_EXTENDED.inc(len(messages) - len(refused))
        return refused

    def release(self, messages: Sequence[SqsMessage], after_seconds: int = 0) -> int:
        """Let messages come back (after `after_seconds`) instead of after the full timeout."""
        self._inflight.discard(messages)
        refused = self._batched(
            "change_message_visibility_batch", messages, {"VisibilityTimeout": after_seconds}
        )
        return len(refused)

    def _batched(
        self, operation: str, messages: Sequence[SqsMessage], extra: dict[str, Any]
    ) -> list[SqsMessage]:
        """Call `operation` ten messages at a time, `ack_concurrency` calls in flight (a
        committed batch of 1,000 is 100 calls: one after the other they, not the database,
        would set the sink's pace); returns the messages it failed for, once all returned."""
        call = getattr(self._client, operation)
        queue_url = self._config.queue_url

        def one(chunk: Sequence[SqsMessage]) -> list[SqsMessage]:
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle, **extra}
                for i, m in enumerate(chunk)
            ]
            try:
                response = call(QueueUrl=queue_url, Entries=entries)
                return [chunk[int(f["Id"])] for f in response.get("Failed", ())]
            except (BotoCoreError, ClientError) as exc:
                failure = failed(exc, self._config, self._stop)
                log.warning("%s failed for %d messages: %s", operation, len(chunk), failure)
                return list(chunk)

        chunks = [messages[start : start + 10] for start in range(0, len(messages), 10)]
        many = getattr(self._client, "call_many", None)
        results = None
        if many is not None:  # the fast path: the calls in flight from this thread, no pool
            results = many(
                operation,
                [
                    {
                        "QueueUrl": queue_url,
                        "Entries": [
                            {"Id": str(i), "ReceiptHandle": m.receipt_handle, **extra}
                            for i, m in enumerate(chunk)
                        ],
                    }
                    for chunk in chunks
                ],
                self._config.ack_concurrency,
            )
        if results is not None:
            refused: list[SqsMessage] = []
            for chunk, result in zip(chunks, results, strict=True):
                if isinstance(result, Exception):
                    failure = failed(result, self._config, self._stop)
                    log.warning("%s failed for %d messages: %s", operation, len(chunk), failure)
                    refused += chunk
                else:
                    refused += [chunk[int(f["Id"])] for f in result.get("Failed", ())]
            return refused
        if len(chunks) <= 1 or self._config.ack_concurrency == 1:
            return [m for chunk in chunks for m in one(chunk)]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self._config.ack_concurrency, thread_name_prefix="sqs-ack"
                )
            pool = self._pool
        return [m for refused in pool.map(one, chunks) for m in refused]


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
