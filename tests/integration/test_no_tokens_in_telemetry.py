"""Logs, spans, metrics and the process's output hold no token either (the inventory in
docs/threat-model.md): a token is as good as its value to whoever holds the token key, and
telemetry outlives erasure (its retention is the backend's). The flow runs in-process on
generated logins at DEBUG, then `logins forget` erases one user; every token the run wrote
(and its 32 hex digits without the key id) is searched in everything either of them logged,
printed, traced or exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, generate_latest

from logins.dev.embedded import EmbeddedSqs
from logins.dev.generator import generate
from logins.dev.seed import send_bodies
from tests.helpers import run
from tests.integration.test_no_leaks import capture_logs, everything_logged, spans
from tests.integration.vaultkit import make_vault

__all__ = ["capture_logs", "spans"]  # fixtures, shared with test_no_leaks


def test_no_token_in_logs_spans_metrics_or_output_of_a_run_and_a_forget(
    tmp_path: Path,
    database_url: str,
    sqs: EmbeddedSqs,
    queue_url: str,
    spans: InMemorySpanExporter,
    capture_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    vault = make_vault(
        tmp_path,
        database_url,
        SQS_QUEUE_URL=queue_url,
        SQS_ENDPOINT_URL=sqs.endpoint_url,
        LOGINS_STOP_WHEN_IDLE="1",
        LOGINS_LOG_LEVEL="DEBUG",
    )
    messages = generate(150, seed=7)
    send_bodies(sqs.client(), queue_url, [m.body for m in messages])
    run(vault.config)
    rows = vault.query("SELECT user_id, masked_ip, masked_device_id FROM user_logins")
    assert len(rows) > 100
    tokens = {t for _, ip, dev in rows for t in (ip, dev)}
    tokens |= {t for (t,) in vault.query("SELECT token FROM pii_vault")}
    erased = vault.cli("forget", "--user-id", rows[0][0], "--reason", "r")
    assert erased.exit_code == 0, erased.output

    out = capfd.readouterr()
    places = {
        "logs": everything_logged(capture_logs),
        "stdout": out.out,
        "stderr": out.err,
        "spans": json.dumps([json.loads(s.to_json()) for s in spans.get_finished_spans()]),
        "metrics": generate_latest(REGISTRY).decode(),
    }
    assert spans.get_finished_spans() and capture_logs.records  # the search is not vacuous
    needles = tokens | {t.split(".", 1)[1] for t in tokens}
    found = {where: [n for n in needles if n in text] for where, text in places.items()}
    assert {where: hits for where, hits in found.items() if hits} == {}
    # The search finds a token where one is: forget prints the erased tokens to the eraser's
    # terminal (its output, not a log).
    assert [t for t in tokens if t in erased.output]
