"""The vault's operations as an operator runs them, each `logins` command a subprocess:
the policy check, then a token key rotation across a restart of the flow, recovery by user,
erasure, and the audit chain verified (and, after tampering, refused)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from logins.dev.embedded import EmbeddedSqs
from logins.dev.seed import send_bodies
from tests.helpers import REPO, run_module


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "steps:\n  - type: validate\n    fields:\n      ip: {format: ip, pii: true}\n"
            "  - type: mask\n    algorithm: sha256\n    fields: {ip: masked_ip}\n",
            "steps.mask.algorithm: 'sha256' is an unkeyed hash; an attacker enumerates every"
            " IPv4 address in minutes. Use 'hmac-sha256'",
        ),
        (
            "steps:\n  - type: validate\n    fields:\n      ip: {format: ip, pii: true}\n"
            "      device_id: {pii: true}\n  - type: mask\n    fields: {ip: masked_ip}\n",
            "PII fields ['device_id'] are not masked by any mask step",
        ),
    ],
    ids=["unkeyed-hash", "unmasked-pii"],
)
def test_check_refuses_a_config_that_would_leak(
    env: dict[str, str], tmp_path: Path, yaml_text: str, message: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(f"extends: {REPO / 'config/local.yaml'}\n{yaml_text}")
    checked = run_module(["logins", "check"], {**env, "LOGINS_CONFIG": str(path)})
    assert checked.returncode == 2
    assert message in checked.stderr
    assert "Traceback" not in checked.stderr
    flow = run_module(["bytewax.run", "flows.logins"], {**env, "LOGINS_CONFIG": str(path)})
    assert flow.returncode == 2 and message in flow.stderr  # the flow refuses to start too


def login(user: str, ip: str, device: str) -> str:
    return json.dumps(
        {"user_id": user, "app_version": "2.3.0", "device_type": "ios", "ip": ip,
         "locale": "US", "device_id": device}
    )  # fmt: skip


def test_rotation_recovery_erasure_and_audit_as_an_operator(
    env: dict[str, str], sqs: EmbeddedSqs, queue_url: str, database_url: str
) -> None:
    send_bodies(
        sqs.client(),
        queue_url,
        [login("u-1", "192.0.2.1", "d-1"), login("u-2", "192.0.2.1", "d-2")],
    )
    first = run_module(["bytewax.run", "flows.logins", "-w", "2"], env)
    assert first.returncode == 0, first.stderr[-2000:]

    rotated = run_module(["logins", "rotate", "new-key"], env)
    assert rotated.returncode == 0 and "new active token key" in rotated.stdout
    send_bodies(sqs.client(), queue_url, [login("u-1", "192.0.2.1", "d-1")])  # after the restart
    second = run_module(["bytewax.run", "flows.logins", "-w", "2"], env)
    assert second.returncode == 0, second.stderr[-2000:]
    fd = os.open(env["PRIVATE_KEY"], os.O_RDONLY)  # the key through a file descriptor
    try:
        walked = run_module(
            ["logins", "rotate", "run", "--reason", "yearly rotation", "--json",
             "--private-key-fd", str(fd)],
            env,
            pass_fds=(fd,),
        )  # fmt: skip
    finally:
        os.close(fd)
    assert walked.returncode == 0, walked.stderr
    assert json.loads(walked.stdout)["remaining"] == 0

    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT count(DISTINCT masked_ip), count(DISTINCT masked_ip_current),"
            " count(DISTINCT masked_device_id_current) FROM user_logins_unified"
        ).fetchone() == (2, 1, 2)

    key_text = Path(env["PRIVATE_KEY"]).read_text()
    from_env = run_module(
        ["logins", "reveal", "--user-id", "u-1", "--reason", "r"],
        {**env, "LOGINS_VAULT_PRIVATE_KEY": key_text},
    )  # no longer read: the environment shows in /proc/PID/environ and `docker inspect`
    assert from_env.returncode == 2 and "the vault private key is required" in from_env.stderr
    shown = run_module(
        ["logins", "reveal", "--user-id", "u-1", "--reason", "support ticket 7",
         "--private-key-file", "-"],
        env,
        input=key_text,  # the key on stdin
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert shown.stdout.count("192.0.2.1") == 2 and shown.stdout.count("d-1") == 2

    forgot = run_module(
        ["logins", "forget", "--user-id", "u-1", "--reason", "erasure request",
         "--private-key-file", env["PRIVATE_KEY"]],
        env,
    )  # fmt: skip
    assert forgot.returncode == 0, forgot.stderr
    assert "erased 2 vault entries" in forgot.stdout  # d-1's old and new token
    assert "kept 2 values other users' rows hold too" in forgot.stdout  # the shared ip
    after = run_module(
        ["logins", "reveal", "--user-id", "u-1", "--reason", "check", "--json",
         "--private-key-file", env["PRIVATE_KEY"]],
        env,
    )  # fmt: skip
    errors = [(r["field"], r["error"][:10]) for r in json.loads(after.stdout) if r["error"]]
    # d-1's old and new token were one value: every row of it now holds one random marker
    assert after.returncode == 1 and errors == [("device_id", "erased on ")]

    status = run_module(["logins", "vault", "status"], env)
    assert status.returncode == 0 and "erased values (markers)     : 1" in status.stdout
    listed = run_module(["logins", "audit", "list", "--json"], env)
    actions = [r["action"] for r in json.loads(listed.stdout)]
    # the rotation: start, one batch (in the batch's transaction), done
    assert actions == ["reveal", "forget", "reveal", "rotate", "rotate", "rotate"]
    verified = run_module(["logins", "audit", "verify"], env)
    assert verified.returncode == 0 and verified.stdout.startswith("ok: 6 rows")

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE pii_audit DISABLE TRIGGER ALL")
        conn.execute("UPDATE pii_audit SET reason = 'routine' WHERE action = 'forget'")
        conn.execute("ALTER TABLE pii_audit ENABLE TRIGGER ALL")
    tampered = run_module(["logins", "audit", "verify"], env)
    assert tampered.returncode == 1
    assert "TAMPERED: row 5: its contents do not match its hash" in tampered.stderr
