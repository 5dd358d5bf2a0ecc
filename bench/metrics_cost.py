"""`python -m bench.metrics_cost`: what observing the end-to-end lag of every committed message
costs, prometheus_client's Histogram (one observe per message) against the batch histogram the
sink uses (logins.core.metrics.BatchHistogram, one call per batch). Prints microseconds per message.

The sink observes each message it commits once, so at tens of thousands of messages per second
this is worth a number; the result is quoted in docs/operations.md.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram

from bench.common import parser
from logins.core.metrics import LATENCY_BUCKETS, BatchHistogram


def per_message_us(run: Callable[[list[float]], None], values: list[float], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(values)
        timings.append((time.perf_counter() - started) / len(values) * 1e6)
    return statistics.median(timings)


def main() -> None:
    args = parser("python -m bench.metrics_cost", __doc__, messages=200_000, repeats=5,
                  batch=(1000, "messages per committed batch")).parse_args()  # fmt: skip
    rng = random.Random(1)  # noqa: S311 (sample lags, not secrets)
    values = [rng.expovariate(1 / 2.0) for _ in range(args.messages)]  # lags around 2 s

    single = Histogram(
        "cost_single", "", buckets=LATENCY_BUCKETS, registry=CollectorRegistry(auto_describe=True)
    )

    def one_by_one(vs: list[float]) -> None:
        for v in vs:
            single.observe(v)

    batched = BatchHistogram("cost_batched", "", LATENCY_BUCKETS, register=False)

    def per_batch(vs: list[float]) -> None:
        for start in range(0, len(vs), args.batch):
            batched.observe_many(vs[start : start + args.batch])

    a = per_message_us(one_by_one, values, args.repeats)
    b = per_message_us(per_batch, values, args.repeats)
    print(f"{args.messages} lags, batches of {args.batch}, median of {args.repeats} runs:")
    print(f"  prometheus_client Histogram.observe : {a:.3f} us/message")
    print(f"  BatchHistogram.observe_many         : {b:.3f} us/message ({a / b:.1f}x less)")


if __name__ == "__main__":
    main()
