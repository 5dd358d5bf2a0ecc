"""The sink's writers: built in one place (`Writers`, for the flow's sink, the Lambda handler
and the benchmarks), and the writer threads of one sink partition (`WriterPool`).

Batches are written on up to `sink.writers` writer threads, each with its own connection,
so the worker prepares the next batches while PostgreSQL commits these. The first writer's
queue is `sink.queued_batches` deep; a batch goes to another writer (one batch deep each)
only while that queue is full, since one connection's commits are a chain of round trips
(COPY, statement, commit) that leaves PostgreSQL's second core idle once the flow outruns
it. The ledger, not the order of commits, makes each message's effect happen once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from connectors.postgres.committer import BatchCommitter
from connectors.postgres.migrations import on_connect
from connectors.postgres.schema import TableSchema, table_schema
from connectors.postgres.writer import OnConnect, PostgresWriter
from logins.core.config import AppConfig, PostgresSinkConfig
from logins.core.records import Event
from logins.core.stop import Stop
from logins.core.vault import Sealer

__all__ = ["WriterPool", "Writers"]


@dataclass(frozen=True)
class Writers:
    """How the sink's writers are built: `settings` is the config's `sink:`, `schema` the row
    table's columns (from the declared fields), `vault_table` where the vault entries go,
    `sealer` seals a row the database keeps refusing (a committer's; a writer alone needs
    none), `on_connect` runs on each new connection (the schema check or migrations)."""

    settings: PostgresSinkConfig
    schema: TableSchema
    vault_table: str
    sealer: Sealer | None = None
    on_connect: OnConnect | None = None

    @classmethod
    def for_config(
        cls, config: AppConfig, sealer: Sealer | None = None, *, check_schema: bool = True
    ) -> Writers:
        """The writers for `config`: its own settings, the table's columns from the declared
        fields, and (`check_schema`) the schema check on connecting, which migrates an older
        schema if `sink.migrate`."""
        return cls(
            config.sink,
            table_schema(config),
            vault_table=config.vault.table,
            sealer=sealer,
            on_connect=on_connect(config) if check_schema else None,
        )

    def writer(self) -> PostgresWriter:
        """A writer (a committer holds one; benchmarks use one alone)."""
        return PostgresWriter(
            self.settings, self.schema, vault_table=self.vault_table, on_connect=self.on_connect
        )

    def committer(self) -> BatchCommitter:
        """A writer with the poison rule (a writer thread holds one; so does the Lambda
        handler)."""
        if self.sealer is None:
            raise ValueError("a committer needs the sealer: it seals the rows it parks")
        return BatchCommitter(
            self.writer(),
            poison_after_attempts=self.settings.poison_after_attempts,
            sealer=self.sealer,
        )


# Writes one batch with a committer (the partition's commit, delete, span and metrics).
WriteBatch = Callable[[list[Event], BatchCommitter], None]


class WriterPool:
    """`committers` on writer threads, fed by `submit` (none with `queued_batches` 0: then
    `submit` writes on the caller's thread). A failure on a writer thread is raised on the
    worker by the next `submit` (or by `close`: the failure also requests the flow's `stop`,
    so the sources end and the flow ends even if no batch follows); batches queued behind it
    go to `release` at once.
    Nothing is deleted before its own batch's commit, so a batch still queued when the
    process dies comes back from SQS like any uncommitted message."""

    def __init__(
        self,
        committers: Sequence[BatchCommitter],
        *,
        queued_batches: int,
        write: WriteBatch,
        release: Callable[[list[Event]], object],
        stop: Stop,
    ) -> None:
        self._committers = list(committers)
        self._stop = stop
        self._write = write
        self._release = release
        self._failure: BaseException | None = None
        self._failure_raised = False
        try:
            for committer in self._committers:
                committer.writer.connect()
        except BaseException:
            for committer in self._committers:
                committer.writer.close()
            raise
        # One queue per writer: the first `queued_batches` deep, each other one batch deep.
        self._queues: list[queue.Queue[list[Event] | None]] = []
        self._room = threading.Condition()  # notified when a writer takes a batch
        self._threads: list[threading.Thread] = []
        if queued_batches > 0:
            self._queues = [
                queue.Queue(maxsize=queued_batches if i == 0 else 1)
                for i in range(len(self._committers))
            ]
            self._threads = [
                threading.Thread(target=self._drain, args=(committer, batches), daemon=True,
                                 name="postgres-writer" + (f"-{i + 1}" if i else ""))
                for i, (committer, batches) in enumerate(zip(self._committers, self._queues,
                                                             strict=True))
            ]  # fmt: skip
            for thread in self._threads:
                thread.start()

    def submit(self, items: list[Event]) -> None:
        """Write `items` on a writer thread (or here, without queues); raises a writer's
        failure first."""
        self.raise_failure()
        if not self._queues:
            self._write(items, self._committers[0])
        else:
            self._enqueue(items)

    def _enqueue(self, items: list[Event]) -> None:
        """To the first writer whose queue has room, so the other writers take batches only
        while the first is behind (a flow PostgreSQL keeps up with commits on one connection,
        and sends SQS one batch's deletes at a time); blocks while all are full: backpressure."""
        while True:
            for batches in self._queues:
                try:
                    batches.put_nowait(items)
                    return
                except queue.Full:
                    continue
            with self._room:
                self._room.wait(0.05)  # until a writer takes a batch (or look again)

    def _drain(self, committer: BatchCommitter, batches: queue.Queue[list[Event] | None]) -> None:
        """A writer thread: writes its queue's batches on its connection until `close`."""
        while (items := batches.get()) is not None:
            with self._room:
                self._room.notify()
            if self._failure is not None:
                self._release(items)  # never tried: back at once
                continue
            try:
                self._write(items, committer)
            except BaseException as exc:  # handed to the worker thread by raise_failure
                self._failure = exc
                self._stop.request()

    def raise_failure(self) -> None:
        if self._failure is not None:
            self._failure_raised = True
            raise RuntimeError("the PostgreSQL sink failed (logged above)") from self._failure

    def close(self) -> None:
        """Write what is queued, then close the connections."""
        for batches in self._queues:
            batches.put(None)  # its writer ends there, after the batches before
        for thread in self._threads:
            thread.join()
        for committer in self._committers:
            committer.writer.close()

    def raise_unraised_failure(self) -> None:
        """Raised once: Bytewax closes a partition while unwinding the error `submit` raised,
        and an error from close() then is a panic during a panic, which aborts the process."""
        if not self._failure_raised:
            self.raise_failure()
