"""docs/benchmarks.png: throughput against the baselines, the flow's memory, latency (CDF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import TARGET_MSGS, TARGET_P99_MS, TARGET_RSS_MB, figures


def chart(r: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    f = figures(r)
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.6))
    bars = [
        ("1 INSERT +\nCOMMIT each", f["naive"]),
        ("pipeline,\n1 worker", f["one"]["msgs_per_s"]),
        ("pipeline,\n2 workers", f["two"]["msgs_per_s"]),
        ("exactly-once\nceiling (rows/s)", f["eo_ceiling"]),
        ("bare COPY\n(rows/s)", f["ceiling"]),
    ]
    colours = ["#999999", "#1f77b4", "#1f77b4", "#2ca02c", "#2ca02c"]
    if f["sqs"]:
        default = f["sqs"]["defaults"]
        bars += [("SQS: flow,\ndefaults", default["flow_msgs_per_s"]),
                 (f"SQS: bare drain,\n{default['receivers']} receivers",
                  default["drain_msgs_per_s"])]  # fmt: skip
        colours += ["#ff7f0e", "#ff7f0e"]
    a.bar([x for x, _ in bars], [y for _, y in bars], color=colours)
    a.axhline(
        TARGET_MSGS, color="red", linestyle="--", linewidth=1, label=f"target {TARGET_MSGS:,}/s"
    )
    a.set_yscale("log")
    a.set_ylabel("messages (rows) per second, log scale")
    a.set_title("Throughput")
    a.legend(loc="upper left", fontsize=8)
    a.tick_params(axis="x", labelsize=7)
    for i, (_, y) in enumerate(bars):
        a.text(i, y * 1.1, f"{y:,.0f}", ha="center", fontsize=7)
    for run, what in ((r["runs"]["small_1w"][0], "msgs"), (f["one"], "msgs"),
                      (f["two"], "msgs, 2 workers")):  # fmt: skip
        samples = run["process"]["rss_samples"]
        if samples:
            b.plot([s[0] for s in samples], [s[1] for s in samples],
                   label=f"{run['messages']:,} {what}")  # fmt: skip
    b.axhline(
        TARGET_RSS_MB, color="red", linestyle="--", linewidth=1, label=f"{TARGET_RSS_MB:.0f} MB"
    )
    b.set_xlabel("seconds since start")
    b.set_ylabel("RSS (MB)")
    b.set_title("Memory of the flow process")
    b.legend(fontsize=8)
    lat = f["lat"]
    cdf = lat.get("percentiles") or [lat["p50"], lat["p99"]]
    c.plot(cdf, [i / (len(cdf) - 1) * 100 for i in range(len(cdf))], color="#9467bd")
    c.axvline(TARGET_P99_MS, color="red", linestyle="--", linewidth=1, label="p99 target 2 s")
    c.axhline(99, color="grey", linestyle=":", linewidth=1)
    c.set_xscale("log")
    c.set_xlabel("ms, SentTimestamp to ledger write (log scale)")
    c.set_ylabel("percent of messages")
    c.set_title(f"Latency at {r['runs']['latency']['rate']:g} msg/s offered (CDF)")
    c.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
