"""Key files: the token key (secret, held by the pipeline) and the vault key pair.

Formats are one line of text, `<key_id> <base64>`, so they are easy to put in a secret store.
A token key file may hold several lines: the first is active, the rest still identify
old tokens during a rotation. The vault key id is derived from the public key, so a public
and a private key can never be paired wrongly. Where the pipeline reads a key (the token key,
the vault's public key), a reference to AWS Secrets Manager or SSM holding the same text may
stand instead of the file (`logins.secretrefs`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from nacl.public import PrivateKey, PublicKey

from logins.secretrefs import SecretRef, SecretRefError, fetch


class KeyFileError(ValueError):
    """A key file that is missing or malformed; the message names the file, never the key."""


@dataclass(frozen=True)
class TokenKey:
    key_id: str
    secret: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"TokenKey(key_id={self.key_id!r})"


def vault_key_id(public_key: PublicKey) -> str:
    return hashlib.blake2b(bytes(public_key), digest_size=4, person=b"logins-vault").hexdigest()


KeySource = Path | SecretRef  # a key file, or a reference to a secret holding its text


def _read_text(source: KeySource, what: str) -> str:
    if isinstance(source, SecretRef):
        try:
            return fetch(source)
        except SecretRefError as exc:
            raise KeyFileError(f"{what} {exc}") from None
    try:
        return source.read_text(encoding="ascii")
    except FileNotFoundError:
        raise KeyFileError(f"{what} {source}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{what} {source}: cannot read ({type(exc).__name__})") from None


def _read_lines(path: KeySource, what: str) -> list[tuple[str, bytes]]:
    text = _read_text(path, what)
    if isinstance(path, SecretRef) and not text.isascii():
        raise KeyFileError(f"{what} {path}: not ASCII text")
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            key_id, encoded = line.split()
            entries.append((key_id, base64.b64decode(encoded, validate=True)))
        except ValueError:
            raise KeyFileError(f"{what} {path}: line {number} is not '<key_id> <base64>'") from None
    if not entries:
        raise KeyFileError(f"{what} {path}: holds no key")
    return entries


def load_token_keys(path: KeySource) -> list[TokenKey]:
    keys = []
    for key_id, secret in _read_lines(path, "token key file"):
        if len(secret) != 32 or not key_id.isalnum():
            raise KeyFileError(f"token key file {path}: key {key_id!r} must be 32 bytes, id alnum")
        keys.append(TokenKey(key_id, secret))
    return keys


def load_vault_public_key(path: KeySource) -> PublicKey:
    (key_id, raw), *_ = _read_lines(path, "vault public key file")
    if len(raw) != 32:
        raise KeyFileError(f"vault public key file {path}: not a 32-byte Curve25519 key")
    public = PublicKey(raw)
    if vault_key_id(public) != key_id:
        raise KeyFileError(f"vault public key file {path}: key id does not match the key")
    return public


def load_vault_private_key(path: Path) -> PrivateKey:
    (key_id, raw), *_ = _read_lines(path, "vault private key file")
    if len(raw) != 32:
        raise KeyFileError(f"vault private key file {path}: not a 32-byte Curve25519 key")
    private = PrivateKey(raw)
    if vault_key_id(private.public_key) != key_id:
        raise KeyFileError(f"vault private key file {path}: key id does not match the key")
    return private


def private_key_from_text(text: str) -> PrivateKey:
    """A vault private key given as the file's content (e.g. from an environment variable)."""
    key_id, encoded = text.split()
    private = PrivateKey(base64.b64decode(encoded, validate=True))
    if vault_key_id(private.public_key) != key_id:
        raise KeyFileError("vault private key: key id does not match the key")
    return private


def _write_secret(path: Path, content: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(content)


def generate_keys(directory: Path) -> dict[str, Path]:
    """Write token.key, vault.pub and vault.key into `directory`; refuse to overwrite."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {n: directory / n for n in ("token.key", "vault.pub", "vault.key")}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing:
        raise KeyFileError(f"refusing to overwrite existing key files: {existing}")
    token_id = secrets.token_hex(4)
    private = PrivateKey.generate()
    vid = vault_key_id(private.public_key)

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    _write_secret(paths["token.key"], f"{token_id} {b64(secrets.token_bytes(32))}\n", 0o600)
    _write_secret(paths["vault.key"], f"{vid} {b64(bytes(private))}\n", 0o600)
    _write_secret(paths["vault.pub"], f"{vid} {b64(bytes(private.public_key))}\n", 0o644)
    return paths


def new_token_key_line() -> tuple[str, str]:
    """A fresh token key: (key id, the line `<key_id> <base64 of 32 random bytes>`)."""
    key_id = secrets.token_hex(4)
    return key_id, f"{key_id} {base64.b64encode(secrets.token_bytes(32)).decode()}\n"


def generate_token_key(directory: Path) -> Path:
    """Write only `token.key` into `directory` (mode 0600); refuse to overwrite."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "token.key"
    if path.exists():
        raise KeyFileError(f"refusing to overwrite existing key file: {path}")
    _write_secret(path, new_token_key_line()[1], 0o600)
    return path


def prepend_token_key(path: Path) -> TokenKey:
    """Make a new token key the active one: put it first in `path`, keep the old lines (they
    still verify old tokens during the rotation). Replaced atomically, mode 0600."""
    existing = load_token_keys(path)
    old_text = path.read_text(encoding="ascii")
    known = {k.key_id for k in existing}
    key_id, line = new_token_key_line()
    while key_id in known:  # 2^-32 per key; never reuse an id
        key_id, line = new_token_key_line()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    _write_secret(tmp, line + old_text if old_text.endswith("\n") else f"{line}{old_text}\n", 0o600)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return load_token_keys(path)[0]
