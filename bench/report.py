"""docs/benchmarks.md from the results of one run (bench/.work/results.json): the figures
computed here, their table rows built by `table_rows`, the page's words in the Markdown
templates of bench/templates/ (string.Template). What is written by hand (how each figure is
measured, what was tried, earlier runs) is docs/benchmark-notes.md, linked, never spliced in.

The SQS, dedupe and token sections (bench/sections.py) can be measured alone: each stands
between markers, and a full run keeps the previous page's section of what it did not measure
(`carry_sections`). The chart is bench/chart.py's."""

from __future__ import annotations

from statistics import median
from typing import Any

from bench.sections import (
    Row,
    dedupe_section,
    fill,
    marked,
    sqs_section,
    status,
    table_rows,
    tokens_section,
    whole,
)

TARGET_MSGS = 50_000
TARGET_VS_CEILING = 0.5
TARGET_SQS_SAME = 0.9  # bench/sqs.py's TARGET_SAME: the flow / a drain with as many receivers
TARGET_SQS_DEFAULT = 0.8  # bench/sqs.py's TARGET_DEFAULT: the defaults / a 4-receiver drain
TARGET_P99_MS = 2000.0
TARGET_RSS_MB = 500.0
FLAT = 1.10  # "flat": the 1M peak within 10 % of the small run's
COST_GROWTH = 1.20  # the cost per message at 1M within 20 % of its cost at 50k


def _or_na(value: float | None, form: str) -> str:
    return "(not measured)" if value is None else form.format(value)


def _us_each(seconds: float | None, count: int) -> float | None:
    return None if seconds is None else seconds / count * 1e6


def _pg_seconds(run: dict[str, Any]) -> float | None:
    """PostgreSQL's CPU for a run: its own database's backends where they could be read (the
    server is shared: the whole server's CPU counts other work too), else the whole server's."""
    own = run.get("backend_cpu_seconds")
    return own if own is not None else run.get("postgres_cpu_seconds")


def _rows_per_s(run: dict[str, Any]) -> float:
    ledger = run["ledger"]
    return run["msgs_per_s"] * ledger["outcomes"].get("row", 0) / max(ledger["total"], 1)


def figures(r: dict[str, Any]) -> dict[str, Any]:
    runs = r["runs"]
    one, two, small = runs["core_1w"], runs["core_2w"], runs["small_1w"]
    small_rss = median(s["process"]["peak_rss_mb"] for s in small)
    naive, ceiling = median(r["naive"]["rates"]), median(r["ceiling"]["rates"])
    eo_ceiling = median(r["ceiling_exactly_once"]["rates"])
    messages = one["messages"]
    seals = one["ledger"]["vault_entries"] + one["ledger"]["outcomes"].get("rejected", 0)
    return {
        "one": one, "two": two, "small_rss": small_rss, "naive": naive, "ceiling": ceiling,
        "small_rate": median(s["msgs_per_s"] for s in small),
        "lat": runs["latency"]["latency_ms"], "sqs": r.get("sqs"),
        "vs_naive": one["msgs_per_s"] / naive, "vs_ceiling": _rows_per_s(one) / ceiling,
        "eo_ceiling": eo_ceiling,
        "vs_eo": one["msgs_per_s"] / eo_ceiling,
        "rss_growth": one["process"]["peak_rss_mb"] / small_rss,
        "rss_half": _peak_until(one["process"]["rss_samples"], 0.5),
        "seals_per_msg": seals / messages,
        "small_vault": median(s["ledger"]["vault_entries"] for s in small),
        "cpu_us_per_msg": one["process"]["cpu_seconds"] / messages * 1e6,
        "pg_us_per_msg": _us_each(_pg_seconds(one), messages),
        "cost": costs(one, runs["cost_small_1w"]),
    }  # fmt: skip


def costs(one: dict[str, Any], small: list[dict[str, Any]]) -> dict[str, Any]:
    """µs per message of the long run and (median over repeats) of the short one: wall time
    (1 / committed msg/s), the flow process's CPU and PostgreSQL's CPU."""

    def per_msg(run: dict[str, Any]) -> dict[str, float | None]:
        n = run["messages"]
        return {
            "wall": 1e6 / run["msgs_per_s"] if run["msgs_per_s"] else float("inf"),
            "flow_cpu": run["process"]["cpu_seconds"] / n * 1e6,
            "pg_cpu": _us_each(_pg_seconds(run), n),
        }

    shorts = [per_msg(run) for run in small]
    short: dict[str, float | None] = {}
    for key in ("wall", "flow_cpu", "pg_cpu"):
        known = [v for x in shorts if (v := x[key]) is not None]
        short[key] = median(known) if len(known) == len(shorts) else None
    return {"n": small[0]["messages"], "repeats": len(small), "short": short,
            "long": per_msg(one)}  # fmt: skip


def _peak_until(samples: list[list[float]], fraction: float) -> float:
    """The highest RSS sampled in the first `fraction` of a run's samples (MB)."""
    part = samples[: max(1, int(len(samples) * fraction))]
    return max(mb for _, mb in part) if part else 0.0


# -- the page -------------------------------------------------------------------------------


def render(r: dict[str, Any]) -> str:
    f = figures(r)
    one, m, pg, ds, seal = f["one"], r["machine"], r["postgres"], r["dataset"], r["seal_us"]
    n, small_n = one["messages"], r["runs"]["small_1w"][0]["messages"]
    kinds = (("valid", "valid"), ("resend", "resends"), ("malformed", "malformed"))
    return fill(
        "page.md",
        command=r["command"], started=r["started"], finished=r["finished"],
        minutes=f"{r['duration_seconds'] / 60:.1f}", commit=r["git"]["commit"],
        dirty=" plus uncommitted changes" if r["git"]["dirty"] else "",
        **{k: m[k] for k in ("cpu", "cores", "memory_gb", "os", "python", "bytewax", "psycopg",
                             "pynacl")},
        load_start=f"{m['load_average_start'][0]:.1f}", load_end=f"{m['load_average_end'][0]:.1f}",
        pg_version=pg["version"], pg_where=pg["where"],
        **{k: pg[k] for k in ("fsync", "synchronous_commit", "shared_buffers")},
        seed=ds["seed"],
        kinds=", ".join(f"{ds['kinds'][k]:,} {label} ({ds['kinds'][k] / ds['n']:.1%})"
                        for k, label in kinds),
        figures=_figure_rows(r, f), ledger_check=_exact(r),
        dedupe_budget=f"{_dedupe_budget_mb():g}", missed=missed_section(r, f),
        messages=f"{n:,}", vault_entries=f"{one['ledger']['vault_entries']:,}",
        rejected=f"{one['ledger']['outcomes'].get('rejected', 0):,}",
        seals_per_msg=f"{f['seals_per_msg']:.2f}", small_messages=f"{small_n:,}",
        small_vault_per_msg=f"{f['small_vault'] / small_n:.2f}",
        sealed_box_us=f"{seal['sealed_box']:.0f}",
        sealed_box_per_msg=f"{f['seals_per_msg'] * seal['sealed_box']:.0f}",
        cpu_budget=f"{2e6 / TARGET_MSGS:.0f}", target_msgs=f"{TARGET_MSGS:,}",
        batch_seal_us=f"{seal['batch']:.1f}", seal_batch_size=f"{seal['batch_size']:,}",
        cpu_us_per_msg=f"{f['cpu_us_per_msg']:.0f}", postgres_share=_postgres_share(r, f),
        dedupe=marked("dedupe", dedupe_section(_of_run(r, r["dedupe"])) if r.get("dedupe") else ""),
        profile=_profile(r.get("profile")),
        sqs=marked("sqs", sqs_section(_of_run(r, f["sqs"])) if f["sqs"] else ""),
        tokens=marked("tokens", tokens_section({"command": r["command"]} | r["tokens"])
                      if r.get("tokens") else ""),
    )  # fmt: skip


def _dedupe_budget_mb() -> float:
    from logins.core.config import DedupeStep

    return float(DedupeStep.model_fields["memory_budget_mb"].default)


def _profile(prof: dict[str, Any] | None) -> str:
    if not prof:
        return ""
    cpu = prof["cpu"]
    return fill(
        "profile.md",
        messages=f"{prof['messages']:,}",
        samples=f"{cpu['samples']:,}",
        functions=table_rows((f"{share:.1%}", f"`{name}`") for name, share in cpu["top_own"]),
        threads=", ".join(f"{name} {share:.0%}" for name, share in cpu["by_thread"]),
        steps=table_rows((f"{share:.1%}", step) for step, share in prof["worker_wall"]),
    )


def _of_run(r: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """A section's results measured by the full run: its command, date and commit."""
    return part | {"command": r["command"], "started": r["started"], "git": r["git"]}


def _exact(r: dict[str, Any]) -> str:
    runs = [
        r["runs"]["core_1w"],
        r["runs"]["core_2w"],
        *r["runs"]["small_1w"],
        r["runs"]["latency"],
    ]
    bad = [x["name"] for x in runs if not x["exact"]]
    if r.get("sqs") and not r["sqs"]["exact"]:
        bad.append("sqs")
    if bad:
        return f"**the ledger did not match the data in {', '.join(bad)}** (see results.json)."
    missed = [f"{x['name']} {x['resends_missed']:,} of {x['expected']['duplicate']:,}"
              for x in runs if x.get("resends_missed")]  # fmt: skip
    text = fill("ledger.md").rstrip("\n")
    if not missed:
        return text + " Every resend was recognised as a duplicate."
    return text + fill("resends_missed.md", missed=", ".join(missed)).rstrip("\n")


def _figure_rows(r: dict[str, Any], f: dict[str, Any]) -> str:
    one, two, lat, peak = f["one"], f["two"], f["lat"], f["one"]["process"]["peak_rss_mb"]
    sqs_rows = _sqs_rows(f["sqs"]) if f["sqs"] else [
        (f"SQS path, {what}: flow / bare drain", "not run (no `--sqs-endpoint`)",
         f">= {target:.0%}", "not run")
        for what, target in (("same receivers", TARGET_SQS_SAME), ("defaults", TARGET_SQS_DEFAULT))
    ]  # fmt: skip
    return fill(
        "figures.md", n=f"{one['messages']:,}", small_n=f"{r['runs']['small_1w'][0]['messages']:,}",
        small_repeats=len(r["runs"]["small_1w"]), repeats=len(r["naive"]["rates"]),
        one_rate=whole(one["msgs_per_s"]), target_msgs=f"{TARGET_MSGS:,}",
        one_met=status(one["msgs_per_s"] >= TARGET_MSGS), two_rate=whole(two["msgs_per_s"]),
        small_rate=whole(f["small_rate"]), cost_rows=table_rows(_cost_rows(f["cost"], one)),
        naive_n=f"{r['naive']['items']:,}", naive=whole(f["naive"]),
        vs_naive=f"{f['vs_naive']:.1f}x", eo=whole(f["eo_ceiling"]), vs_eo=f"{f['vs_eo']:.1%}",
        target_vs_eo=f"{TARGET_VS_CEILING:.0%}", eo_met=status(f["vs_eo"] >= TARGET_VS_CEILING),
        ceiling=whole(f["ceiling"]), vs_ceiling=f"{f['vs_ceiling']:.1%}",
        sqs_rows=table_rows(sqs_rows), rate=f"{r['runs']['latency']['rate']:g}",
        p50=f"{lat['p50']:,.0f}", p99=f"{lat['p99']:,.0f}", max=f"{lat['max']:,.0f}",
        p99_target=f"{TARGET_P99_MS / 1000:g}",
        p99_met=status(lat["p99"] <= TARGET_P99_MS), peak=f"{peak:,.0f}",
        rss_target=f"{TARGET_RSS_MB:.0f}", rss_met=status(peak <= TARGET_RSS_MB),
        small_rss=f"{f['small_rss']:,.0f}", rss_growth=f"{f['rss_growth'] - 1:+.0%}",
        flat=f"flat (within {FLAT - 1:.0%})", growth_met=status(f["rss_growth"] <= FLAT),
        half=f"{f['rss_half']:,.0f}", half_growth=f"{peak / f['rss_half'] - 1:+.0%}",
        half_met=status(peak <= f["rss_half"] * FLAT),
        two_peak=f"{two['process']['peak_rss_mb']:,.0f}",
    ).rstrip("\n")  # fmt: skip


def _cost_rows(cost: dict[str, Any], one: dict[str, Any]) -> list[Row]:
    """The cost per message of the long run against the short runs': the target is on wall
    time, the CPU rows say on whose side it grows."""
    head = f"1 worker, {cost['n']:,} (median of {cost['repeats']}) -> {one['messages']:,} messages"
    rows: list[Row] = []
    for key, what, target in (
        ("wall", "wall time per message (1 / msg/s)", True),
        ("flow_cpu", "CPU of the flow process per message", False),
        ("pg_cpu", "CPU of PostgreSQL per message", False),
    ):
        short, long = cost["short"][key], cost["long"][key]
        if short is not None and long is not None:
            growth = f"{short:,.1f} -> {long:,.1f} µs ({long / short - 1:+.0%})"
            rows.append((f"{head}: {what}", growth,
                         f"within {COST_GROWTH - 1:.0%}" if target else "",
                         status(long / short <= COST_GROWTH) if target else ""))  # fmt: skip
    return rows


def _sqs_rows(sqs: dict[str, Any]) -> list[Row]:
    """Both SQS pairs (each ratio is the median over the repeats of flow / the bare drain
    measured beside it, so not the ratio of the two medians shown after it); the SQS path's
    CPU per message (bench/sqs.py) and the flow behind a 20 ms proxy, where measured."""
    same, default = sqs["same_receivers"], sqs["defaults"]
    head = f"SQS path ({sqs['messages']:,} messages, `-w {sqs['workers']}`, median of"
    head += f" {sqs['repeats']})"
    rows: list[Row] = [
        (f"{head}, {what}: flow / bare drain",
         f"{pair['ratio']:.0%} ({whole(pair['flow_msgs_per_s'])} vs"
         f" {whole(pair['drain_msgs_per_s'])}"
         f" msg/s; each repeat {', '.join(f'{x:.0%}' for x in pair['ratios'])})",
         f">= {pair['target']:.0%}", status(pair["met"]))
        for what, pair in ((f"1 receiver per worker vs a {same['receivers']}-receiver bare drain",
                            same),
                           (f"defaults vs a {default['receivers']}-receiver bare drain", default))
    ]  # fmt: skip
    cpu = sqs.get("cpu")
    if cpu:
        small, large = cpu["sizes"]
        sqs_us = f"{cpu['sqs_flow_cpu_us_per_msg']} µs/msg (marginal, {small:,} -> {large:,})"
        rows += [
            ("SQS path: the flow's CPU per message / the core path's",
             f"{cpu['sqs_vs_core']}x ({sqs_us} vs {cpu['core_flow_cpu_us_per_msg']} µs)",
             f"<= {cpu['target_vs_core']}x", status(cpu["met_vs_core"])),
            ("SQS path: the flow's CPU per message / a bare one-thread boto3 drain's",
             f"{cpu['sqs_vs_boto3_drain']}x (vs {cpu['boto3_drain_cpu_us_per_msg']} µs)",
             "< 1x", status(cpu["met_vs_boto3_drain"])),
        ]  # fmt: skip
    slow = sqs.get("delayed")
    if slow:
        rows.append((
            f"SQS path, {slow['delay_ms']:g} ms added to every call: the defaults / a"
            f" {slow['drain_threads']}-thread bare drain",
            f"{slow['ratio']:.0%} ({whole(slow['flow_msgs_per_s'])} vs"
            f" {whole(slow['drain_msgs_per_s'])} msg/s)",
            f">= {slow['target']:.0%}", status(slow["met"]),
        ))  # fmt: skip
    return rows


def missed_section(r: dict[str, Any], f: dict[str, Any]) -> str:
    """Each missed target with this run's own figures; the reasons measured apart and what
    was tried are in docs/benchmark-notes.md."""
    parts = []
    if f["vs_eo"] < TARGET_VS_CEILING:
        parts.append(_ceiling_reason(r, f))
    cost = f["cost"]
    if cost["long"]["wall"] > cost["short"]["wall"] * COST_GROWTH:
        parts.append(_growth_reason(cost, f["one"]["messages"]))
    pair = f["sqs"] and f["sqs"]["same_receivers"]
    if pair and not pair["met"]:
        parts.append(
            fill("sqs_missed.md", ratio=f"{pair['ratio']:.0%}", receivers=pair["receivers"])
        )
    if not parts:
        return ""
    return fill("missed.md", reasons="\n".join(parts))


def _ceiling_reason(r: dict[str, Any], f: dict[str, Any]) -> str:
    eo, flow, pg, one = f["eo_ceiling"], f["cpu_us_per_msg"], f["pg_us_per_msg"], f["one"]
    bound = 2e6 / (flow + pg) if pg is not None else None
    eo_run = r.get("ceiling_exactly_once") or {}
    eo_cpu = eo_run.get("backend_cpu") or eo_run.get("postgres_cpu")
    cost = r.get("statement_ms") or {}
    two = f["two"]["msgs_per_s"]
    return fill(
        "ceiling.md",
        vs_eo=f"{f['vs_eo']:.0%}", flow_us=f"{flow:.0f}", pg_us=_or_na(pg, "{:.0f}"),
        bound=_or_na(bound, "{:,.0f}"), bound_vs_eo=_or_na(bound and bound / eo, "{:.0%}"),
        one_rate=f"{one['msgs_per_s']:,.0f}",
        one_vs_bound=_or_na(bound and one["msgs_per_s"] / bound, "{:.0%}"),
        pg_bound=_or_na(pg and 2e6 / pg, "{:,.0f}"),
        pg_bound_vs_eo=_or_na(pg and 2e6 / pg / eo, "{:.0%}"), target_msgs=f"{TARGET_MSGS:,}",
        eo_cpu_us=_or_na(eo_cpu and median(eo_cpu) / eo_run["items"] * 1e6, "{:.1f}"),
        seals_per_msg=f"{f['seals_per_msg']:.2f}",
        insert_vault_ms=_or_na(cost.get("insert_vault"), "{:.1f}"),
        insert_ms=_or_na(cost.get("insert"), "{:.1f}"),
        two_rate=f"{two:,.0f}", two_vs_eo=f"{two / eo:.0%}",
        budget_us=f"{2e6 / (TARGET_VS_CEILING * eo):.0f}",
    )  # fmt: skip


def _growth_reason(cost: dict[str, Any], n: int) -> str:
    short, long = cost["short"], cost["long"]
    grew = [
        f"{what} {short[key]:.1f} -> {long[key]:.1f} µs ({long[key] / short[key] - 1:+.0%})"
        for key, what in (("flow_cpu", "the flow's CPU"), ("pg_cpu", "PostgreSQL's CPU"))
        if short[key] is not None and long[key] is not None
    ]
    return fill(
        "growth.md", short_n=f"{cost['n']:,}", long_n=f"{n:,}",
        wall_growth=f"{long['wall'] / short['wall'] - 1:+.0%}", short_wall=f"{short['wall']:.1f}",
        long_wall=f"{long['wall']:.1f}", grew="; ".join(grew),
    )  # fmt: skip


def _postgres_share(r: dict[str, Any], f: dict[str, Any]) -> str:
    """Where PostgreSQL's part goes: its CPU per message, the sink's statements, its WAL."""
    flow, pg = f["cpu_us_per_msg"], f["pg_us_per_msg"]
    total = flow + pg if pg is not None else None
    cost = r.get("statement_ms") or {}
    one, eo = r["runs"]["core_1w"], r.get("ceiling_exactly_once") or {}
    wal = None if one.get("wal_bytes") is None else one["wal_bytes"] / one["messages"]
    eo_wal = (
        median(eo["wal_bytes"]) / eo["items"] if wal is not None and eo.get("wal_bytes") else None
    )
    return fill(
        "postgres.md",
        pg_us=_or_na(pg, "{:.0f}"), flow_us=f"{flow:.0f}", total_us=_or_na(total, "{:.0f}"),
        bound=_or_na(total and 2e6 / total, "{:,.0f}"), target_msgs=f"{TARGET_MSGS:,}",
        cores=_or_na(total and total * TARGET_MSGS / 1e6, "{:.1f}"),
        **{f"{k}_ms": _or_na(cost.get(k), "{:.1f}")
           for k in ("insert", "insert_vault", "commit", "plain")},
        wal_per_msg=_or_na(wal, "{:,.0f}"), eo_wal_per_row=_or_na(eo_wal, "{:,.0f}"),
    )  # fmt: skip
