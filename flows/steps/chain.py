"""The configured steps in their order, for both runners: the Bytewax dataflow
(flows/builder.py) and the one-batch runner of the Lambda handler (flows/batch.py).

validate and mask are the same batch functions in both; dedupe keeps state, which each
runner holds its own way (Bytewax's keyed, snapshotted state; one batch's table), so a
dedupe stage names its step and the runner builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flows.steps.mask import Masker
from flows.steps.validate import Validator
from logins.core.config import AppConfig, DedupeStep, MaskStep, ValidateStep
from logins.core.sealcache import SealCache
from logins.core.tokens import Tokenizer
from logins.core.vault import Sealer

# A batch of items in, the batch for the next step out (messages -> events -> events).
BatchFn = Callable[[list[Any]], list[Any]]


@dataclass(frozen=True)
class Stage:
    """One configured step: `batch` (validate, mask), or `dedupe` for the runner to build.
    `name` is the step's `name`, its Bytewax step id."""

    name: str
    batch: BatchFn | None = None
    dedupe: DedupeStep | None = None


def seal_cache(config: AppConfig) -> SealCache:
    """The seal cache the mask steps share, sized by the smallest mask step's settings."""
    masks = [s for s in config.steps if isinstance(s, MaskStep)]
    return SealCache(
        min((s.seal_cache_size for s in masks), default=0),
        min((s.seal_cache_overflow_tokens for s in masks), default=0),
    )


def stages(
    config: AppConfig, tokenizer: Tokenizer, sealer: Sealer, cache: SealCache
) -> list[Stage]:
    """The steps of `config` in order; the mask steps seal into `cache`."""
    out: list[Stage] = []
    for step in config.steps:
        if isinstance(step, ValidateStep):
            out.append(Stage(step.name, batch=Validator(step, tokenizer).batch))
        elif isinstance(step, DedupeStep):
            out.append(Stage(step.name, dedupe=step))
        elif isinstance(step, MaskStep):
            out.append(Stage(step.name, batch=Masker(step, tokenizer, sealer, cache).batch))
    return out
