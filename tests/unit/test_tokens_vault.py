"""Tokens are deterministic and keyed; the vault round-trips and detects swapped entries."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logins.core.keys import (
    KeyFileError,
    TokenKey,
    generate_keys,
    hmac_key_id,
    load_token_keys,
    load_vault_private_key,
    load_vault_public_key,
)
from logins.core.tokens import DIGEST_BYTES, LocalKey, Tokenizer
from logins.core.vault import MAGIC, Opener, Sealer, VaultError

KEY_A = TokenKey("aaaa1111", b"\x01" * 32)
KEY_B = TokenKey("bbbb2222", b"\x02" * 32)
ZEROS_ID = hmac_key_id(bytes(32))  # the id of the key `'A' * 43 + '='` decodes to


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
        ("k1 hmac-sha256 bm90IDMyIGJ5dGVz\n", "line 1: the key must be 32 bytes"),
        (f"deadbeef hmac-sha256 {'A' * 43}=\n", "line 1: the key id does not match the key"),
        (f"deadbeef sha1 {'A' * 43}=\n", "line 1: the second field must be 'hmac-sha256'"),
        (f"{ZEROS_ID} hmac-sha256 {'A' * 43}=\n" * 2, "two keys share an id"),
        ("k1 hmac-sha256 not*base64\n", "line 1 is not valid base64"),
    ],
)
def test_bad_key_files_are_named_not_printed(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "token.key"
    if content is not None:
        path.write_text(content)
        path.chmod(0o600)
    with pytest.raises(KeyFileError, match=message) as info:
        load_token_keys(path)
    assert str(path) in str(info.value)
    assert "A" * 43 not in str(info.value)  # never the key


def _refused(path: Path, load: Callable[[Path], object], mode: int) -> None:
    with pytest.raises(KeyFileError) as info:
        load(path)
    assert str(info.value).endswith(f"(mode {mode:04o}); a secret must be readable by its"
                                    f" owner only: chmod 600 {path}")  # fmt: skip


@pytest.mark.parametrize("mode", [0o604, 0o644, 0o606, 0o440 | 0o004])
def test_secret_files_others_may_read_are_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    paths = generate_keys(tmp_path / "k")
    for name, load in (("token.key", load_token_keys), ("vault.key", load_vault_private_key)):
        paths[name].chmod(mode)
        _refused(paths[name], load, mode)
        paths[name].chmod(0o600)
        assert load(paths[name])  # the fix it names works
    paths["vault.pub"].chmod(0o644)  # public: no check
    assert load_vault_public_key(paths["vault.pub"])


class _Group:
    def __init__(self, members: list[str]) -> None:
        self.gr_mem = members


@pytest.mark.parametrize("mode", [0o640, 0o660, 0o440])
def test_a_group_may_read_a_secret_only_if_it_is_the_process_own_and_alone(
    tmp_path: Path, mode: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kubernetes mounts a Secret as root:fsGroup, mode 0440, for the pod's user to read: a
    group of one. A group that another account is in (`staff`, `users`) may not read it."""
    import grp
    import os
    import pwd

    paths = generate_keys(tmp_path / "k")
    key = paths["token.key"]
    key.chmod(mode)
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert key.stat().st_gid == os.getegid()  # created with the process's own group
    ours = pwd.getpwuid(os.geteuid())
    monkeypatch.setattr(pwd, "getpwall", lambda: [ours])  # the only account with our group
    monkeypatch.setattr(grp, "getgrgid", lambda gid: _Group([me]))
    assert load_token_keys(key)  # our group, nobody else in it: read
    monkeypatch.setattr(grp, "getgrgid", lambda gid: _Group([me, "someone-else"]))
    _refused(key, load_token_keys, mode)  # a shared group
    monkeypatch.setattr(grp, "getgrgid", lambda gid: _Group([]))
    monkeypatch.setattr(os, "getegid", lambda: key.stat().st_gid + 1)
    _refused(key, load_token_keys, mode)  # not the process's own group


def test_keygen_writes_hmac_keys_whose_id_is_derived_from_the_material(tmp_path: Path) -> None:
    import base64
    import hmac

    line = generate_keys(tmp_path / "k")["token.key"].read_text().split()
    assert line[1] == "hmac-sha256"
    secret = base64.b64decode(line[2])
    assert line[0] == hmac.digest(secret, b"token-key-id", "sha256")[:4].hex()
    (key,) = load_token_keys(tmp_path / "k" / "token.key")
    assert Tokenizer([key]).active.algorithm == "hmac-sha256"
    digest = hmac.digest(secret, b"ip\x001.2.3.4", "sha256")[:16].hex()
    assert Tokenizer([key]).token("ip", "1.2.3.4") == f"{line[0]}.{digest}"  # HMAC-SHA256/128


def test_a_key_line_without_its_algorithm_is_refused_naming_file_and_line(
    tmp_path: Path,
) -> None:
    """HMAC-SHA256 is the only token key: a `<id> <base64>` line is a malformed line."""
    import base64

    path = tmp_path / "token.key"
    good = generate_keys(tmp_path / "k")["token.key"].read_text()
    path.write_text(f"{good}# an older form\naaaa1111 {base64.b64encode(KEY_A.secret).decode()}\n")
    path.chmod(0o600)
    expected = f"token key file {path}: line 3 is not '<key_id> hmac-sha256 <base64>'"
    with pytest.raises(KeyFileError) as refused:
        load_token_keys(path)
    assert str(refused.value) == expected
    assert base64.b64encode(KEY_A.secret).decode() not in str(refused.value)


def test_public_and_private_key_ids_must_match(tmp_path: Path) -> None:
    one, two = generate_keys(tmp_path / "a"), generate_keys(tmp_path / "b")
    mixed = tmp_path / "mixed.pub"
    key_id = one["vault.pub"].read_text().split()[0]
    mixed.write_text(f"{key_id} {two['vault.pub'].read_text().split()[1]}\n")
    with pytest.raises(KeyFileError, match="key id does not match"):
        load_vault_public_key(mixed)


class _Keys:
    def __init__(self, directory: Path) -> None:
        paths = self.paths = generate_keys(directory)
        self.opener_key = load_vault_private_key(paths["vault.key"])
        self.tokenizer = Tokenizer(load_token_keys(paths["token.key"]))
        self.sealer = Sealer(load_vault_public_key(paths["vault.pub"]))
        self.opener = Opener(load_vault_private_key(paths["vault.key"]))


_CACHE: dict[str, _Keys] = {}


def _keys() -> _Keys:
    if "k" not in _CACHE:
        import tempfile

        _CACHE["k"] = _Keys(Path(tempfile.mkdtemp()) / "keys")
    return _CACHE["k"]


def test_a_batch_seals_its_data_key_once_and_each_value_opens_alone() -> None:
    keys = _keys()
    values = [f"10.0.{i // 250}.{i % 250}" for i in range(600)]
    tokens = [keys.tokenizer.token("ip", v) for v in values]
    batch = keys.sealer.batch()
    sealed = [batch.seal("ip", t, v) for t, v in zip(tokens, values, strict=True)]
    body = batch.seal_rejected("m-9", "not json")
    header = len(MAGIC) + 80  # the sealed data key, shared by the batch
    assert {s[:header] for s in [*sealed, body]} == {sealed[0][:header]}
    assert len({s[header : header + 24] for s in [*sealed, body]}) == 601  # no nonce twice
    assert keys.sealer.batch().seal("ip", tokens[0], values[0])[:header] != sealed[0][:header]
    fresh = Opener(keys.opener_key)  # opens each entry on its own, in any order
    for i in (599, 0, 313):
        assert fresh.open(sealed[i], field="ip", token=tokens[i]) == values[i]
    assert fresh.open_rejected(body, message_id="m-9") == "not json"


def test_a_tampered_or_recombined_entry_does_not_open() -> None:
    keys = _keys()
    a, b = keys.sealer.batch(), keys.sealer.batch()
    token = keys.tokenizer.token("ip", "1.2.3.4")
    sealed = a.seal("ip", token, "1.2.3.4")
    other = b.seal("ip", token, "1.2.3.4")
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    header = len(MAGIC) + 80
    recombined = other[:header] + sealed[header:]  # another batch's data key
    for bad in (flipped, recombined):
        with pytest.raises(VaultError, match="cannot open"):
            keys.opener.open(bad, field="ip", token=token)


@settings(max_examples=50, deadline=None)
@given(secret=st.binary(min_size=1, max_size=100), messages=st.lists(st.binary(), max_size=5))
def test_local_hmac_digests_are_hmac_sha256(secret: bytes, messages: list[bytes]) -> None:
    """The key's precomputed pads give exactly hmac.digest's digests (any key length)."""
    key = LocalKey(TokenKey("k1", secret))
    assert key.token_digests(messages) == [
        hmac.digest(secret, m, "sha256")[:DIGEST_BYTES] for m in messages
    ]
