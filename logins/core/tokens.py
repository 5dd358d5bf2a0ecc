"""Keyed deterministic tokens: equal values give equal tokens, so analysts still see repeats,
but without the key nobody can test a guess (unlike SHA-256 of an IPv4 address, which is
reversed by enumerating 2^32 values).

A token is `<key_id>.<32 hex>`: the key id lets keys rotate while old tokens stay readable;
the 32 hex are the first 16 bytes of HMAC-SHA256 of `field NUL value` (UTF-8), so an ip and a
device id with the same text differ. The key is a key file's (`logins keygen`) or an AWS KMS
HMAC_256 key's (`logins.core.kms`: GenerateMac, the secret never leaves KMS); the same material
gives the same tokens in either custody.

Whoever can compute a token key's MAC can enumerate low-entropy values (every IPv4 address,
every `NNN-NN-NNNN` device id) and match them against the tables: with a key file, offline
and unseen; with a KMS key, only by calling KMS, once per guess, each call in its log.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Protocol

from logins.core.keys import HMAC_SHA256, TokenAlgorithm, TokenKey

DIGEST_BYTES = 16
TOKEN_RE = re.compile(r"[A-Za-z0-9]+\.[0-9a-f]{32}")


def is_token(text: str) -> bool:
    """True if `text` has a token's shape, `<key_id>.<32 hex>` (says nothing about its key)."""
    return TOKEN_RE.fullmatch(text) is not None


def key_id_of(token: str) -> str:
    return token.split(".", 1)[0]


def token_input(field: str, value: str) -> bytes:
    """What a token MACs: `field NUL value`; surrogatepass, so any str has a token."""
    return field.encode() + b"\x00" + value.encode("utf-8", "surrogatepass")


class MacKey(Protocol):
    """A token key as the tokenizer uses it; its secret may be elsewhere (KMS)."""

    @property
    def key_id(self) -> str: ...

    @property
    def algorithm(self) -> TokenAlgorithm: ...

    @property
    def custody(self) -> str:
        """Where the secret is, for messages: `file` or `kms <key id>`."""
        ...

    def token_digests(self, messages: Sequence[bytes]) -> list[bytes]:
        """The 16-byte token digest of each message, in order."""
        ...


_SHA256_BLOCK = 64


def _hmac_pads(secret: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """SHA-256 states after HMAC's inner and outer key pads (RFC 2104), to copy per message."""
    if len(secret) > _SHA256_BLOCK:
        secret = hashlib.sha256(secret).digest()
    key = secret.ljust(_SHA256_BLOCK, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner, outer


class LocalKey:
    """A token key held in this process (a key file): its holder can compute any token."""

    custody = "file"
    algorithm: TokenAlgorithm = HMAC_SHA256

    def __init__(self, key: TokenKey) -> None:
        self.key_id = key.key_id
        self._pads = _hmac_pads(key.secret)

    def token_digests(self, messages: Sequence[bytes]) -> list[bytes]:
        # HMAC-SHA256 from the key's inner and outer states, hashed once (RFC 2104): the same
        # digests as hmac.digest, without its key setup per message (~2.6 -> ~1.4 µs each).
        inner, outer = self._pads
        out = []
        for message in messages:
            h = inner.copy()
            h.update(message)
            o = outer.copy()
            o.update(h.digest())
            out.append(o.digest()[:DIGEST_BYTES])
        return out

    def __repr__(self) -> str:
        return f"LocalKey({self.key_id!r})"


class Tokenizer:
    """Tokens under the active key (the first); verification under every key given."""

    def __init__(self, keys: Sequence[TokenKey | MacKey]) -> None:
        if not keys:
            raise ValueError("at least one token key is needed")
        macs = [LocalKey(k) if isinstance(k, TokenKey) else k for k in keys]
        self._keys: dict[str, MacKey] = {}
        for key in macs:
            if key.key_id in self._keys:
                raise ValueError(f"two token keys share the id {key.key_id!r}")
            self._keys[key.key_id] = key
        self._active = macs[0]

    @property
    def key_id(self) -> str:
        return self._active.key_id

    @property
    def key_ids(self) -> list[str]:
        """Every key id this tokenizer knows, the active one first."""
        return list(self._keys)

    @property
    def active(self) -> MacKey:
        return self._active

    def token(self, field: str, value: str) -> str:
        return self.tokens([(field, value)])[0]

    def tokens(self, pairs: Sequence[tuple[str, str]]) -> list[str]:
        """The token of each (field, value) under the active key, in one batch."""
        # token_input, inline: the field names are config identifiers (UTF-8 either way)
        data = [f"{f}\x00{v}".encode("utf-8", "surrogatepass") for f, v in pairs]
        return self._under(self._active, data)

    def tokens_all_keys(self, field: str, value: str) -> list[str]:
        """The value's token under every known key, the active key's first (for lookups
        that must also find rows written before a rotation)."""
        data = [token_input(field, value)]
        return [self._under(key, data)[0] for key in self._keys.values()]

    def verify(self, token: str, field: str, value: str) -> bool:
        """True if `token` is the token of `value` under the key its id names."""
        return self.verify_many([(token, field, value)])[0]

    def verify_many(self, items: Sequence[tuple[str, str, str]]) -> list[bool]:
        """`verify` for many (token, field, value), one batch per key."""
        results = [False] * len(items)
        by_key: dict[str, list[int]] = {}
        for i, (token, _, _) in enumerate(items):
            if key_id_of(token) in self._keys:
                by_key.setdefault(key_id_of(token), []).append(i)
        for key_id, where in by_key.items():
            data = [token_input(items[i][1], items[i][2]) for i in where]
            for i, token in zip(where, self._under(self._keys[key_id], data), strict=True):
                results[i] = hmac.compare_digest(token, items[i][0])
        return results

    @staticmethod
    def _under(key: MacKey, data: list[bytes]) -> list[str]:
        prefix = key.key_id + "."
        return [prefix + d.hex() for d in key.token_digests(data)]
