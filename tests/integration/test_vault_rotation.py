"""Key rotation against a real PostgreSQL: a new token key (aliases, the unified view, a
restarted flow picking the key up, resumable walks) and a new vault key pair (rekey)."""

from __future__ import annotations

import json
import stat
import threading

import pytest

from logins.core.keys import generate_keys, load_token_keys, load_vault_private_key
from logins.core.vault import Opener
from logins.dev.embedded import EmbeddedSqs
from logins.dev.seed import send_bodies
from logins.pii.rotation import rekey, rotate_tokens
from tests.helpers import run
from tests.integration.vaultkit import Vault, make_vault, vault

__all__ = ["vault"]


class Interrupted(Exception):
    pass


def interrupt_after(batches: int):
    seen = []

    def progress(*_: int) -> None:
        seen.append(1)
        if len(seen) >= batches:
            raise Interrupted

    return progress


def logins(vault: Vault, n: int, user: str = "u") -> list[dict[str, str]]:
    return [vault.add_login(f"{user}-{i}", f"192.0.2.{i}", f"{i:03d}-00-0000") for i in range(n)]


def test_new_key_goes_first_and_the_old_keys_stay(vault: Vault, tmp_path) -> None:
    path = vault.keys["token.key"]
    before = load_token_keys(path)
    result = vault.cli("rotate", "new-key")
    assert result.exit_code == 0, result.output
    after = load_token_keys(path)
    assert [k.key_id for k in after[1:]] == [k.key_id for k in before]
    assert after[0].key_id not in {k.key_id for k in before}
    assert f"new active token key {after[0].key_id}" in result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    only = vault.cli("keygen", "--token-only", str(tmp_path / "fresh"))
    assert only.exit_code == 0 and sorted(p.name for p in (tmp_path / "fresh").iterdir()) == [
        "token.key"
    ]
    assert len(load_token_keys(tmp_path / "fresh" / "token.key")) == 1


def test_rotate_run_needs_two_keys(vault: Vault) -> None:
    result = vault.cli(
        "rotate", "run", "--reason", "r", "--private-key-file", str(vault.keys["vault.key"])
    )
    assert result.exit_code == 2 and "run `logins rotate new-key` first" in result.output


def test_rotation_walks_the_vault_resumably_and_aliases_old_to_new(vault: Vault) -> None:
    old = logins(vault, 20)
    old_key = vault.tokenizer.key_id
    assert vault.cli("rotate", "new-key").exit_code == 0
    new_key = vault.tokenizer.key_id

    with vault.connect() as conn, pytest.raises(Interrupted):  # stopped after two batches
        rotate_tokens(
            conn,
            vault.config,
            opener=vault.opener,
            tokenizer=vault.tokenizer,
            reason="rotation",
            note="ops",
            batch_size=7,
            progress=interrupt_after(2),
        )
    assert vault.query("SELECT count(*) FROM pii_token_aliases") == [(14,)]

    resumed = vault.cli(
        "rotate", "run", "--reason", "rotation", "--private-key-file", str(vault.keys["vault.key"]),
        "--batch-size", "7", "--json",
    )  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.stdout)
    assert (summary["rotated"], summary["failed"], summary["remaining"]) == (26, 0, 0)
    assert "rotate: vault entries: 26/26 done in" in resumed.stderr  # progress, not a tty
    again = vault.cli(
        "rotate", "run", "--reason", "rotation", "--private-key-file", str(vault.keys["vault.key"])
    )
    assert "rotated 0 vault entries" in again.stdout and "still to rotate 0" in again.stdout

    assert vault.query(
        "SELECT split_part(token, '.', 1), count(*) FROM pii_vault GROUP BY 1 ORDER BY 2, 1"
    ) == sorted([(old_key, 40), (new_key, 40)], key=lambda r: (r[1], r[0]))
    tokenizer = vault.tokenizer
    aliases = dict(vault.query("SELECT old_token, new_token FROM pii_token_aliases"))
    assert len(aliases) == 40
    for i, tokens in enumerate(old):
        assert aliases[tokens["ip"]] == tokenizer.token("ip", f"192.0.2.{i}")
        assert aliases[tokens["device_id"]] == tokenizer.token("device_id", f"{i:03d}-00-0000")

    # both tokens of a value reveal it
    code, shown = vault.reveal_json(old[3]["ip"], aliases[old[3]["ip"]])
    assert code == 0 and [r["value"] for r in shown] == ["192.0.2.3", "192.0.2.3"]
    actions = vault.query("SELECT action, detail->>'phase' FROM pii_audit ORDER BY id")
    assert ("rotate", "batch") in actions  # each batch on record, in its own transaction
    actions = [a for a in actions if a[1] != "batch"]
    assert actions[:2] == [("rotate", "start"), ("rotate", "start")]
    assert ("rotate", "done") in actions

    # rows written after the restart carry new tokens; the view matches them with old rows
    vault.add_login("u-3", "192.0.2.3", "003-00-0000")
    assert vault.query(
        "SELECT count(DISTINCT masked_ip), count(DISTINCT masked_ip_current),"
        " count(DISTINCT masked_device_id_current) FROM user_logins_unified"
        " WHERE user_id = 'u-3'"
    ) == [(2, 1, 1)]
    status = json.loads(vault.cli("vault", "status", "--json").stdout)
    assert status["pending_rotation"] == 0 and status["aliases"] == 40


def test_forget_after_a_rotation_erases_the_old_and_the_new_token(vault: Vault) -> None:
    (tokens,) = logins(vault, 1)
    vault.cli("rotate", "new-key")
    vault.cli("rotate", "run", "--reason", "r", "--private-key-file", str(vault.keys["vault.key"]))
    new_ip = vault.tokenizer.token("ip", "192.0.2.0")
    result = vault.cli("forget", tokens["ip"], "--reason", "r", "--json")
    (erased,) = json.loads(result.stdout)
    assert sorted(erased["erased"]) == sorted([tokens["ip"], new_ip])
    code, shown = vault.reveal_json(new_ip)
    assert code == 1 and shown[0]["error"] == "not in the vault (never sealed, or erased)"
    # neither token is left anywhere: the row holds the value's marker, the aliases are gone
    assert vault.query("SELECT count(*) FROM pii_token_aliases WHERE field = 'ip'") == [(0,)]
    ((marker,),) = vault.query("SELECT masked_ip FROM user_logins")
    assert marker.startswith("erased:") and marker not in (tokens["ip"], new_ip)
    code, shown = vault.reveal_json(marker)
    assert code == 1 and shown[0]["error"].startswith("erased on")


def test_a_restarted_flow_uses_the_new_key_and_duplicates_still_match(
    tmp_path, database_url: str, sqs: EmbeddedSqs, queue_url: str
) -> None:
    v = make_vault(
        tmp_path,
        database_url,
        SQS_QUEUE_URL=queue_url,
        SQS_ENDPOINT_URL=sqs.endpoint_url,
        LOGINS_STOP_WHEN_IDLE="1",
    )
    login = {"user_id": "u-1", "app_version": "2.3.0", "device_type": "ios", "locale": "US"}

    def send(ip: str, device: str) -> None:
        body = json.dumps({**login, "ip": ip, "device_id": device})
        send_bodies(sqs.client(), queue_url, [body])

    send("192.0.2.1", "d-1")
    send("192.0.2.2", "d-2")
    run(v.config)
    first_key = v.tokenizer.key_id
    assert v.cli("rotate", "new-key").exit_code == 0
    send("192.0.2.1", "d-1b")  # the same ip after the restart
    run(v.config)  # a restart: the flow reads the key file again
    keys = v.query("SELECT split_part(masked_ip, '.', 1) FROM user_logins ORDER BY sent_at")
    assert [k for (k,) in keys] == [first_key, first_key, v.tokenizer.key_id]
    rotated = v.cli(
        "rotate", "run", "--reason", "r", "--private-key-file", str(v.keys["vault.key"])
    )
    assert rotated.exit_code == 0, rotated.output
    assert v.query(
        "SELECT count(DISTINCT masked_ip), count(DISTINCT masked_ip_current)"
        " FROM user_logins_unified"
    ) == [(3, 2)]
    # the entry the restarted flow sealed for the new token is kept (ON CONFLICT DO NOTHING)
    assert v.query("SELECT count(*) FROM pii_vault WHERE field = 'ip'") == [(4,)]


def test_rekey_reseals_the_vault_and_rejected_bodies_resumably(vault: Vault, tmp_path) -> None:
    logins(vault, 12)
    rejected = [vault.add_rejected(f'{{"ip": "198.51.100.{i}"}}') for i in range(5)]
    new = generate_keys(tmp_path / "new")
    old_id = vault.opener.key_id
    with vault.connect() as conn, pytest.raises(Interrupted):
        rekey(
            conn,
            vault.config,
            old=vault.opener,
            new_public=Opener(load_vault_private_key(new["vault.key"])).public_key,
            reason="new vault key",
            note="ops",
            batch_size=5,
            progress=interrupt_after(2),
        )
    assert vault.query("SELECT count(*) FROM pii_vault WHERE vault_key_id = %s", old_id) == [(14,)]

    result = vault.cli(
        "vault", "rekey", "--old-private-key-file", str(vault.keys["vault.key"]),
        "--new-public-key-file", str(new["vault.pub"]), "--reason", "new vault key", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["vault_rekeyed"], summary["rejected_rekeyed"]) == (14, 5)
    assert "rekey: rows re-sealed: 19/19 done in" in result.stderr  # progress, not a tty
    assert (summary["remaining_vault"], summary["remaining_rejected"]) == (0, 0)

    old_key = vault.cli(
        "reveal",
        "--user-id",
        "u-1",
        "--reason",
        "r",
        "--private-key-file",
        str(vault.keys["vault.key"]),
    )
    assert old_key.exit_code == 1 and "(a vault rekey in progress? use that key)" in old_key.stdout
    new_key = vault.cli(
        "reveal", "--user-id", "u-1", "--reason", "r", "--private-key-file", str(new["vault.key"]),
        "--json",
    )  # fmt: skip
    assert new_key.exit_code == 0, new_key.output
    assert {r["value"] for r in json.loads(new_key.stdout)} == {"192.0.2.1", "001-00-0000"}
    opener = Opener(load_vault_private_key(new["vault.key"]))
    bodies = {
        opener.open_rejected(bytes(s), message_id=m)
        for m, s in vault.query(
            "SELECT message_id, sealed_body FROM user_logins_rejected WHERE message_id = ANY(%s)",
            rejected,
        )
    }
    assert bodies == {f'{{"ip": "198.51.100.{i}"}}' for i in range(5)}
    status = json.loads(vault.cli("vault", "status", "--json").stdout)
    assert set(k.split("/")[1] for k in status["entries_by_keys"]) == {opener.key_id}
    assert status["rejected_by_vault_key"] == {opener.key_id: 5}
    phases = vault.query(
        "SELECT action, detail->>'phase', succeeded FROM pii_audit"
        " WHERE action = 'rekey' ORDER BY id"
    )
    ends = [p for p in phases if p[1] != "batch"]
    assert ends == [("rekey", "start", 0), ("rekey", "start", 0), ("rekey", "done", 19)]
    # each batch wrote its own row, in its transaction, with what it changed: those of the
    # interrupted first run too
    assert sum(n for _, phase, n in phases if phase == "batch") >= 19


def test_a_value_erased_while_a_rotation_batch_waits_does_not_come_back(vault: Vault) -> None:
    """`forget` holds the erasure lock and has deleted the old entry; the rotation batch that
    already opened the value waits for it (tried again when the wait runs out), then finds
    the entry gone and writes nothing."""
    from logins.pii.rotation import _rotate_call, _Run

    (tokens,) = logins(vault, 1)
    vault.cli("rotate", "new-key")
    new_ip = vault.tokenizer.token("ip", "192.0.2.0")
    sealed = vault.sealer.seal("ip", new_ip, "192.0.2.0")
    written: list[int] = []
    with vault.connect() as conn:  # the run's start row: it declares the new token key
        _rotate_call(_Run(conn, vault.config, "yearly", None),
                     {"phase": "start", "to_token_key": vault.tokenizer.key_id})  # fmt: skip
    with vault.connect() as eraser:
        with eraser.transaction():
            eraser.execute("SELECT pii_forget(%s, '{}', 'erasure', NULL, '{}')", ([tokens["ip"]],))

            def rotate_batch() -> None:
                with vault.connect() as conn:
                    written.append(
                        _rotate_call(
                            _Run(conn, vault.config, "yearly", None),
                            {"phase": "batch"},
                            old=[tokens["ip"]],
                            new=[new_ip],
                            sealed=[sealed],
                            key_ids=[vault.sealer.key_id],
                        )
                    )

            worker = threading.Thread(target=rotate_batch)
            worker.start()
            worker.join(4.0)  # longer than the lock's 3 s wait: the batch is tried again
            assert worker.is_alive()  # waiting for the erasure to commit
        worker.join(10)
    assert written == [0]
    assert vault.query("SELECT count(*) FROM pii_vault WHERE field = 'ip'") == [(0,)]
    assert vault.query("SELECT count(*) FROM pii_token_aliases") == [(0,)]
