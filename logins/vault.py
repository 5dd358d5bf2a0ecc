"""Sealing original values for the vault (pipeline side) and opening them (reveal side).

The pipeline holds only the public key: a NaCl sealed box can be opened by the private key
alone, so a compromised pipeline cannot unmask anything. A sealed box says nothing about
who sealed it, so each value is sealed together with its field and token and checked on
opening: a ciphertext moved to another token's row is detected.
"""

from __future__ import annotations

from dataclasses import dataclass

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from logins.keys import vault_key_id

SEP = "\x00"


class VaultError(Exception):
    """A vault entry that cannot be opened or does not belong where it was found."""


class Sealer:
    def __init__(self, public_key: PublicKey) -> None:
        self._box = SealedBox(public_key)
        self.key_id = vault_key_id(public_key)

    def seal(self, field: str, token: str, value: str) -> bytes:
        # surrogatepass, as the token and opening do: any str the token covers can be sealed
        data = f"{field}{SEP}{token}{SEP}{value}".encode("utf-8", "surrogatepass")
        return bytes(self._box.encrypt(data))

    def seal_rejected(self, message_id: str, body: str) -> bytes:
        """A rejected body, bound to its message id; bytes that are not UTF-8 survive."""
        data = f"rejected{SEP}{message_id}{SEP}".encode() + body.encode("utf-8", "surrogatepass")
        return bytes(self._box.encrypt(data))


@dataclass(frozen=True)
class Opened:
    field: str
    token: str
    value: str


class Opener:
    def __init__(self, private_key: PrivateKey) -> None:
        self._box = SealedBox(private_key)
        self.public_key = private_key.public_key
        self.key_id = vault_key_id(private_key.public_key)

    def open(self, sealed: bytes, *, field: str, token: str) -> str:
        """The value sealed for (field, token); raises VaultError if it was sealed for another."""
        try:
            plain = self._box.decrypt(sealed).decode("utf-8", "surrogatepass")
        except CryptoError:
            raise VaultError(f"token {token}: cannot open (wrong private key?)") from None
        sealed_field, sealed_token, value = plain.split(SEP, 2)
        if (sealed_field, sealed_token) != (field, token):
            raise VaultError(f"token {token}: the vault entry was sealed for another token")
        return value

    def open_rejected(self, sealed: bytes, *, message_id: str) -> str:
        plain = self._box.decrypt(sealed).decode("utf-8", "surrogatepass")
        kind, sealed_id, body = plain.split(SEP, 2)
        if (kind, sealed_id) != ("rejected", message_id):
            raise VaultError(f"message {message_id}: sealed body belongs to another message")
        return body
