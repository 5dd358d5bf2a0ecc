"""Logs, spans, metrics and the process's output hold no token either (the inventory in
docs/threat-model.md): a token is as good as its value to whoever holds the token key, and
telemetry outlives erasure (its retention is the backend's). The flow runs in-process on
generated logins at DEBUG, then `logins forget` erases one user; every token the run wrote
(and its 32 hex digits without the key id) is searched in everything either of them logged,
printed, traced or exported."""

from __future__ import annotations

from collections.abc import Callable

from logins.dev.generator import generate
from tests.helpers import run
from tests.integration.conftest import Telemetry
from tests.integration.vaultkit import Vault


def test_no_token_in_logs_spans_metrics_or_output_of_a_run_and_a_forget(
    send_to_queue: Callable[[list[str]], list[str]],
    queue_vault: Callable[..., Vault],
    telemetry: Telemetry,
) -> None:
    vault = queue_vault(LOGINS_LOG_LEVEL="DEBUG")
    messages = generate(150, seed=7)
    send_to_queue([m.body for m in messages])
    run(vault.config)
    rows = vault.query("SELECT user_id, masked_ip, masked_device_id FROM user_logins")
    assert len(rows) > 100
    tokens = {t for _, ip, dev in rows for t in (ip, dev)}
    tokens |= {t for (t,) in vault.query("SELECT token FROM pii_vault")}
    erased = vault.cli("forget", "--user-id", rows[0][0], "--reason", "r")
    assert erased.exit_code == 0, erased.output

    places = telemetry.places()
    # the search is not vacuous
    assert telemetry.spans.get_finished_spans() and telemetry.logs.records
    needles = tokens | {t.split(".", 1)[1] for t in tokens}
    found = {where: [n for n in needles if n in text] for where, text in places.items()}
    assert {where: hits for where, hits in found.items() if hits} == {}
    # The search finds a token where one is: forget prints the erased tokens to the eraser's
    # terminal (its output, not a log).
    assert [t for t in tokens if t in erased.output]
