"""The production dataflow fed by the in-process source, for `python -m bytewax.run bench.flow`.

The benchmark runs it as a subprocess so it can sample the flow process's memory. It reads
the operator contract's variables (LOGINS_ENV, DATABASE_URL, key files; SQS_QUEUE_URL is
unused) and these:

    BENCH_DATASET  a file written by bench.generated.write_dataset (required)
    BENCH_N        emit only the first N messages of it (default: all)
    BENCH_RATE     offered load in messages/s over all workers (default: as fast as it goes)
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.generated import GeneratedSource
from connectors.sqs.source import NoAcker
from flows.builder import build_flow, tune_gc
from logins.core.config import load_config
from logins.core.telemetry import setup

config = load_config()
setup(config.telemetry)
_n = os.environ.get("BENCH_N")
_rate = os.environ.get("BENCH_RATE")
source = GeneratedSource(
    int(_n) if _n else None,
    dataset=Path(os.environ["BENCH_DATASET"]),
    rate=float(_rate) if _rate else None,
)
flow = build_flow(config, source=source, acker_factory=NoAcker, stop=source.stop)
tune_gc()  # as flows/logins.py does
