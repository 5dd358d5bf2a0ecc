"""The sealed format: it pads to buckets (a ciphertext's length does not tell an IPv4
from an IPv6 address), formats 2 and 1 still open, and a malformed entry is a VaultError for
that entry, never a crash."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logins.core.keys import generate_keys, load_token_keys, load_vault_private_key
from logins.core.keys import load_vault_public_key as load_public
from logins.core.tokens import Tokenizer
from logins.core.vault import MIN_BUCKET, Opener, Sealer, VaultError, pad, unpad
from tests.helpers import seal_raw

IPS = [
    "0.0.0.0",
    "1.2.3.4",
    "255.255.255.255",
    "::1",
    "2001:db8::1",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "::ffff:255.255.255.255",
    "fe80::1%" + "e" * 56,  # a scoped address at the validate step's 64-character limit
]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_keys(tmp_path_factory.mktemp("vault") / "k")


def test_an_ipv4_and_an_ipv6_value_seal_to_the_same_length(keys: dict[str, Path]) -> None:
    tokenizer = Tokenizer(load_token_keys(keys["token.key"]))
    sealer = Sealer(load_public(keys["vault.pub"]))
    assert len(IPS[-1]) == 64
    for ip in IPS:
        ipaddress.ip_address(ip)  # each is an address the validate step accepts
    lengths = set()
    for batch in (sealer.batch(), sealer.batch()):
        for ip in IPS:
            lengths.add(len(batch.seal("ip", tokenizer.token("ip", ip), ip)))
    assert len(lengths) == 1  # 4 + 80 + 24 + 16 + 128
    assert lengths == {4 + 80 + 24 + 16 + MIN_BUCKET}
    opener = Opener(load_vault_private_key(keys["vault.key"]))
    for ip in IPS:
        token = tokenizer.token("ip", ip)
        assert opener.open(sealer.seal("ip", token, ip), field="ip", token=token) == ip


def test_longer_values_show_only_their_bucket(keys: dict[str, Path]) -> None:
    sealer = Sealer(load_public(keys["vault.pub"]))
    token = Tokenizer(load_token_keys(keys["token.key"])).token("device_id", "x")
    assert len(token) == 41  # an 8-character key id
    sizes = {n: len(sealer.seal("device_id", token, "d" * n)) for n in (1, 75, 76, 203, 204)}
    assert sizes == {1: 252, 75: 252, 76: 380, 203: 380, 204: 636}  # 124 + the bucket
    message_id = "6d9f8e0a-1b2c-4d3e-8f4a-5b6c7d8e9f00"
    bodies = {n: len(sealer.seal_rejected(message_id, "x" * n)) for n in (10, 5000, 9000)}
    assert bodies == {10: 252, 5000: 8316, 9000: 16508}


@given(st.binary(max_size=2000))
def test_padding_round_trips_and_is_a_power_of_two(data: bytes) -> None:
    padded = pad(data)
    assert len(padded) >= MIN_BUCKET and len(padded) & (len(padded) - 1) == 0
    assert len(padded) > len(data)
    assert unpad(padded) == data


@pytest.mark.parametrize(
    ("sealed_data", "message"),
    [
        (b"ip-and-no-separators", "malformed (no field and token in it)"),
        (b"ip\x00only-one-separator", "malformed (no field and token in it)"),
        (b"ip\x00k1.t\x00\xff\xfe not utf-8", "malformed (not UTF-8)"),
    ],
)
def test_a_malformed_entry_is_a_vault_error(
    keys: dict[str, Path], sealed_data: bytes, message: str
) -> None:
    opener = Opener(load_vault_private_key(keys["vault.key"]))
    sealed = seal_raw(load_public(keys["vault.pub"]), sealed_data)
    with pytest.raises(VaultError, match=re.escape(f"token k1.t: the vault entry is {message}")):
        opener.open(sealed, field="ip", token="k1.t")
    with pytest.raises(VaultError, match=re.escape(f"message m: the vault entry is {message}")):
        opener.open_rejected(sealed, message_id="m")


@pytest.mark.parametrize(
    "sealed", [b"", b"LV1\x00short", b"\x00" * 200, b"LV1\x00" + b"\x01" * 300], ids=repr
)
def test_bad_ciphertext_is_a_vault_error(keys: dict[str, Path], sealed: bytes) -> None:
    opener = Opener(load_vault_private_key(keys["vault.key"]))
    with pytest.raises(VaultError, match=r"^token k1\.t: (cannot open|the vault entry is)"):
        opener.open(sealed, field="ip", token="k1.t")


def test_bad_padding_is_a_vault_error(keys: dict[str, Path]) -> None:
    opener = Opener(load_vault_private_key(keys["vault.key"]))
    unpadded = seal_raw(load_public(keys["vault.pub"]), b"ip\x00k1.t\x00v", padded=False)
    with pytest.raises(VaultError, match=r"malformed \(bad ciphertext\)"):
        opener.open(unpadded, field="ip", token="k1.t")
