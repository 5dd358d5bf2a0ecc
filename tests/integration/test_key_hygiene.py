"""Key hygiene against a real PostgreSQL: the vault public key pinned by its full SHA-256
fingerprint (a swapped vault.pub is refused even when its 32-bit key id matches), and a
malformed vault entry reported for its token while the rest go on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from logins.cli import main
from logins.core import keys as keys_module
from logins.core.keys import generate_keys, load_vault_public_key, vault_fingerprint
from tests.helpers import seal_raw
from tests.integration.vaultkit import Vault, make_vault, vault

__all__ = ["vault"]


def test_keygen_prints_the_fingerprint_that_check_and_status_pin(
    vault: Vault, tmp_path: Path
) -> None:
    made = CliRunner().invoke(main, ["keygen", str(tmp_path / "new")])
    assert made.exit_code == 0, made.output
    printed = re.search(r"vault\.pub fingerprint: (sha256:[0-9a-f]{64})", made.output)
    assert printed is not None
    assert printed[1] == vault_fingerprint(load_vault_public_key(tmp_path / "new" / "vault.pub"))

    ours = vault_fingerprint(load_vault_public_key(vault.keys["vault.pub"]))
    pinned = {"LOGINS_VAULT_PUBLIC_KEY_FINGERPRINT": ours}
    checked = vault.cli("check", **pinned)
    assert checked.exit_code == 0, checked.output
    assert f"({ours}, pinned)" in checked.output
    status = vault.cli("vault", "status", **pinned)
    assert status.exit_code == 0 and f"{ours} (pinned)" in status.output
    as_json = json.loads(vault.cli("vault", "status", "--json", **pinned).stdout)
    assert as_json["vault_public_key"] == {
        "key_id": vault.sealer.key_id, "fingerprint": ours, "pinned": True,
    }  # fmt: skip


def test_a_swapped_vault_pub_is_refused_naming_both_fingerprints(
    vault: Vault, tmp_path: Path
) -> None:
    ours = vault_fingerprint(load_vault_public_key(vault.keys["vault.pub"]))
    theirs = generate_keys(tmp_path / "attacker")["vault.pub"]
    swapped = {"LOGINS_VAULT_PUBLIC_KEY_FILE": str(theirs),
               "LOGINS_VAULT_PUBLIC_KEY_FINGERPRINT": ours}  # fmt: skip
    checked = vault.cli("check", **swapped)
    assert checked.exit_code == 2
    actual = vault_fingerprint(load_vault_public_key(theirs))
    assert (
        f"vault public key file {theirs}: its fingerprint {actual} is not the pinned"
        f" vault.public_key_fingerprint {ours}: refusing to seal to another key"
    ) in checked.output
    assert vault.cli("check", LOGINS_VAULT_PUBLIC_KEY_FILE=str(theirs)).exit_code == 0  # unpinned


def test_a_ground_out_key_id_does_not_pass_the_fingerprint(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attacker ground out a key pair whose 32-bit id equals ours (about 36 core-hours):
    emulated by making every key's id ours. The id check passes; the fingerprint does not."""
    ours = load_vault_public_key(vault.keys["vault.pub"])
    theirs = generate_keys(tmp_path / "attacker")["vault.pub"]
    our_id = vault.sealer.key_id
    theirs.write_text(f"{our_id} {theirs.read_text().split()[1]}\n")
    monkeypatch.setattr(keys_module, "vault_key_id", lambda _public: our_id)
    assert load_vault_public_key(theirs)  # the swap goes unnoticed by the key id alone
    checked = vault.cli(
        "check",
        LOGINS_VAULT_PUBLIC_KEY_FILE=str(theirs),
        LOGINS_VAULT_PUBLIC_KEY_FINGERPRINT=vault_fingerprint(ours),
    )
    assert checked.exit_code == 2 and "is not the pinned vault.public_key_fingerprint" in (
        checked.output
    )


BAD_ENTRIES = {
    "no separators": (b"192.0.2.66", None, "the vault entry is malformed (no field and token"),
    "not UTF-8": (b"ip\x00TOKEN\x00\xc3\x28", None, "the vault entry is malformed (not UTF-8)"),
    "bad ciphertext": (None, b"LV1\x00" + b"\x07" * 200, "cannot open (wrong private key?)"),
}


def _plant(vault: Vault, token: str, kind: str) -> str:
    """Replace the vault entry of `token` by a malformed one; the error reveal should give."""
    data, raw, error = BAD_ENTRIES[kind]
    if raw is None:
        assert data is not None
        public = load_vault_public_key(vault.keys["vault.pub"])
        raw = seal_raw(public, data.replace(b"TOKEN", token.encode()))
    with vault.connect() as conn:
        conn.execute("UPDATE pii_vault SET sealed = %s WHERE token = %s", (raw, token))
    return error


@pytest.mark.parametrize("kind", list(BAD_ENTRIES))
def test_reveal_by_user_reports_a_malformed_entry_and_reveals_the_rest(
    tmp_path: Path, database_url: str, kind: str
) -> None:
    vault = make_vault(tmp_path, database_url)
    tokens = vault.add_login("u-1", "192.0.2.66", "d-66")
    error = _plant(vault, tokens["ip"], kind)
    code, shown = vault.reveal_json("--user-id", "u-1")
    assert code == 1
    by_field = {r["field"]: r for r in shown}
    assert by_field["device_id"]["value"] == "d-66" and by_field["device_id"]["error"] is None
    assert by_field["ip"]["value"] is None and error in by_field["ip"]["error"]
    assert tokens["ip"] in by_field["ip"]["error"]


def test_rotate_run_reports_malformed_entries_and_rotates_the_rest(vault: Vault) -> None:
    planted = [vault.add_login(f"u-{i}", f"192.0.2.{70 + i}", f"d-{i}") for i in range(4)]
    errors = {tokens["ip"]: _plant(vault, tokens["ip"], kind)
              for kind, tokens in zip(BAD_ENTRIES, planted, strict=False)}  # fmt: skip
    assert vault.cli("rotate", "new-key").exit_code == 0
    walked = vault.cli("rotate", "run", "--reason", "r", "--private-key-file",
                       str(vault.keys["vault.key"]), "--json")  # fmt: skip
    assert walked.exit_code == 1 and walked.exception is not None
    assert isinstance(walked.exception, SystemExit)  # reported, not a traceback
    result = json.loads(walked.stdout)
    assert result["failed"] == 3 and result["rotated"] == 8 - 3
    for token, error in errors.items():
        assert any(token in f and error in f for f in result["failures"])
    assert result["remaining"] == 3
