"""The flow's steps on one in-memory batch, without Bytewax, for a runner whose every call is
one batch (the Lambda handler).

The same steps as the dataflow (flows/steps/chain.py wires them for both), in the
configured order. Dedupe is keyed by shard as in the flow, but its state lives for one call:
a resend is recognised within the batch, and one that comes in a later call becomes a row
(nothing is lost; the flow's window spans batches, this one does not).
"""

from __future__ import annotations

from typing import Any

from connectors.postgres.committer import BatchCommitter
from connectors.postgres.pool import Writers
from flows.steps import dedupe
from flows.steps.chain import BatchFn, Stage, seal_cache, stages
from logins.core.config import AppConfig, DedupeStep
from logins.core.records import Event, SqsMessage
from logins.core.tokens import Tokenizer
from logins.core.vault import Sealer


def batch_committer(config: AppConfig, sealer: Sealer) -> BatchCommitter:
    """The sink's commit with its poison rule for `config`, built as the flow's sink builds
    its writers (connectors/postgres/pool.py `Writers.for_config`)."""
    return Writers.for_config(config, sealer).committer()


class BatchSteps:
    """validate -> dedupe -> mask (as configured) for a list of messages; returns the events.

    `cache` is the seal cache to tell which tokens committed (`SealCache.mark_committed`)."""

    def __init__(self, config: AppConfig, tokenizer: Tokenizer, sealer: Sealer) -> None:
        self.cache = seal_cache(config)
        self._stages = [_batch_fn(s) for s in stages(config, tokenizer, sealer, self.cache)]

    def __call__(self, messages: list[SqsMessage]) -> list[Event]:
        items: list[Any] = messages
        for stage in self._stages:
            items = stage(items)
        return items


def _batch_fn(stage: Stage) -> BatchFn:
    """The stage as a function of one batch: dedupe with a window of this batch only."""
    if stage.dedupe is not None:
        return _Dedupe(stage.dedupe)
    assert stage.batch is not None
    return stage.batch


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
