"""Keyed deterministic tokens: equal values give equal tokens, so analysts still see repeats,
but without the key nobody can test a guess (unlike SHA-256 of an IPv4 address, which is
reversed by enumerating 2^32 values). Keyed BLAKE2b is as strong as HMAC and faster.

A token is `<key_id>.<32 hex>`: the key id lets keys rotate while old tokens stay readable.
The field name is hashed in, so an ip and a device id with the same text differ.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from logins.keys import TokenKey

DIGEST_BYTES = 16
TOKEN_RE = re.compile(r"[A-Za-z0-9]+\.[0-9a-f]{32}")


def is_token(text: str) -> bool:
    """True if `text` has a token's shape, `<key_id>.<32 hex>` (says nothing about its key)."""
    return TOKEN_RE.fullmatch(text) is not None


def key_id_of(token: str) -> str:
    return token.split(".", 1)[0]


class Tokenizer:
    def __init__(self, keys: Sequence[TokenKey]) -> None:
        if not keys:
            raise ValueError("at least one token key is needed")
        self._keys = {k.key_id: k for k in keys}
        self._active = keys[0]
        # A separate key for dedupe fingerprints, so they are never comparable with tokens.
        self._fingerprint_key = hashlib.blake2b(
            b"dedupe-fingerprint", key=self._active.secret, digest_size=32
        ).digest()

    @property
    def key_id(self) -> str:
        return self._active.key_id

    @property
    def key_ids(self) -> list[str]:
        """Every key id this tokenizer knows, the active one first."""
        return list(self._keys)

    def token(self, field: str, value: str) -> str:
        return self._token(self._active, field, value)

    def tokens_all_keys(self, field: str, value: str) -> list[str]:
        """The value's token under every known key, the active key's first (for lookups
        that must also find rows written before a rotation)."""
        return [self._token(key, field, value) for key in self._keys.values()]

    def verify(self, token: str, field: str, value: str) -> bool:
        """True if `token` is the token of `value` under the key its id names."""
        key = self._keys.get(token.split(".", 1)[0])
        return key is not None and self._token(key, field, value) == token

    def fingerprint(self, values: Sequence[object]) -> bytes:
        """A keyed digest of a whole record, for dedupe state (never holds the raw values)."""
        data = "\x1f".join("\x00" if v is None else str(v) for v in values).encode()
        return hashlib.blake2b(data, key=self._fingerprint_key, digest_size=16).digest()

    @staticmethod
    def _token(key: TokenKey, field: str, value: str) -> str:
        data = field.encode() + b"\x00" + value.encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(data, key=key.secret, digest_size=DIGEST_BYTES).hexdigest()
        return f"{key.key_id}.{digest}"
