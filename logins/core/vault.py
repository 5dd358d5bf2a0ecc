"""Sealing original values for the vault (pipeline side) and opening them (reveal side).

The pipeline holds only the public key, so a compromised pipeline cannot unmask anything:
only the private key opens what it sealed. Each value is sealed together with its field and
token and checked on opening, so a ciphertext moved to another token's row is detected.

Envelope encryption. A sealed box costs two X25519 operations, about
100 µs of CPU here; sealing each new value in its own box capped the pipeline near 6k msg/s on
this machine (docs/benchmarks.md). So a `SealBatch` makes one random 32-byte data key, seals
that key in a PyNaCl `SealedBox` for the vault's public key (once per batch), and encrypts
each value with XSalsa20-Poly1305 (`crypto_secretbox`, about 1 µs) under the data key with
a counter nonce (a data key is used by one batch only, so a nonce never repeats under a
key). Every vault entry carries its own copy of the sealed data key, so each row opens
alone, and deleting a row (erasure) still destroys that value for good: the other rows of
its batch hold the data key, never this value's ciphertext. The data key is dropped with
the batch; the pipeline keeps nothing that opens an entry. Entries sealed in one batch share
the sealed data key, byte for byte: a reader of the table sees which were sealed together.

The sealed data is padded to a bucket first: `0x80` then zeros up to the
next power of two, at least 128 bytes. `field NUL token NUL value` of any IPv4 or IPv6
address fits 128, so a ciphertext's length does not tell an IPv4 from an IPv6 address, nor
one address from another; longer values (device ids, rejected bodies) show only their
bucket (256, 512, ...).

    b"LV1\x00" | SealedBox(data key) (80 B) | nonce (24 B) | secretbox(padded data)

The one format of the first release (version 1); a later format gets its own magic.
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

from logins.core.keys import vault_fingerprint, vault_key_id

SEP = "\x00"
MAGIC = b"LV1\x00"  # the sealed format, version 1: envelope, padded
_SEALED_KEY_BYTES = 32 + crypto_secretbox_KEYBYTES + 16  # ephemeral public key, key, MAC
_HEADER = len(MAGIC) + _SEALED_KEY_BYTES
_MIN_ENVELOPE = _HEADER + crypto_secretbox_NONCEBYTES + 16
_OPENED_KEYS = 4096  # data keys an Opener remembers (a batch's entries share one)
MIN_BUCKET = 128  # bytes: any ip's `field NUL token NUL value` fits


class VaultError(Exception):
    """A vault entry that cannot be opened or does not belong where it was found."""


def pad(data: bytes) -> bytes:
    """`data`, 0x80, then zeros up to the next power of two (at least MIN_BUCKET bytes)."""
    size = max(MIN_BUCKET, 1 << len(data).bit_length())  # > len(data): room for the 0x80
    return data + b"\x80" + bytes(size - len(data) - 1)


def unpad(padded: bytes) -> bytes:
    body = padded.rstrip(b"\x00")
    if not body.endswith(b"\x80"):
        raise ValueError("bad padding")
    return body[:-1]


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
        return self._header + nonce + crypto_secretbox(pad(data), nonce, self._key)

    def seal(self, field: str, token: str, value: str) -> bytes:
        return self._seal(_value_data(field, token, value))

    def seal_rejected(self, message_id: str, body: str) -> bytes:
        return self._seal(_rejected_data(message_id, body))


class Sealer:
    def __init__(self, public_key: PublicKey) -> None:
        self._box = SealedBox(public_key)
        self.key_id = vault_key_id(public_key)
        self.fingerprint = vault_fingerprint(public_key)

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
        """The sealed data; raises CryptoError if this key cannot open it and ValueError if it
        is not a sealed value (no magic, too short, bad padding)."""
        if len(sealed) < _MIN_ENVELOPE or sealed[: len(MAGIC)] != MAGIC:
            raise ValueError("not a sealed value")
        key = self._data_key(sealed[len(MAGIC) : _HEADER])
        nonce = sealed[_HEADER : _HEADER + crypto_secretbox_NONCEBYTES]
        return unpad(
            crypto_secretbox_open(sealed[_HEADER + crypto_secretbox_NONCEBYTES :], nonce, key)
        )

    def _data_key(self, sealed_key: bytes) -> bytes:
        key = self._keys.get(sealed_key)
        if key is None:
            key = bytes(self._box.decrypt(sealed_key))
            self._keys[sealed_key] = key
            if len(self._keys) > _OPENED_KEYS:
                self._keys.popitem(last=False)
        return key

    def _plain(self, sealed: bytes, what: str) -> list[str]:
        """The opened data split at its two separators; any malformed entry is a VaultError
        naming `what` (a token or message id), never a crash: the caller goes on with the rest."""
        try:
            data = self._decrypt(sealed)
        except CryptoError:
            raise VaultError(f"{what}: cannot open (wrong private key?)") from None
        except (ValueError, TypeError):  # bad padding; a ciphertext of a wrong length or type
            raise VaultError(f"{what}: the vault entry is malformed (bad ciphertext)") from None
        try:
            plain = data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise VaultError(f"{what}: the vault entry is malformed (not UTF-8)") from None
        parts = plain.split(SEP, 2)
        if len(parts) != 3:
            raise VaultError(f"{what}: the vault entry is malformed (no field and token in it)")
        return parts

    def open(self, sealed: bytes, *, field: str, token: str) -> str:
        """The value sealed for (field, token); raises VaultError if it was sealed for another
        or is malformed."""
        sealed_field, sealed_token, value = self._plain(sealed, f"token {token}")
        if (sealed_field, sealed_token) != (field, token):
            raise VaultError(f"token {token}: the vault entry was sealed for another token")
        return value

    def open_rejected(self, sealed: bytes, *, message_id: str) -> str:
        kind, sealed_id, body = self._plain(sealed, f"message {message_id}")
        if (kind, sealed_id) != ("rejected", message_id):
            raise VaultError(f"message {message_id}: sealed body belongs to another message")
        return body
