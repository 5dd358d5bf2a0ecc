"""Tokens are deterministic and keyed; the vault round-trips and detects swapped entries."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logins.keys import (
    KeyFileError,
    TokenKey,
    generate_keys,
    load_token_keys,
    load_vault_private_key,
    load_vault_public_key,
)
from logins.tokens import Tokenizer
from logins.vault import Opener, Sealer, VaultError

KEY_A = TokenKey("aaaa1111", b"\x01" * 32)
KEY_B = TokenKey("bbbb2222", b"\x02" * 32)


def test_tokens_are_deterministic_keyed_and_carry_the_key_id() -> None:
    a, b = Tokenizer([KEY_A]), Tokenizer([KEY_B])
    assert a.token("ip", "1.2.3.4") == a.token("ip", "1.2.3.4")
    assert a.token("ip", "1.2.3.4") != b.token("ip", "1.2.3.4")
    assert a.token("ip", "1.2.3.4").startswith("aaaa1111.")
    assert a.token("ip", "x") != a.token("device_id", "x")  # the field is part of the token
    assert "1.2.3.4" not in a.token("ip", "1.2.3.4")


def test_verify_uses_the_key_the_token_names() -> None:
    old_token = Tokenizer([KEY_A]).token("ip", "1.2.3.4")
    rotated = Tokenizer([KEY_B, KEY_A])  # B active, A still known
    assert rotated.token("ip", "1.2.3.4").startswith("bbbb2222.")
    assert rotated.verify(old_token, "ip", "1.2.3.4")
    assert not rotated.verify(old_token, "ip", "1.2.3.5")
    assert not Tokenizer([KEY_B]).verify(old_token, "ip", "1.2.3.4")


@settings(max_examples=200)
@given(st.text())
def test_vault_round_trips_any_text(value: str) -> None:
    keys = _keys()
    token = keys.tokenizer.token("device_id", value)
    sealed = keys.sealer.seal("device_id", token, value)
    assert keys.opener.open(sealed, field="device_id", token=token) == value


def test_a_swapped_ciphertext_is_detected() -> None:
    keys = _keys()
    t1, t2 = keys.tokenizer.token("ip", "1.1.1.1"), keys.tokenizer.token("ip", "2.2.2.2")
    sealed_for_t1 = keys.sealer.seal("ip", t1, "1.1.1.1")
    with pytest.raises(VaultError, match="sealed for another token"):
        keys.opener.open(sealed_for_t1, field="ip", token=t2)


def test_another_private_key_cannot_open(tmp_path: Path) -> None:
    keys = _keys()
    other = Opener(load_vault_private_key(generate_keys(tmp_path / "other")["vault.key"]))
    sealed = keys.sealer.seal("ip", "t", "1.1.1.1")
    with pytest.raises(VaultError, match="cannot open"):
        other.open(sealed, field="ip", token="t")


def test_rejected_bodies_are_bound_to_their_message() -> None:
    keys = _keys()
    sealed = keys.sealer.seal_rejected("m-1", '{"ip": "1.2.3.4"')
    assert keys.opener.open_rejected(sealed, message_id="m-1") == '{"ip": "1.2.3.4"'
    with pytest.raises(VaultError):
        keys.opener.open_rejected(sealed, message_id="m-2")


def test_keygen_refuses_to_overwrite_and_protects_secrets(tmp_path: Path) -> None:
    paths = generate_keys(tmp_path / "k")
    assert paths["token.key"].stat().st_mode & 0o077 == 0
    assert paths["vault.key"].stat().st_mode & 0o077 == 0
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_keys(tmp_path / "k")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("", "holds no key"),
        ("justonefield\n", "line 1"),
        ("k1 bm90IDMyIGJ5dGVz\n", "must be 32 bytes"),
    ],
)
def test_bad_key_files_are_named_not_printed(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "token.key"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KeyFileError, match=message) as info:
        load_token_keys(path)
    assert str(path) in str(info.value)


def test_public_and_private_key_ids_must_match(tmp_path: Path) -> None:
    one, two = generate_keys(tmp_path / "a"), generate_keys(tmp_path / "b")
    mixed = tmp_path / "mixed.pub"
    key_id = one["vault.pub"].read_text().split()[0]
    mixed.write_text(f"{key_id} {two['vault.pub'].read_text().split()[1]}\n")
    with pytest.raises(KeyFileError, match="key id does not match"):
        load_vault_public_key(mixed)


class _Keys:
    def __init__(self, directory: Path) -> None:
        paths = generate_keys(directory)
        self.tokenizer = Tokenizer(load_token_keys(paths["token.key"]))
        self.sealer = Sealer(load_vault_public_key(paths["vault.pub"]))
        self.opener = Opener(load_vault_private_key(paths["vault.key"]))


_CACHE: dict[str, _Keys] = {}


def _keys() -> _Keys:
    if "k" not in _CACHE:
        import tempfile

        _CACHE["k"] = _Keys(Path(tempfile.mkdtemp()) / "keys")
    return _CACHE["k"]
