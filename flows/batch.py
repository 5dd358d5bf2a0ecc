"""The flow's steps on one in-memory batch, without Bytewax, for a runner whose every call is
one batch (the Lambda handler).

The same step classes as the dataflow (flows/builder.py), in the configured order. Dedupe is
keyed by shard as in the flow, but its state lives for one call: a resend is recognised
within the batch, and one that comes in a later call becomes a row (nothing is lost; the
flow's window spans batches, this one does not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.postgres.migrations import on_connect
from connectors.postgres.schema import table_schema
from connectors.postgres.sink import BatchCommitter, PostgresWriter
from flows.steps import dedupe
from flows.steps.mask import Masker
from flows.steps.validate import Validator
from logins.core.config import AppConfig, DedupeStep, MaskStep, ValidateStep
from logins.core.records import Event, SqsMessage
from logins.core.sealcache import SealCache
from logins.core.tokens import Tokenizer
from logins.core.vault import Sealer


def seal_cache(config: AppConfig) -> SealCache:
    """The seal cache the mask steps share, sized like the flow's (the smallest step's size)."""
    masks = [s for s in config.steps if isinstance(s, MaskStep)]
    return SealCache(
        min((s.seal_cache_size for s in masks), default=0),
        min((s.seal_cache_overflow_tokens for s in masks), default=0),
    )


def batch_committer(config: AppConfig, sealer: Sealer) -> BatchCommitter:
    """The sink's commit with its poison rule for `config`, as the flow's sink builds it: its
    own settings, the table's columns from the declared fields, the migrations on connect."""
    writer = PostgresWriter(
        config.sink,
        table_schema(config),
        vault_table=config.vault.table,
        on_connect=on_connect(config),
    )
    return BatchCommitter(
        writer, poison_after_attempts=config.sink.poison_after_attempts, sealer=sealer
    )


class BatchSteps:
    """validate -> dedupe -> mask (as configured) for a list of messages; returns the events.

    `cache` is the seal cache to tell which tokens committed (`SealCache.mark_committed`)."""

    def __init__(self, config: AppConfig, tokenizer: Tokenizer, sealer: Sealer) -> None:
        self.cache = seal_cache(config)
        self._stages: list[Callable[[list[Any]], list[Any]]] = []
        for step in config.steps:
            if isinstance(step, ValidateStep):
                self._stages.append(Validator(step, tokenizer).batch)
            elif isinstance(step, DedupeStep):
                self._stages.append(_Dedupe(step))
            elif isinstance(step, MaskStep):
                self._stages.append(Masker(step, tokenizer, sealer, self.cache).batch)

    def __call__(self, messages: list[SqsMessage]) -> list[Event]:
        items: list[Any] = messages
        for stage in self._stages:
            items = stage(items)
        return items


class _Dedupe:
    """The dedupe step's logic per shard key, fresh for every batch."""

    def __init__(self, step: DedupeStep) -> None:
        self._shards = step.shards
        self._window = step.window_seconds
        self._slots = dedupe.slots_per_period(step.memory_budget_mb, step.shards)

    def __call__(self, events: list[Event]) -> list[Event]:
        by_shard: dict[str, list[Event]] = {}
        for event in events:
            by_shard.setdefault(dedupe.shard_of(event, self._shards), []).append(event)
        out: list[Event] = []
        for values in by_shard.values():
            # a table for this batch only: twice its logins (cuckoo's room), not the budget
            slots = min(self._slots, 2 * len(values) + dedupe.BUCKET)
            kept, _ = dedupe.DedupeLogic(self._window, slots, None).on_batch(values)
            out.extend(kept)
        return out
