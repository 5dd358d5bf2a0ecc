"""A rejected body that `forget --user-id` cannot open is never skipped in silence (red team
finding 5, tests/attack/test_db_attacks.py::test_rotator_hides_a_rejected_body_from_forget_user
on `attack`): the victim's body re-sealed to the same vault key for another message id, and
one whose ciphertext is corrupted, are counted and named, and the command exits 1 after
committing what it could erase (real PostgreSQL, the CLI a user runs)."""

from __future__ import annotations

import json

from tests.integration.vaultkit import Vault, vault

__all__ = ["vault"]

KEY = "--private-key-file"


def test_forget_reports_the_rejected_bodies_it_cannot_open_and_exits_1(vault: Vault) -> None:
    vault.add_login("hidden-u", "203.0.113.69", "x-1")
    body = json.dumps({"user_id": "hidden-u", "ip": "203.0.113.69", "device_id": "x-1"})
    resealed = vault.add_rejected(body)
    corrupted = vault.add_rejected(body)
    opened = vault.add_rejected(body)
    stranger = vault.add_rejected('{"user_id": "someone-else"}')
    with vault.connect() as conn:  # as the red team's rotator did, through pii_rekey
        conn.execute(
            "UPDATE user_logins_rejected SET sealed_body = %s WHERE message_id = %s",
            (vault.sealer.seal_rejected("m-other", body), resealed),
        )
        conn.execute(
            "UPDATE user_logins_rejected SET sealed_body = substr(sealed_body, 1, 40) || '\\x00'"
            " WHERE message_id = %s",
            (corrupted,),
        )
    args = ("forget", "--user-id", "hidden-u", "--reason", "r", KEY, str(vault.keys["vault.key"]))

    dry = vault.cli(*args, "--dry-run")
    assert dry.exit_code == 1, dry.output
    assert "2 rejected bodies could not be opened, so were not searched" in dry.stdout

    done = vault.cli(*args, "--json")
    assert done.exit_code == 1, done.output
    (result,) = json.loads(done.stdout)
    assert sorted(result["rejected_unopened"]) == sorted([resealed, corrupted])
    assert result["rejected_erased"] == [opened]  # what it could open is erased, committed
    assert result["audit_id"] is not None
    left = dict(
        vault.query("SELECT message_id, octet_length(sealed_body) > 0 FROM user_logins_rejected")
    )
    assert left == {resealed: True, corrupted: True, opened: False, stranger: True}

    again = vault.cli(*args)  # still there: said again, still exit 1
    assert again.exit_code == 1, again.output
    line = next(x for x in again.stdout.splitlines() if "could not be opened" in x)
    assert line.startswith("2 rejected bodies could not be opened, so were not searched")
    assert resealed in line and corrupted in line
    assert "203.0.113.69" not in again.output  # no body text printed


def test_forget_without_unopenable_bodies_exits_0(vault: Vault) -> None:
    vault.add_login("u-1", "192.0.2.10", "d-1")
    vault.add_rejected('{"user_id": "u-1"}')
    done = vault.cli(
        "forget", "--user-id", "u-1", "--reason", "r", KEY, str(vault.keys["vault.key"]), "--json"
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)[0]["rejected_unopened"] == []
