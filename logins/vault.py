"""Sealing original values for the vault (pipeline side) and opening them (reveal side).

The pipeline holds only the public key, so a compromised pipeline cannot unmask anything:
only the private key opens what it sealed. Each value is sealed together with its field and
token and checked on opening, so a ciphertext moved to another token's row is detected.

Envelope encryption (format 2). A sealed box costs two X25519 operations, about 100 µs of
CPU here; sealing each new value in its own box capped the pipeline near 6k msg/s on this
machine (docs/benchmarks.md). So a `SealBatch` makes one random 32-byte data key, seals
that key in a PyNaCl `SealedBox` for the vault's public key (once per batch), and encrypts
each value with XSalsa20-Poly1305 (`crypto_secretbox`, about 1 µs) under the data key with
a counter nonce (a data key is used by one batch only, so a nonce never repeats under a
key). Every vault entry carries its own copy of the sealed data key, so each row opens
alone, and deleting a row (erasure) still destroys that value for good: the other rows of
its batch hold the data key, never this value's ciphertext. The data key is dropped with
the batch; the pipeline keeps nothing that opens an entry.

    format 2:  b"LV2\\x00" | SealedBox(data key) (80 B) | nonce (24 B) | secretbox (16 B + data)
    format 1:  SealedBox(data)  (entries sealed before format 2; still opened)
"""

from __future__ import annotations

import os
from collections import OrderedDict

from nacl.bindings import (
    crypto_secretbox,
    crypto_secretbox_KEYBYTES,
    crypto_secretbox_NONCEBYTES,
    crypto_secretbox_open,
)
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from logins.keys import vault_key_id

SEP = "\x00"
MAGIC = b"LV2\x00"
_SEALED_KEY_BYTES = 32 + crypto_secretbox_KEYBYTES + 16  # ephemeral public key, key, MAC
_HEADER = len(MAGIC) + _SEALED_KEY_BYTES
_MIN_V2 = _HEADER + crypto_secretbox_NONCEBYTES + 16
_OPENED_KEYS = 4096  # data keys an Opener remembers (a batch's entries share one)


class VaultError(Exception):
    """A vault entry that cannot be opened or does not belong where it was found."""


def _value_data(field: str, token: str, value: str) -> bytes:
    # surrogatepass, as the token and opening do: any str the token covers can be sealed
    return f"{field}{SEP}{token}{SEP}{value}".encode("utf-8", "surrogatepass")


def _rejected_data(message_id: str, body: str) -> bytes:
    """A rejected body, bound to its message id; bytes that are not UTF-8 survive."""
    return f"rejected{SEP}{message_id}{SEP}".encode() + body.encode("utf-8", "surrogatepass")


class SealBatch:
    """Seals many values under one fresh data key; use one per batch, then drop it."""

    def __init__(self, box: SealedBox[PublicKey]) -> None:
        self._key = os.urandom(crypto_secretbox_KEYBYTES)
        self._header = MAGIC + bytes(box.encrypt(self._key))
        self._count = 0

    def _seal(self, data: bytes) -> bytes:
        self._count += 1
        nonce = self._count.to_bytes(crypto_secretbox_NONCEBYTES, "big")
        return self._header + nonce + crypto_secretbox(data, nonce, self._key)

    def seal(self, field: str, token: str, value: str) -> bytes:
        return self._seal(_value_data(field, token, value))

    def seal_rejected(self, message_id: str, body: str) -> bytes:
        return self._seal(_rejected_data(message_id, body))


class Sealer:
    def __init__(self, public_key: PublicKey) -> None:
        self._box = SealedBox(public_key)
        self.key_id = vault_key_id(public_key)

    def batch(self) -> SealBatch:
        """A data key for the values of one batch: one sealed box for all of them."""
        return SealBatch(self._box)

    def seal(self, field: str, token: str, value: str) -> bytes:
        """One value under a data key of its own (a sealed box's cost; for a few values)."""
        return self.batch().seal(field, token, value)

    def seal_rejected(self, message_id: str, body: str) -> bytes:
        return self.batch().seal_rejected(message_id, body)


class Opener:
    def __init__(self, private_key: PrivateKey) -> None:
        self._box = SealedBox(private_key)
        self.public_key = private_key.public_key
        self.key_id = vault_key_id(private_key.public_key)
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()  # sealed data key -> data key

    def _decrypt(self, sealed: bytes) -> bytes:
        """The sealed data, either format; raises CryptoError if this key cannot open it."""
        if len(sealed) >= _MIN_V2 and sealed.startswith(MAGIC):
            try:
                key = self._data_key(sealed[len(MAGIC) : _HEADER])
                nonce = sealed[_HEADER : _HEADER + crypto_secretbox_NONCEBYTES]
                return crypto_secretbox_open(
                    sealed[_HEADER + crypto_secretbox_NONCEBYTES :], nonce, key
                )
            except CryptoError:
                pass  # a format-1 box whose random prefix happens to be MAGIC (p = 2^-32)
        return bytes(self._box.decrypt(sealed))

    def _data_key(self, sealed_key: bytes) -> bytes:
        key = self._keys.get(sealed_key)
        if key is None:
            key = bytes(self._box.decrypt(sealed_key))
            self._keys[sealed_key] = key
            if len(self._keys) > _OPENED_KEYS:
                self._keys.popitem(last=False)
        return key

    def open(self, sealed: bytes, *, field: str, token: str) -> str:
        """The value sealed for (field, token); raises VaultError if it was sealed for another."""
        try:
            plain = self._decrypt(sealed).decode("utf-8", "surrogatepass")
        except CryptoError:
            raise VaultError(f"token {token}: cannot open (wrong private key?)") from None
        sealed_field, sealed_token, value = plain.split(SEP, 2)
        if (sealed_field, sealed_token) != (field, token):
            raise VaultError(f"token {token}: the vault entry was sealed for another token")
        return value

    def open_rejected(self, sealed: bytes, *, message_id: str) -> str:
        plain = self._decrypt(sealed).decode("utf-8", "surrogatepass")
        kind, sealed_id, body = plain.split(SEP, 2)
        if (kind, sealed_id) != ("rejected", message_id):
            raise VaultError(f"message {message_id}: sealed body belongs to another message")
        return body
