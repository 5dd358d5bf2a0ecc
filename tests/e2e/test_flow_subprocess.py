"""End to end as an operator runs it: `python -m bytewax.run flows.logins -w 2` with the
environment contract only, then the `logins` CLI (stats, reveal, check) against the result."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from logins.core.keys import load_token_keys
from logins.core.tokens import Tokenizer
from logins.dev.embedded import EmbeddedSqs
from logins.dev.generator import generate
from logins.dev.seed import send_bodies
from tests.helpers import REPO, run_module


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "LOGINS_STOP_WHEN_IDLE": "2", "LOGINS_LOG_LEVEL": "DEBUG"}


def test_flow_with_two_workers_then_stats_and_reveal(
    env: dict[str, str], sqs: EmbeddedSqs, queue_url: str, database_url: str
) -> None:
    messages = generate(200, seed=21)
    send_bodies(sqs.client(), queue_url, (m.body for m in messages))

    flow = run_module(["bytewax.run", "flows.logins", "-w", "2"], env, timeout=300)
    assert flow.returncode == 0, flow.stderr[-3000:]
    raw_values = {
        v
        for m in messages
        if m.kind == "valid"
        for v in (json.loads(m.body)["ip"], json.loads(m.body)["device_id"])
    }
    leaked = [v for v in raw_values if v in flow.stdout or v in flow.stderr]
    assert leaked == [], "raw PII in the flow's DEBUG output"

    stats = run_module(["logins", "stats", "--json"], env)
    assert stats.returncode == 0, stats.stderr
    counts = json.loads(stats.stdout)
    assert counts["messages"] == len(messages)
    assert counts["rows"] == sum(m.kind == "valid" for m in messages)
    assert counts["rejected"] == sum(m.kind == "malformed" for m in messages)
    assert counts["duplicates"] == sum(m.kind == "resend" for m in messages)

    valid = json.loads(next(m.body for m in messages if m.kind == "valid"))
    tokenizer = Tokenizer(load_token_keys(Path(env["LOGINS_TOKEN_KEY_FILE"])))
    token = tokenizer.token("ip", valid["ip"])
    shown = run_module(
        [
            "logins",
            "reveal",
            token,
            "--private-key-file",
            env["PRIVATE_KEY"],
            "--reason",
            "e2e test",
            "--actor",
            "tester",
            "--json",
        ],
        env,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == [
        {"token": token, "field": "ip", "value": valid["ip"], "error": None}
    ]
    with psycopg.connect(database_url) as conn:
        audit = conn.execute(
            "SELECT actor = session_user, note, reason, action, tokens, succeeded,"
            " detail->'entries' = jsonb_build_array((SELECT entry_id FROM pii_vault"
            " WHERE token = %s)) FROM pii_audit",
            (token,),
        ).fetchall()
    # the login is the actor, --actor a note; the entry is named by its id, not its token
    assert audit == [(True, "tester", "e2e test", "reveal", [], 1, True)]

    unknown = run_module(
        [
            "logins",
            "reveal",
            token[:-4] + "0000",
            "--private-key-file",
            env["PRIVATE_KEY"],
            "--reason",
            "e2e test",
        ],
        env,
    )
    assert unknown.returncode == 1 and "not in the vault" in unknown.stdout


def test_reveal_needs_a_reason_and_a_private_key(env: dict[str, str]) -> None:
    no_reason = run_module(
        ["logins", "reveal", "k.x", "--private-key-file", env["PRIVATE_KEY"]], env
    )
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    no_key = run_module(["logins", "reveal", "k.x", "--reason", "r"], env)
    assert no_key.returncode == 2
    assert "the vault private key is required: --private-key-file F" in no_key.stderr


def test_check_prints_the_config_with_secrets_hidden(env: dict[str, str]) -> None:
    dsn = "postgresql://app:hunter2@db.internal:5432/logins"
    checked = run_module(["logins", "check"], {**env, "DATABASE_URL": dsn})
    assert checked.returncode == 0, checked.stderr
    assert "postgresql://app:***@db.internal:5432/logins" in checked.stdout
    assert "hunter2" not in checked.stdout
    assert "# ok: token key id" in checked.stdout


def test_a_bad_start_names_the_file_and_key(env: dict[str, str], tmp_path: Path) -> None:
    missing = run_module(["bytewax.run", "flows.logins"], {**env, "LOGINS_TOKEN_KEY_FILE": ""}, 120)
    assert missing.returncode != 0
    base = (REPO / "config/base.yaml").read_text().splitlines()
    tokens_line = next(i for i, line in enumerate(base, 1) if line.startswith("tokens:"))
    assert (
        f"config/base.yaml:{tokens_line}: tokens: give exactly one of tokens.key_file"
        " (LOGINS_TOKEN_KEY_FILE) and tokens.kms_key_id (LOGINS_TOKEN_KMS_KEY_ID): neither"
        " is set" in missing.stderr
    )
    absent = run_module(
        ["bytewax.run", "flows.logins"],
        {**env, "LOGINS_TOKEN_KEY_FILE": str(tmp_path / "nope.key")},
        120,
    )
    assert absent.returncode != 0
    assert f"token key file {tmp_path / 'nope.key'}: no such file" in absent.stderr
    key_file = Path(env["LOGINS_TOKEN_KEY_FILE"])
    key_file.chmod(0o644)  # others may read it
    readable = run_module(["bytewax.run", "flows.logins"], env, 120)
    key_file.chmod(0o600)
    assert readable.returncode == 2
    assert f"token key file {key_file}: group or others may read it (mode 0644)" in readable.stderr
    assert f"chmod 600 {key_file}" in readable.stderr
    swapped = run_module(
        ["bytewax.run", "flows.logins"],
        {**env, "LOGINS_VAULT_PUBLIC_KEY_FINGERPRINT": "sha256:" + "0" * 64},
        120,
    )
    assert swapped.returncode == 2
    assert "its fingerprint sha256:" in swapped.stderr
    assert "is not the pinned vault.public_key_fingerprint sha256:" + "0" * 64 in swapped.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: " + str(REPO / "config/local.yaml") + "\nsource:\n  receivers: 0\n")
    invalid = run_module(["bytewax.run", "flows.logins"], {**env, "LOGINS_CONFIG": str(bad)}, 120)
    assert invalid.returncode != 0
    assert f"{bad}:3: source.receivers: must be at least 1" in invalid.stderr
