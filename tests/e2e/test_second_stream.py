"""A second stream from YAML alone: config/examples/signups.yaml (no `extends`, no code),
run as an operator runs it (`python -m bytewax.run flows.logins` with LOGINS_CONFIG) side
by side with the logins flow, both at once against one database (real PostgreSQL, moto's
SQS server). Each stream keeps its own exact ledger in its own tables; the sign-ups' vault
entries are their own and `logins check`, `logins stats` and `logins reveal` work on them.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import psycopg
import yaml

from logins.core.config import load_config
from logins.core.keys import load_token_keys
from logins.core.tokens import Tokenizer, is_token
from logins.dev.embedded import EmbeddedSqs
from logins.dev.generator import generate
from logins.dev.samples import iter_records
from logins.dev.seed import send_bodies
from tests.helpers import REPO, assert_exact_ledger, fetch, run_module, start_module

SIGNUPS_YAML = REPO / "config" / "examples" / "signups.yaml"


def test_signups_from_yaml_alone_run_beside_logins(
    flow_env: dict[str, str],
    keys: dict[str, Path],
    database_url: str,
    queue_url: str,
    sqs: EmbeddedSqs,
) -> None:
    logins_env = {**flow_env, "LOGINS_STOP_WHEN_IDLE": "2"}
    signups_queue = sqs.create_queue(f"{queue_url.rsplit('/', 1)[1]}-signups")
    signups_env = {
        **logins_env,
        "LOGINS_CONFIG": str(SIGNUPS_YAML),
        "SIGNUPS_QUEUE_URL": signups_queue,
    }
    logins_config, signups_config = load_config(logins_env), load_config(signups_env)
    stated = yaml.safe_load(SIGNUPS_YAML.read_text())
    assert set(stated) == {"source", "steps", "sink", "tokens", "vault"}  # no extends

    logins = generate(120, seed=31)
    logins_ids = send_bodies(sqs.client(), queue_url, (m.body for m in logins))
    signups = list(iter_records(signups_config.validate_step, 150, seed=5))
    signups_ids = send_bodies(sqs.client(), signups_queue, (m.body for m in signups))

    flows = [
        start_module(["bytewax.run", "flows.logins"], logins_env),
        start_module(["bytewax.run", "flows.logins"], signups_env),
    ]  # both at once: their migrations meet under the advisory lock
    outputs = [flow.communicate(timeout=300) for flow in flows]
    for flow, (_, stderr) in zip(flows, outputs, strict=True):
        assert flow.returncode == 0, stderr[-3000:]

    emails = {json.loads(m.body)["email"] for m in signups if m.kind == "valid"}
    assert not [e for e in emails if any(e in out for pair in outputs for out in pair)]
    with psycopg.connect(database_url) as conn:
        for config, messages, ids in (
            (logins_config, logins, logins_ids),
            (signups_config, signups, signups_ids),
        ):
            outcome = assert_exact_ledger(conn, config, ids)
            kinds = Counter(m.kind for m in messages)
            assert len(outcome["row"]) == kinds["valid"]
            assert len(outcome["duplicate"]) == kinds["resend"]
            assert len(outcome["rejected"]) == kinds["malformed"]
        assert dict(
            fetch(conn, "SELECT reason, count(*) FROM signups_rejected GROUP BY reason")
        ) == Counter(m.reason for m in signups if m.kind == "malformed")

        # every row is its message's values, typed; the email only as a token
        rows = fetch(
            conn,
            "SELECT message_id, user_id, masked_email, age, plan, signed_up_at,"
            " marketing_opt_in FROM signups",
        )
        bodies = {
            i: json.loads(m.body)
            for i, m in zip(signups_ids, signups, strict=True)
            if m.kind != "malformed"
        }
        tokenizer = Tokenizer(load_token_keys(keys["token.key"]))
        for message_id, user_id, masked, age, plan, signed_up_at, opt_in in rows:
            sent = bodies[message_id]
            assert (user_id, age, plan, opt_in) == (
                sent["user_id"],
                sent.get("age"),
                sent["plan"],
                sent["marketing_opt_in"],
            )
            assert signed_up_at == datetime.fromisoformat(
                sent["signed_up_at"].replace("Z", "+00:00")
            )
            assert is_token(masked) and masked == tokenizer.token("email", sent["email"])
        # its own vault: each distinct email sealed once, nothing of the logins stream
        assert fetch(conn, "SELECT field, count(*) FROM signups_vault GROUP BY field") == [
            ("email", len({r[2] for r in rows}))
        ]
        assert {f for (f,) in fetch(conn, "SELECT DISTINCT field FROM pii_vault")} == {
            "ip",
            "device_id",
        }
        signups_tables = {
            name: kind
            for name, kind in fetch(
                conn,
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'signups'",
            )
        }
        assert "email" not in signups_tables
        assert signups_tables["age"] == "bigint"
        assert signups_tables["marketing_opt_in"] == "boolean"

    checked = run_module(["logins", "check"], signups_env, timeout=120)
    assert checked.returncode == 0, checked.stderr
    assert "table: signups\n" in checked.stdout and "table: signups_vault" in checked.stdout

    stats = run_module(["logins", "stats", "--json"], signups_env, timeout=120)
    assert stats.returncode == 0, stats.stderr
    counts = json.loads(stats.stdout)
    assert counts["messages"] == len(signups)
    assert counts["rows"] == sum(m.kind == "valid" for m in signups)
    assert counts["vault_by_field"] == {"email": counts["distinct_tokens"]["masked_email"]}

    user_id, masked_email = rows[0][1], rows[0][2]
    shown = run_module(
        [
            "logins",
            "reveal",
            "--user-id",
            user_id,
            "--reason",
            "e2e: sign-ups",
            "--json",
            "--private-key-file",
            str(keys["vault.key"]),
        ],
        signups_env,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    revealed = json.loads(shown.stdout)
    expected = {
        json.loads(m.body)["email"]
        for i, m in zip(signups_ids, signups, strict=True)
        if m.kind == "valid" and json.loads(m.body)["user_id"] == user_id
    }
    assert {r["value"] for r in revealed} == expected
    assert masked_email in {r["token"] for r in revealed}
    with psycopg.connect(database_url) as conn:
        assert fetch(conn, "SELECT action, reason FROM pii_audit") == [("reveal", "e2e: sign-ups")]


def test_a_declared_column_of_another_type_stops_the_flow_at_start(
    flow_env: dict[str, str], database_url: str, queue_url: str
) -> None:
    env = {**flow_env, "LOGINS_CONFIG": str(SIGNUPS_YAML), "SIGNUPS_QUEUE_URL": queue_url}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE signups (user_id varchar(128), age integer)")
    started = start_module(["bytewax.run", "flows.logins"], env)
    _, stderr = started.communicate(timeout=120)
    assert started.returncode != 0
    assert (
        "table signups: age is integer, declared bigint. Migrations never retype a column" in stderr
    )
    with psycopg.connect(database_url) as conn:  # nothing was created or changed
        assert fetch(conn, "SELECT to_regclass('signups_ledger')") == [(None,)]
        assert [
            c
            for (c,) in fetch(
                conn,
                "SELECT attname::text FROM pg_attribute WHERE"
                " attrelid = 'signups'::regclass AND attnum > 0",
            )
        ] == ["user_id", "age"]
