"""Build the Bytewax dataflow from configuration: the YAML names the source, the steps in
order and the sink; flows/steps/chain.py builds the steps (for this and the Lambda runner),
this module only makes each an operator.

    sqs -> validate -> dedupe (keyed by shard) -> mask + vault -> postgres (delete after commit)

The step's `name` is its Bytewax step id: renaming a stateful step (dedupe) drops its
recovered state, so names are part of the contract once a flow runs with recovery.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source

from connectors.postgres.pool import Writers
from connectors.postgres.sink import PostgresSink
from connectors.sqs.source import Acker, NoAcker, SqsSource
from flows.steps import dedupe
from flows.steps.chain import seal_cache, stages
from logins.core.config import AppConfig, DedupeStep
from logins.core.pipeline_keys import Secrets, load_secrets
from logins.core.records import Event, SqsMessage
from logins.core.sealcache import SealCache
from logins.core.stop import Stop
from logins.core.vault import Sealer


def build_flow(
    config: AppConfig,
    *,
    secrets: Secrets | None = None,
    source: Source[SqsMessage] | None = None,
    acker_factory: Callable[[], Acker] | None = None,
    stop: Stop | None = None,
) -> Dataflow:
    """The logins dataflow. `source`/`acker_factory` replace SQS (in-process benchmarks).

    `stop` is this flow's (logins/core/stop.py), handed to the source and the sink: a new one
    unless given, so nothing an earlier flow in this process requested or failed carries
    over. The caller passes its own to reach it: the signal handlers (flows/logins.py), an
    in-process `source` that ends on it."""
    stop = stop or Stop()
    secrets = secrets or load_secrets(config)
    cache = seal_cache(config)
    flow = Dataflow("logins")
    if source is None:
        sqs = SqsSource(config.source, stop)
        source, acker_factory = sqs, acker_factory or sqs.acker
    messages = op.input("sqs", flow, source)
    stream: Stream[Any] = messages
    for stage in stages(config, secrets.tokenizer, secrets.sealer, cache):
        if stage.dedupe is not None:
            stream = _dedupe(stage.dedupe, stream)
        elif stage.batch is not None:
            stream = op.flat_map_batch(stage.name, stream, stage.batch)
    sink = postgres_sink(
        config, cache=cache, sealer=secrets.sealer, acker_factory=acker_factory, stop=stop
    )
    op.output("postgres", stream, sink)
    return flow


# The cyclic GC's first generation collects after this many net new container objects (700
# by default: about every 35 messages here, with each collection traversing a batch's
# events that are all freed by reference counting anyway; cycles are rare in the flow).
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """After start-up, once the flow is built: move every object made so far (modules,
    classes, configuration) out of the collector's sight (`gc.freeze`), so full collections
    do not traverse them again and again, and collect the young generation less often. In
    the 200k benchmark the collector took ~14 % of the flow process's CPU (1.2 of 8.7 s),
    ~0 after this; memory stays bounded by the threshold (objects, not bytes)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def postgres_sink(
    config: AppConfig,
    *,
    cache: SealCache,
    sealer: Sealer,
    acker_factory: Callable[[], Acker] | None = None,
    stop: Stop,
) -> PostgresSink:
    """The sink for `config`: its writers (connectors/postgres/pool.py `Writers.for_config`),
    the seal cache it marks committed tokens in, each partition's acker, the flow's stop."""
    return PostgresSink(
        Writers.for_config(config, sealer),
        cache=cache,
        acker_factory=acker_factory or NoAcker,
        max_release_seconds=config.source.visibility_timeout,
        queue_name=config.source.queue_url.rstrip("/").rsplit("/", 1)[-1],
        stop=stop,
    )


def _dedupe(step: DedupeStep, stream: Stream[Event]) -> Stream[Event]:
    shards = step.shards

    def keyed(events: list[Event]) -> list[tuple[str, Event]]:
        return [(dedupe.shard_of(e, shards), e) for e in events]

    keyed_stream = op.flat_map_batch(f"{step.name}_shard", stream, keyed)
    slots = dedupe.slots_per_period(step.memory_budget_mb, shards)
    logic = dedupe.builder(step.window_seconds, slots)
    deduped = op.stateful_batch(step.name, keyed_stream, logic)
    return op.flat_map_batch(f"{step.name}_unkey", deduped, _unkeyed)


def _unkeyed(items: list[tuple[str, Event]]) -> list[Event]:
    """The events without their shard keys, a batch at a time (op.key_rm is a call per item)."""
    return [event for _, event in items]
