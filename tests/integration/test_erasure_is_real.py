"""Erasure, tried by someone who holds every key we have: after `logins forget`, compute the
token of every address in the erased ip's /24 (and of the erased device id's neighbours)
under every key in the token key file, and search every column of every table and view for
them, arrays and JSON included; open every vault entry and sealed body left with the vault
private key. Nothing may match. What was not erased keeps working: duplicates stay visible,
`stats`, rotation and the unified view run. Every step is done by the role that does it in
production, through its own login: the pipeline writes, the revealer reveals, the rotator
rotates, the eraser erases, the superuser (the attacker with a dump) searches.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from connectors.postgres import roles
from logins.core.keys import load_token_keys, load_vault_private_key
from logins.core.tokens import Tokenizer
from logins.core.vault import Opener
from logins.dev.embedded import EmbeddedSqs
from logins.dev.seed import send_bodies
from logins.pii.erasure import names_user
from tests.helpers import run
from tests.integration.leaks import LeakSearch
from tests.integration.rolekit import RoleDatabase, role_database

ALICE = "alice-4f1c"
ALICE_IP = "10.77.3.42"  # hers alone
ALICE_DEVICE = "931-55-0042"


def login(user: str, ip: str, device: str, version: str = "2.3.0") -> str:
    return json.dumps(
        {"user_id": user, "app_version": version, "device_type": "ios", "ip": ip,
         "locale": "US", "device_id": device}
    )  # fmt: skip


def others(n: int, start: int = 0) -> list[str]:
    """Other users, in other /24s; each logs in twice from the same ip (a repeat to see)."""
    bodies = []
    for i in range(start, start + n):
        ip, device = f"198.51.{i}.7", f"{i:03d}-11-2222"
        bodies += [login(f"user-{i}", ip, device), login(f"user-{i}", ip, device, "2.4.0")]
    return bodies


def every_column(conn: psycopg.Connection) -> tuple[dict[str, str], list[bytes]]:
    """{relation.column: every value as text} of every table and view in the schema (arrays
    and jsonb as their text), and the raw bytes of every bytea."""
    texts: dict[str, str] = {}
    raw: list[bytes] = []
    columns = conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid"
        " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'm')"
        " AND a.attnum > 0 AND NOT a.attisdropped"
    ).fetchall()
    assert len({t for t, _, _ in columns}) >= 10
    for relation, column, kind in columns:
        query = f'SELECT "{column}"::text FROM "{relation}"'
        texts[f"{relation}.{column}"] = "\n".join(str(v) for (v,) in conn.execute(query))
        if kind == "bytea":
            raw += [bytes(v) for (v,) in conn.execute(f'SELECT "{column}" FROM "{relation}"') if v]
    return texts, raw


@pytest.fixture
def db(pg_admin_dsn: str, tmp_path: Path) -> Iterator[RoleDatabase]:
    with role_database(pg_admin_dsn, tmp_path) as database:
        yield database


def test_nothing_left_gives_back_an_erased_value_with_every_key(
    db: RoleDatabase, sqs: EmbeddedSqs, queue_url: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token.key"  # the key file every role shares; rotation rewrites it
    shutil.copy(db.keys["token.key"], token_file)
    token_file.chmod(0o600)
    env = {
        "SQS_QUEUE_URL": queue_url,
        "SQS_ENDPOINT_URL": sqs.endpoint_url,
        "LOGINS_STOP_WHEN_IDLE": "1",
        "LOGINS_TOKEN_KEY_FILE": str(token_file),
    }
    key = ["--private-key-file", str(db.keys["vault.key"])]
    alice = login(ALICE, ALICE_IP, ALICE_DEVICE)
    send_bodies(
        sqs.client(),
        queue_url,
        [
            alice,
            alice,  # a resend: user_logins_duplicates
            login(ALICE, ALICE_IP, ALICE_DEVICE, "2.4.0"),
            json.dumps({"user_id": ALICE.upper(), "ip": ALICE_IP}),  # rejected: missing fields
            f'{{"user_id": "x", "user_id": "{ALICE}", "device_id": "{ALICE_DEVICE}"}}',  # dup key
            *others(6),
        ],
    )
    run(db.config_as(roles.PIPELINE, **env))
    shown = db.cli(roles.REVEALER, "reveal", "--user-id", ALICE, "--reason", "DSAR", *key, **env)
    assert shown.exit_code == 0 and ALICE_IP in shown.output, shown.output

    # a token key rotation, a restart, more logins under the new key, the rotation walk
    assert db.cli(roles.ROTATOR, "rotate", "new-key", **env).exit_code == 0
    send_bodies(
        sqs.client(),
        queue_url,
        [login(ALICE, ALICE_IP, ALICE_DEVICE, "3.0.0"), *others(3), *others(2, start=10)],
    )
    run(db.config_as(roles.PIPELINE, **env))
    walked = db.cli(roles.ROTATOR, "rotate", "run", "--reason", "yearly", *key, "--json", **env)
    assert walked.exit_code == 0 and json.loads(walked.stdout)["rotated"] > 0, walked.output

    tokenizer = Tokenizer(load_token_keys(token_file))
    assert len(tokenizer.key_ids) == 2
    neighbourhood = [str(a) for a in ipaddress.ip_network("10.77.3.0/24")]
    devices = [f"931-55-{n:04d}" for n in range(100)]
    candidates = {
        token
        for values, field in ((neighbourhood, "ip"), (devices, "device_id"))
        for value in values
        for token in tokenizer.tokens_all_keys(field, value)
    }
    search = LeakSearch(candidates)
    with db.connect("superuser") as conn:
        texts, _ = every_column(conn)
    assert search.hits(texts), "before the erasure the search finds her tokens: not vacuous"
    kept_before = db.query(
        "SELECT message_id, masked_ip, masked_device_id FROM user_logins WHERE user_id <> %s"
        " ORDER BY message_id",
        ALICE,
    )
    stats_before = json.loads(db.cli(roles.ANALYST, "stats", "--json", **env).stdout)

    forgot = db.cli(
        roles.ERASER, "forget", "--user-id", ALICE, "--reason", "erasure request", *key,
        "--json", **env,
    )  # fmt: skip
    assert forgot.exit_code == 0, forgot.output
    (result,) = json.loads(forgot.stdout)
    assert len(result["erased"]) == 4 and result["shared_kept"] == []  # 2 values x 2 keys
    assert len(result["rejected_erased"]) == 2

    # the attacker: a dump of every table and view, and every key we hold
    with db.connect("superuser") as conn:
        texts, raw = every_column(conn)
    assert search.hits(texts) == {}
    assert [t for t in candidates for blob in raw if t.encode() in blob] == []
    opener = Opener(load_vault_private_key(db.keys["vault.key"]))
    opened = [
        opener.open(bytes(s), field=f, token=t)
        for t, f, s in db.query("SELECT token, field, sealed FROM pii_vault")
    ]
    assert opened and not set(opened) & {*neighbourhood, *devices}
    bodies = [
        opener.open_rejected(bytes(s), message_id=m)
        for m, s in db.query(
            "SELECT message_id, sealed_body FROM user_logins_rejected"
            " WHERE octet_length(sealed_body) > 0"
        )
    ]
    assert not [b for b in bodies if names_user(b, ALICE) or ALICE_IP in b]
    # her rows are still counted: one marker per value, shared by her rows, linked to nothing
    markers = db.query(
        "SELECT count(*), count(DISTINCT masked_ip), count(DISTINCT masked_device_id),"
        " bool_and(masked_ip LIKE 'erased:%%') FROM user_logins WHERE user_id = %s",
        ALICE,
    )
    assert markers == [(3, 1, 1, True)]

    # what was not erased works as before
    assert (
        db.query(
            "SELECT message_id, masked_ip, masked_device_id FROM user_logins WHERE user_id <> %s"
            " ORDER BY message_id",
            ALICE,
        )
        == kept_before
    )
    repeats = db.query(
        "SELECT user_id, count(*), count(DISTINCT masked_ip_current) FROM user_logins_unified"
        " WHERE user_id LIKE 'user-%%' GROUP BY 1 ORDER BY 1"
    )
    assert dict((u, (n, d)) for u, n, d in repeats) == {
        **{f"user-{i}": (4, 1) for i in range(3)},  # before and after the rotation: one value
        **{f"user-{i}": (2, 1) for i in (3, 4, 5, 10, 11)},
    }
    stats_after = db.cli(roles.ANALYST, "stats", "--json", **env)
    assert stats_after.exit_code == 0
    after = json.loads(stats_after.stdout)
    assert (after["rows"], after["duplicates"], after["rejected"]) == (
        stats_before["rows"],
        stats_before["duplicates"],
        stats_before["rejected"],
    )
    assert after["vault_entries"] == stats_before["vault_entries"] - 4
    assert db.cli(roles.ROTATOR, "rotate", "new-key", **env).exit_code == 0
    again = db.cli(roles.ROTATOR, "rotate", "run", "--reason", "again", *key, "--json", **env)
    assert again.exit_code == 0 and json.loads(again.stdout)["remaining"] == 0, again.output
    assert db.cli(roles.AUDITOR, "audit", "verify", **env).exit_code == 0
