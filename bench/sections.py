"""The sections of docs/benchmarks.md that a part measured alone rewrites (`python -m bench
sqs|dedupe|tokens`), each between its markers, and the Markdown helpers every section uses:
the words in bench/templates/ (string.Template), the table rows built by `table_rows`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from string import Template
from typing import Any

from bench.common import ROOT

TEMPLATES = ROOT / "bench" / "templates"
Row = Sequence[object]


def fill(template: str, **values: Any) -> str:
    """bench/templates/`template` with `values` in its $$placeholders."""
    return Template((TEMPLATES / template).read_text()).substitute(values)


def table_rows(rows: Iterable[Row]) -> str:
    """Markdown table rows (the header is the template's), one a line."""
    return "\n".join("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)


def whole(x: float) -> str:
    return f"{x:,.0f}"


def status(ok: bool | None) -> str:
    return "not run" if ok is None else ("met" if ok else "**missed**")


_MARKERS = {
    "tokens": ("<!-- bench tokens: begin -->", "<!-- bench tokens: end -->"),
    "dedupe": (
        "<!-- dedupe section: written by `python -m bench dedupe` and `make bench` -->",
        "<!-- end of the dedupe section -->",
    ),
    "sqs": (
        "<!-- sqs section: written by `python -m bench sqs` and `make bench` -->",
        "<!-- end of the sqs section -->",
    ),
}


def marked(name: str, body: str) -> str:
    """`body` between the markers of section `name` (empty: the markers alone)."""
    begin, end = _MARKERS[name]
    return f"{begin}\n{body.rstrip()}\n{end}\n" if body else f"{begin}\n{end}\n"


def _section(text: str, name: str) -> str | None:
    begin, end = _MARKERS[name]
    if begin not in text or end not in text:
        return None
    return begin + text.split(begin, 1)[1].split(end, 1)[0] + end + "\n"


def with_section(text: str, name: str, body: str) -> str:
    """`text` (docs/benchmarks.md) with section `name` replaced by `body` (or appended)."""
    old = _section(text, name)
    if old is None:
        return text.rstrip("\n") + "\n\n" + marked(name, body)
    return text.replace(old, marked(name, body))


def write_section(out: Path, name: str, body: str) -> None:
    """Rewrite section `name` of the page `out` (docs/benchmarks.md) with `body`."""
    out.write_text(with_section(out.read_text() if out.exists() else "", name, body))


def carry_sections(old: str, new: str) -> str:
    """`new` with `old`'s section of every part `new` did not measure (its markers empty)."""
    for name in _MARKERS:
        kept = _section(old, name)
        if kept is not None and marked(name, "") in new:
            new = new.replace(marked(name, ""), kept)
    return new


def _when(
    command: str | None, started: str | None, git: dict[str, Any], load: list[float] | None
) -> str:
    """`command` (date, commit, load average) of a section's run."""
    when = f"`{command}`" if command else "`make bench`"
    if started:
        when += f" ({started}, commit `{git['commit']}`"
        when += " plus uncommitted changes" if git.get("dirty") else ""
        if load:
            when += f"; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end"
        when += ")"
    return when


def dedupe_section(d: dict[str, Any]) -> str:
    run, memory, load = d["window_run"], d["memory"], d["load"]
    offered, recognised = run["resends_offered"], run["resends_recognised"]
    return fill(
        "dedupe.md",
        when=_when(d["command"], d["started"], d["git"], d.get("load_average")),
        gap_min=f"{run['gaps_minutes']['min']:.1f}", gap_max=f"{run['gaps_minutes']['max']:.1f}",
        rate=f"{run['rate']:,.0f}", minutes=f"{run['minutes']:g}", recognised=f"{recognised:,}",
        offered=f"{offered:,}",
        recognised_met=status(recognised == offered and run["resends_wrong"] == 0),
        false_duplicates=f"{run['false_duplicates']:,}",
        false_met=status(run["false_duplicates"] == 0), evicted=f"{run['evicted_early']:,}",
        state_end=f"{run['state_bytes_end'] / 1e6:.2f}", state=f"{run['state_bytes'] / 1e6:.2f}",
        state_met=status(run["state_bytes"] <= 150e6),
        bytes_per_slot=f"{memory['bytes_per_slot']:.2f}", load=f"{load['load']:.1%}",
        held=f"{memory['bytes_per_slot'] / load['load'] if load['load'] else float('nan'):.1f}",
        msgs_per_s=f"{run['msgs_per_s']:,.0f}",
        cpu_us=f"{run['dedupe_cpu_seconds'] / max(run['messages'], 1) * 1e6:.1f}",
        peak_rss=f"{run['peak_rss_mb']:,.0f}", window_minutes=f"{d['window_seconds'] / 60:g}",
        budget_rows=table_rows((f"{x['mb']:g}", *(f"{x[k]:,.0f}" for k in
                                ("fingerprints", "logins_per_s", "msgs_per_s")))
                               for x in d["table"]),
    )  # fmt: skip


def sqs_section(s: dict[str, Any]) -> str:
    """The SQS path: both pairs, every repeat, and the medians against their targets."""
    rows = []
    for label, key in (("1 receiver per worker", "same_receivers"), ("defaults", "defaults")):
        pair = s[key]
        rows += [
            table_rows([(label, i + 1, whole(flow), pair["receivers"], whole(drain),
                         f"{ratio:.0%}")])
            for i, (flow, drain, ratio)
            in enumerate(zip(pair["flow_runs"], pair["drain_runs"], pair["ratios"], strict=False))
        ]  # fmt: skip
        rows.append(
            f"| **{label}: median** | | {whole(pair['flow_msgs_per_s'])} | {pair['receivers']} |"
            f" {whole(pair['drain_msgs_per_s'])} | **{pair['ratio']:.0%}** (target"
            f" >= {pair['target']:.0%}: {status(pair['met'])}) |"
        )
    met = s["same_receivers"]["met"] and s["defaults"]["met"]
    return fill(
        "sqs.md",
        when=_when(s.get("command"), s.get("started"), s.get("git", {}), s.get("load_average")),
        workers=s["workers"],
        messages=f"{s['messages']:,}",
        exact="exact." if s["exact"] else "**not exact** (see bench/.work/sqs.json).",
        rows="\n".join(rows),
        flow_cpu_us=f"{s['defaults']['flow_cpu_us_per_msg']:.0f}",
        verdict="Both medians meet their targets: receiving, deleting and extending visibility"
        " are not what limits the flow here."
        if met
        else "**A median missed its target** in this run (see the repeats above).",
    )


def tokens_section(t: dict[str, Any]) -> str:
    """Key file against KMS (bench/tokens.py): every run, then what it means, in figures."""
    kms, same = t["kms"], t["file_same"]
    rows: list[Row] = [
        (f"key file, {name.upper()}", f"{p['messages']:,}",
         f"{p['msgs_per_s']:,.0f}", "-", "-", "-", "-")
        for where in ("file", "file_same") for name, p in t[where].items()
    ]  # fmt: skip
    labels = {
        "cache_8": "KMS, cache 50,000, 8 threads",
        "nocache_8": "KMS, no cache, 8 threads",
        "cache_32": "KMS, cache 50,000, 32 threads",
        "batch_1": "KMS, first batch only, 1 thread",
        "batch_8": "KMS, first batch only, 8 threads",
    }
    for name, label in labels.items():
        first, *again = kms[name]["passes"]
        shown = [(label, first)]
        if again:
            shown.append((label + " (again: warm cache)", _middle(again)))
        rows += [
            (what, f"{p['messages']:,}", f"{p['msgs_per_s']:,.0f}", f"{p['kms_calls']:,}",
             f"{p['calls_per_s']:,.0f}", f"{p['hit_rate']:.0%}", f"{p['calls_per_msg']:.2f}")
            for what, p in shown
        ]  # fmt: skip
    cold, warm = kms["cache_8"]["passes"][0], _middle(kms["cache_8"]["passes"][1:])
    base, nocache = same["hmac-sha256"], kms["nocache_8"]["passes"][0]
    one, eight = kms["batch_1"]["passes"][0], kms["batch_8"]["passes"][0]
    return fill(
        "tokens.md",
        command=t.get("command", "make bench"), seed=t["seed"], batch=f"{t['batch']:,}",
        messages=f"{t['messages']:,}", kms_messages=f"{t['kms_messages']:,}",
        kms_target=t.get("kms_target", "moto"), latency_ms=f"{t['latency_ms']:.1f}",
        load_start=f"{t['load_average_start']:.1f}", load_end=f"{t['load_average_end']:.1f}",
        rows=table_rows(rows),
        file_rate=f"{base['msgs_per_s']:,.0f}", file_messages=f"{base['messages']:,}",
        cold_calls=f"{cold['calls_per_msg']:.2f}", cold_hits=f"{cold['hit_rate']:.0%}",
        nocache_calls=f"{nocache['calls_per_msg']:.2f}", cold_rate=f"{cold['msgs_per_s']:,.0f}",
        cold_share=f"{cold['msgs_per_s'] / base['msgs_per_s']:.1%}",
        warm_hits=f"{warm['hit_rate']:.0%}", warm_rate=f"{warm['msgs_per_s']:,.0f}",
        warm_share=f"{warm['msgs_per_s'] / base['msgs_per_s']:.0%}",
        one_calls=f"{one['calls_per_s']:,.0f}", eight_calls=f"{eight['calls_per_s']:,.0f}",
        speedup=f"{eight['calls_per_s'] / one['calls_per_s']:.1f}x",
    )  # fmt: skip


def _middle(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """The median pass by msg/s (the upper one of an even count)."""
    return sorted(passes, key=lambda p: p["msgs_per_s"])[len(passes) // 2]
