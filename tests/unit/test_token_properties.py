"""Properties of the tokens (hypothesis): deterministic, key-dependent, collision-free over a
large sample, the same in another process, and verifiable under every key of a rotation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from logins.core.keys import TokenKey, generate_token_key, load_token_keys
from logins.core.tokens import Tokenizer, is_token, key_id_of
from tests.helpers import REPO

FIELDS = st.sampled_from(["ip", "device_id", "user_id"])
KEYS = st.builds(
    TokenKey,
    key_id=st.text("abcdef0123456789", min_size=8, max_size=8),
    secret=st.binary(min_size=32, max_size=32),
)
# Every str, including lone surrogates (bytes that are not UTF-8 reach the vault too).
VALUES = st.text(st.characters(exclude_categories=()), max_size=300)


@given(KEYS, FIELDS, VALUES)
def test_deterministic_well_formed_and_verifiable(key: TokenKey, field: str, value: str) -> None:
    first, again = Tokenizer([key]), Tokenizer([key])
    token = first.token(field, value)
    assert token == first.token(field, value) == again.token(field, value)
    assert is_token(token) and key_id_of(token) == key.key_id
    assert first.verify(token, field, value)


@given(KEYS, KEYS, FIELDS, VALUES)
def test_another_key_gives_another_token(a: TokenKey, b: TokenKey, field: str, value: str) -> None:
    assume(a.secret != b.secret)
    token_a = Tokenizer([a]).token(field, value)
    token_b = Tokenizer([b]).token(field, value)
    assert token_a.split(".")[1] != token_b.split(".")[1]
    assert not Tokenizer([b]).verify(token_a, field, value) or a.key_id != b.key_id


@given(KEYS, FIELDS, VALUES, VALUES)
def test_different_values_or_fields_give_different_tokens(
    key: TokenKey, field: str, v1: str, v2: str
) -> None:
    tokenizer = Tokenizer([key])
    if v1 != v2:
        assert tokenizer.token(field, v1) != tokenizer.token(field, v2)
        assert not tokenizer.verify(tokenizer.token(field, v1), field, v2)
    other = "device_id" if field == "ip" else "ip"
    assert tokenizer.token(field, v1) != tokenizer.token(other, v1)


@settings(max_examples=50)
@given(st.lists(KEYS, min_size=2, max_size=4, unique_by=lambda k: k.key_id), FIELDS, VALUES)
def test_after_a_rotation_every_key_still_verifies_its_tokens(
    keys: list[TokenKey], field: str, value: str
) -> None:
    rotated = Tokenizer(keys)
    for key, token in zip(keys, rotated.tokens_all_keys(field, value), strict=True):
        assert token == Tokenizer([key]).token(field, value)
        assert rotated.verify(token, field, value)
    assert rotated.token(field, value) == rotated.tokens_all_keys(field, value)[0]


def test_unicode_is_tokenised_as_sent_not_normalised() -> None:
    """'é' composed and decomposed are different strings, so different tokens: the token
    is of the exact value the producer sent (documented in docs/vault.md)."""
    tokenizer = Tokenizer([TokenKey("k1", b"\x07" * 32)])
    assert tokenizer.token("device_id", "\u00e9") != tokenizer.token("device_id", "e\u0301")


def test_no_collisions_in_200k_distinct_values_per_field() -> None:
    tokenizer = Tokenizer([TokenKey("k1", b"\x11" * 32)])
    ips = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(200_000)]
    devices = [
        f"{i // 1_000_000:03d}-{i // 10_000 % 100:02d}-{i % 10_000:04d}" for i in range(200_000)
    ]
    tokens = {tokenizer.token("ip", v) for v in ips} | {
        tokenizer.token("device_id", v) for v in devices
    }
    assert len(set(ips)) == len(set(devices)) == 200_000
    assert len(tokens) == 400_000
    digests = {t.split(".")[1] for t in tokens}
    assert len(digests) == 400_000
    assert len({d[:12] for d in digests}) == 400_000  # even 48 bits of each are distinct


_CHILD = """
import json, sys
from pathlib import Path
from logins.core.keys import load_token_keys
from logins.core.tokens import Tokenizer
tokenizer = Tokenizer(load_token_keys(Path(sys.argv[1])))
values = json.load(sys.stdin)
json.dump([tokenizer.token(f, v) for f, v in values], sys.stdout)
"""


def test_the_same_tokens_in_another_process(tmp_path: Path) -> None:
    """Nothing process-local (hash seed, dict order, locale) goes into a token."""
    key_file = generate_token_key(tmp_path)
    tokenizer = Tokenizer(load_token_keys(key_file))
    values = [("ip", f"192.0.2.{i}") for i in range(256)] + [
        ("device_id", v) for v in ["é", "e\u0301", "日本", "😀", " ", "\t", "a\\b", '"', "x" * 256]
    ]
    expected = [tokenizer.token(f, v) for f, v in values]
    for seed in ("0", "12345"):
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(key_file)],
            input=json.dumps(values),
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": seed, "LC_ALL": "C"},
            check=True,
            timeout=60,
        )
        assert json.loads(child.stdout) == expected
