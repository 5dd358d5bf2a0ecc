"""The write path with the poison rule, shared by the flow's sink and the Lambda handler: a
batch the database refuses because of one row's data is bisected until that row is alone."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import psycopg

from connectors.postgres.writer import BatchResult, PostgresWriter, is_poison_error, sum_results
from logins.core import metrics
from logins.core.records import Event, Rejection
from logins.core.vault import Sealer

__all__ = ["BatchCommitter", "Committed", "describe"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Committed:
    """What one `BatchCommitter.commit` did: the parts of the batch that committed, with their
    counts, and the events the database refused that wait for another delivery (each with
    the reason: SQLSTATE and error class, never a value)."""

    batches: list[tuple[list[Event], BatchResult]]
    refused: list[tuple[Event, str]]

    @property
    def events(self) -> list[Event]:
        return [e for batch, _ in self.batches for e in batch]

    @property
    def result(self) -> BatchResult:
        return sum_results(r for _, r in self.batches)


class BatchCommitter:
    """The write path with the poison rule, shared by the flow's sink and the Lambda handler.

    A batch the database refuses because of one row's data is split until that row is alone.
    The row is parked as a rejected row (`poison`, its fields sealed) once it was received
    `poison_after_attempts` times; before that it is handed back, to come again through
    SQS redelivery. Any other error propagates (DatabaseUnavailable after the retries).
    `sealer` seals a parked row's fields."""

    def __init__(
        self, writer: PostgresWriter, *, poison_after_attempts: int, sealer: Sealer
    ) -> None:
        self.writer = writer
        self._poison_after = poison_after_attempts
        self._sealer = sealer

    def commit(self, events: list[Event]) -> Committed:
        batches, refused = self._write_isolating(events)
        return Committed(batches, refused)

    def _write_isolating(
        self, events: list[Event]
    ) -> tuple[list[tuple[list[Event], BatchResult]], list[tuple[Event, str]]]:
        """Write `events`; on a data error, bisect to find the rows the database refuses."""

        try:
            return [(events, self.writer.write(events))], []
        except psycopg.Error as exc:
            if not is_poison_error(exc):
                raise
            if len(events) == 1:
                event = events[0]
                if event.message.receive_count >= self._poison_after:
                    return [([event], self._park(event, exc))], []
                return [], [(event, describe(exc))]
            middle = len(events) // 2
            left = self._write_isolating(events[:middle])
            right = self._write_isolating(events[middle:])
            return left[0] + right[0], left[1] + right[1]

    def _park(self, event: Event, exc: psycopg.Error) -> BatchResult:
        """Store a row the database keeps refusing as rejected ('poison'), sealed; no values."""
        detail = f"the database refused the row: {describe(exc)}"
        metrics.POISON.labels("parked").inc()
        log.error(
            "message %s parked as poison after %d attempts: %s",
            event.message.message_id,
            event.message.receive_count,
            describe(exc),
        )
        fields = json.dumps(event.fields or {}, sort_keys=True, default=str)
        event.sealed_body = self._sealer.seal_rejected(event.message.message_id, fields)
        event.vault_key_id = self._sealer.key_id
        event.rejection = Rejection("poison", detail)
        return self.writer.write([event])


def describe(exc: psycopg.Error) -> str:
    """SQLSTATE and error class only: PostgreSQL's message may quote the value."""
    return f"SQLSTATE {exc.sqlstate} ({type(exc).__name__})"
