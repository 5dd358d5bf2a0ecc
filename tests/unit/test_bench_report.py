"""docs/benchmarks.md rendered from a results.json-shaped sample of one run (bench/report.py
and bench/sections.py): the figures and tables of the run, the page's words from
bench/templates/, nothing written by hand spliced in (that is docs/benchmark-notes.md, linked),
and the sections a command of their own rewrites (SQS, dedupe, tokens) carried over from the
previous page when a run did not measure them. The committed page has the template's
structure."""

from __future__ import annotations

import re
from typing import Any

from bench import report, sections
from tests.helpers import REPO

NOTES = REPO / "docs" / "benchmark-notes.md"
PAGE = REPO / "docs" / "benchmarks.md"


def _run(name: str, messages: int, rate: float, rss: float, cpu: float) -> dict[str, Any]:
    rows, rejected, duplicate = int(messages * 0.95), int(messages * 0.03), int(messages * 0.02)
    return {
        "name": name,
        "messages": messages,
        "workers": 1,
        "msgs_per_s": rate,
        "exact": True,
        "resends_missed": 0,
        "expected": {"duplicate": duplicate},
        "ledger": {
            "total": messages,
            "outcomes": {"row": rows, "rejected": rejected, "duplicate": duplicate},
            "vault_entries": int(messages * 0.55),
        },
        "process": {
            "peak_rss_mb": rss,
            "cpu_seconds": cpu,
            "rss_samples": [[0.0, rss * 0.5], [1.0, rss * 0.9], [2.0, rss]],
        },
        "backend_cpu_seconds": cpu * 0.6,
        "postgres_cpu_seconds": cpu * 0.7,
        "wal_bytes": messages * 1100,
        "rate": 500.0,
        "latency_ms": {"p50": 2.0, "p99": 3.0, "max": 14.0, "percentiles": [1.0] * 50 + [3.0] * 51},
    }


def _pair(receivers: int, ratios: list[float], target: float) -> dict[str, Any]:
    return {
        "receivers": receivers,
        "ratios": ratios,
        "ratio": sorted(ratios)[1],
        "flow_runs": [900.0, 950.0, 1000.0],
        "drain_runs": [1400.0, 1500.0, 1600.0],
        "flow_msgs_per_s": 950.0,
        "drain_msgs_per_s": 1500.0,
        "target": target,
        "met": sorted(ratios)[1] >= target,
        "flow_cpu_us_per_msg": 410.0,
    }


def sample_results() -> dict[str, Any]:
    runs = {
        "core_1w": _run("core_1w", 1_000_000, 16_512.0, 262.0, 55.3),
        "core_2w": _run("core_2w", 1_000_000, 14_123.0, 279.0, 60.0),
        "small_1w": [_run(f"small_{i}", 100_000, 13_000.0 + 500 * i, 250.0, 6.0) for i in range(3)],
        "cost_small_1w": [_run(f"cost_{i}", 50_000, 13_263.0, 240.0, 3.94) for i in range(3)],
        "latency": _run("latency", 12_500, 500.0, 200.0, 1.0),
    }
    return {
        "command": "make bench",
        "started": "2026-12-01T16:27:58+00:00",
        "finished": "2026-12-01T16:43:52+00:00",
        "duration_seconds": 954.0,
        "git": {"commit": "0c7972d", "dirty": False},
        "machine": {
            "cpu": "Intel(R) Xeon(R) Processor", "cores": 2, "memory_gb": 23.5, "os": "Linux",
            "python": "3.11.7", "bytewax": "0.21.1", "psycopg": "3.3.9", "pynacl": "1.6.2",
            "load_average_start": [0.4, 0.3, 0.2], "load_average_end": [3.1, 2.0, 1.0],
        },
        "postgres": {
            "version": "15.20", "where": "external", "fsync": "on",
            "synchronous_commit": "on", "shared_buffers": "128MB",
        },
        "dataset": {
            "n": 1_000_000, "seed": 1,
            "kinds": {"valid": 950_044, "resend": 19_996, "malformed": 29_960},
        },
        "seal_us": {"sealed_box": 57.0, "batch": 3.1, "batch_size": 2000},
        "runs": runs,
        "statement_ms": {"insert": 21.5, "insert_vault": 30.2, "commit": 2.1, "plain": 4.0},
        "naive": {"rates": [3000.0, 3037.0, 3100.0], "items": 10_000},
        "ceiling": {"rates": [250_000.0, 252_403.0, 255_000.0]},
        "ceiling_exactly_once": {
            "rates": [65_000.0, 65_337.0, 66_000.0], "items": 1_000_000,
            "backend_cpu": [12.0, 12.5, 13.0], "postgres_cpu": [14.0], "wal_bytes": [8e8],
        },
        "sqs": {
            "messages": 40_000, "workers": 2, "repeats": 3, "exact": True,
            "same_receivers": _pair(2, [0.61, 0.53, 0.63], 0.9),
            "defaults": _pair(4, [0.81, 0.97, 0.79], 0.8),
            "cpu": {
                "sizes": [4_000, 24_000], "sqs_flow_cpu_us_per_msg": 192.0,
                "core_flow_cpu_us_per_msg": 39.0, "boto3_drain_cpu_us_per_msg": 298.0,
                "sqs_vs_core": 4.92, "sqs_vs_boto3_drain": 0.64, "target_vs_core": 1.5,
                "met_vs_core": False, "met_vs_boto3_drain": True,
            },
            "delayed": {
                "delay_ms": 20.0, "drain_threads": 16, "flow_msgs_per_s": 2_320.0,
                "drain_msgs_per_s": 2_000.0, "ratio": 1.16, "target": 0.8, "met": True,
            },
        },
        "profile": {
            "messages": 100_000,
            "cpu": {
                "samples": 12_345,
                "top_own": [["Validator.batch (flows/steps/validate.py)", 0.12]],
                "by_thread": [["MainThread", 0.7], ["postgres-writer", 0.3]],
            },
            "worker_wall": [["validate", 0.3], ["sink: waiting for PostgreSQL", 0.2]],
        },
        "dedupe": {
            "command": "python -m bench dedupe", "started": "2026-12-01T10:00:00+00:00",
            "git": {"commit": "abc1234", "dirty": True}, "load_average": [1.0, 2.0],
            "window_seconds": 600,
            "window_run": {
                "gaps_minutes": {"min": 5.0, "max": 9.0}, "rate": 10_000.0, "minutes": 12.0,
                "resends_offered": 140_000, "resends_recognised": 140_000, "resends_wrong": 0,
                "false_duplicates": 0, "evicted_early": 0, "state_bytes": 134e6,
                "state_bytes_end": 134.5e6, "dedupe_cpu_seconds": 20.0, "messages": 7_200_000,
                "msgs_per_s": 350_000.0, "peak_rss_mb": 400.0,
            },
            "memory": {"bytes_per_slot": 16.0},
            "load": {"load": 0.9},
            "table": [
                {"mb": 128, "fingerprints": 7e6, "logins_per_s": 11_000, "msgs_per_s": 11_600}
            ],
        },
    }  # fmt: skip


def _slugs(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    heads = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_the_page_holds_the_runs_figures_and_tables() -> None:
    page = report.render(sample_results())
    assert "$" not in page.replace("$$", "")  # every placeholder filled
    for row in (
        "| core path, 1 worker, 1,000,000 messages: committed msg/s | 16,512 | >= 50,000 |"
        " **missed** |",
        "| core path, 2 workers, 1,000,000 messages: committed msg/s | 14,123 |  |  |",
        "| 1 worker, 50,000 (median of 3) -> 1,000,000 messages: wall time per message"
        " (1 / msg/s) | 75.4 -> 60.6 µs (-20%) | within 20% | met |",
        "| baseline: one INSERT + COMMIT per message (10,000 messages, median of 3): msg/s"
        " | 3,037 |  |  |",
        "| pipeline msg/s (1 worker) / exactly-once ceiling | 25.3% | >= 50% | **missed** |",
        "| bare COPY of the same rows, no index (median of 3): rows/s | 252,403 |  |  |",
        "| latency at 500 msg/s offered: p50 / p99 (max) | 2 / 3 ms (14 ms) | p99 <= 2 s | met |",
        "| peak RSS of the flow process at 1,000,000 messages (1 worker) | 262 MB | <= 500 MB"
        " | met |",
        "| **defaults: median** | | 950 | 4 | 1,500 | **81%** (target >= 80%: met) |",
        "| new logins reported as duplicates | 0 | 0 | met |",
        "| 128 | 7,000,000 | 11,000 | 11,600 |",
        "| 12.0% | `Validator.batch (flows/steps/validate.py)` |",
        "| SQS path: the flow's CPU per message / the core path's | 4.92x (192.0 µs/msg"
        " (marginal, 4,000 -> 24,000) vs 39.0 µs) | <= 1.5x | **missed** |",
        "| SQS path: the flow's CPU per message / a bare one-thread boto3 drain's | 0.64x"
        " (vs 298.0 µs) | < 1x | met |",
        "| SQS path, 20 ms added to every call: the defaults / a 16-thread bare drain | 116%"
        " (2,320 vs 2,000 msg/s) | >= 80% | met |",
    ):
        assert row in page, row
    assert "**0.58 seals per message**" in page and "**3.1 µs per value**" in page
    assert "no overlap of the two can pass 22,604 msg/s: 35% of the ceiling" in page
    assert "under about 61 µs per message on two cores" in page
    assert "In this run the flow drained 61% of a 2-receiver bare drain." in page
    assert "`make bench` (2026-12-01T16:27:58+00:00, commit `0c7972d`" in page


def test_nothing_written_by_hand_is_spliced_in_and_every_link_to_the_notes_resolves() -> None:
    page = report.render(sample_results())
    notes = NOTES.read_text()
    for hand_written in ("## How each figure is measured", "Tried and not kept",
                         "### Before: the first run", "**A loaded run, 5 repeats**"):  # fmt: skip
        assert hand_written not in page
        assert hand_written.lstrip("#") in notes
    anchors = set(re.findall(r"benchmark-notes\.md#([\w-]+)", page + PAGE.read_text()))
    assert anchors and anchors <= _slugs(notes)


def test_sections_not_measured_are_carried_from_the_previous_page() -> None:
    old = report.render(sample_results())
    results = sample_results()
    del results["sqs"], results["dedupe"]
    new = report.render(results)
    assert "## The SQS path\n" not in new and "## The dedupe window" not in new
    carried = sections.carry_sections(old, new)
    assert "| **defaults: median** | | 950 | 4 | 1,500 |" in carried
    assert "## The dedupe window at full rate" in carried
    alone = sample_results()["sqs"] | {"exact": False}
    rewritten = sections.with_section(carried, "sqs", sections.sqs_section(alone))
    assert "Every flow run's ledger was **not exact**" in rewritten
    assert rewritten.count("## The SQS path\n") == 1


def test_the_committed_page_has_the_templates_structure() -> None:
    def headings(text: str) -> list[str]:
        return [re.sub(r"\d[\d,.]*%?", "N", h) for h in re.findall(r"^##+ .+$", text, re.M)]

    rendered = headings(report.render(sample_results()))
    # and the section of the last `python -m bench tokens`
    assert headings(PAGE.read_text()) == [*rendered, "## Token key custody: key file and KMS"]
