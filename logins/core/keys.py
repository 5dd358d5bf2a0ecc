"""Key files: the token key (secret, held by the pipeline) and the vault key pair.

Formats are one line of text per key, so they are easy to put in a secret store. A token key
file may hold several lines: the first is active, the rest still identify old tokens during a
rotation. A token key line is

    <key_id> hmac-sha256 <base64 of 32 bytes>

and its tokens are HMAC-SHA256 under it. The key's id is the first 4 bytes (hex) of
HMAC-SHA256(key, "token-key-id"), so the same key material gets the same id wherever it is
held: in this file, or imported into an AWS KMS HMAC key (`logins.core.kms`), and tokens match
across the two (docs/vault.md "Key custody").

The vault key id is derived from the public key, so a public and a private key can never be
paired wrongly; it is a 32-bit label, not an authentication: the full SHA-256 fingerprint
(`vault_fingerprint`) is what `vault.public_key_fingerprint` pins.

Secret files (token keys, the vault private key) that group or others may read are refused:
a key that leaked to another account is not a key any more. Where the pipeline reads a key
(the token key, the vault's public key), a reference to AWS Secrets Manager or SSM holding
the same text may stand instead of the file (`logins.core.secretrefs`).
"""

from __future__ import annotations

import base64
import grp
import hashlib
import hmac
import os
import pwd
import secrets
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nacl.public import PrivateKey, PublicKey

from logins.core.secretrefs import SecretRef, SecretRefError, fetch


class KeyFileError(ValueError):
    """A key that is missing, malformed, unsafe or unreachable; the message names the file
    (or the KMS key), never the key."""


KeySource = Path | SecretRef  # a key file, or a reference to a secret holding its text


TokenAlgorithm = Literal["hmac-sha256"]  # the one token MAC, named in key lines and reports
HMAC_SHA256: TokenAlgorithm = "hmac-sha256"
# The label MAC'd to derive a key's id. A token's input always holds a NUL (field NUL
# value), this never does, so no value can produce it.
KEY_ID_LABEL = b"token-key-id"
TOKEN_KEY_LINE = f"<key_id> {HMAC_SHA256} <base64>"


@dataclass(frozen=True)
class TokenKey:
    """An HMAC-SHA256 token key held in this process (a key file's line)."""

    key_id: str
    secret: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"TokenKey(key_id={self.key_id!r})"


def hmac_key_id(secret: bytes) -> str:
    """The id of an HMAC-SHA256 token key: derived from the key material, so a file and a KMS
    key holding the same material name their tokens alike."""
    return hmac.digest(secret, KEY_ID_LABEL, "sha256")[:4].hex()


def vault_key_id(public_key: PublicKey) -> str:
    """A 32-bit label of the vault key pair, stored beside each sealed value. Not a defence
    against a swapped key (ids can be ground out): pin `vault_fingerprint` for that."""
    return hashlib.blake2b(bytes(public_key), digest_size=4, person=b"logins-vault").hexdigest()


def vault_fingerprint(public_key: PublicKey) -> str:
    """The full SHA-256 fingerprint of a vault public key, `sha256:<64 hex>`."""
    return "sha256:" + hashlib.sha256(bytes(public_key)).hexdigest()


def check_fingerprint(public_key: PublicKey, expected: str | None, path: KeySource) -> None:
    """Refuse a vault public key that is not the pinned one (when one is pinned)."""
    if expected is None:
        return
    actual = vault_fingerprint(public_key)
    if not hmac.compare_digest(actual, expected):
        raise KeyFileError(
            f"vault public key file {path}: its fingerprint {actual} is not the pinned"
            f" vault.public_key_fingerprint {expected}: refusing to seal to another key"
        )


def group_of_one(gid: int) -> bool:
    """True if `gid` is this process's own group and no other account is in it: what
    Kubernetes' fsGroup gives a pod (a Secret volume's files are root:fsGroup, mode 0440, so
    that the pod's non-root user can read them). A shared group (`staff`, `users`) is not."""
    if gid != os.getegid():
        return False
    me = os.geteuid()
    try:
        my_name: str | None = pwd.getpwuid(me).pw_name
    except KeyError:  # a uid with no passwd entry (a container's arbitrary user)
        my_name = None
    try:
        members = grp.getgrgid(gid).gr_mem
    except KeyError:  # a gid with no group entry: nobody is a member by name
        members = []
    if any(member != my_name for member in members):
        return False
    return all(entry.pw_uid == me for entry in pwd.getpwall() if entry.pw_gid == gid)


def check_private(path: Path, what: str) -> None:
    """Refuse a secret file that others, or a group other than this process's own, may read
    or write (see `group_of_one`)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise KeyFileError(f"{what} {path}: cannot read ({type(exc).__name__})") from None
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o007 or (mode & 0o070 and not group_of_one(info.st_gid)):
        raise KeyFileError(
            f"{what} {path}: group or others may read it (mode {mode:04o});"
            f" a secret must be readable by its owner only: chmod 600 {path}"
        )


def _read_text(source: KeySource, what: str) -> str:
    """The key file's text; a secret file that group or others may read is refused (a secret
    store's reference has its own access control)."""
    if isinstance(source, SecretRef):
        try:
            text = fetch(source)
        except SecretRefError as exc:
            raise KeyFileError(f"{what} {exc}") from None
        if not text.isascii():
            raise KeyFileError(f"{what} {source}: not ASCII text")
        return text
    try:
        return source.read_text(encoding="ascii")
    except FileNotFoundError:
        raise KeyFileError(f"{what} {source}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{what} {source}: cannot read ({type(exc).__name__})") from None


def _parse_lines(text: str, source: str, shape: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-comment line; each has the fields `shape` names."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != len(shape.split()):
            raise KeyFileError(f"{source}: line {number} is not '{shape}'")
        entries.append((number, fields))
    if not entries:
        raise KeyFileError(f"{source}: holds no key")
    return entries


def _b64(encoded: str, source: str, number: int) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError:
        raise KeyFileError(f"{source}: line {number} is not valid base64") from None


def load_token_keys(path: KeySource) -> list[TokenKey]:
    what = "token key file"
    text = _read_text(path, what)
    if isinstance(path, Path):
        check_private(path, what)
    source = f"{what} {path}"
    keys: list[TokenKey] = []
    for number, (key_id, algorithm, encoded) in _parse_lines(text, source, TOKEN_KEY_LINE):
        secret = _b64(encoded, source, number)
        # No field of a refused line is echoed: a misplaced field may be a key.
        if len(secret) != 32 or not key_id.isalnum():
            raise KeyFileError(f"{source}: line {number}: the key must be 32 bytes, its id alnum")
        if algorithm != HMAC_SHA256:
            raise KeyFileError(
                f"{source}: line {number}: the second field must be {HMAC_SHA256!r}"
                " (the only token algorithm)"
            )
        if hmac_key_id(secret) != key_id:
            raise KeyFileError(f"{source}: line {number}: the key id does not match the key")
        keys.append(TokenKey(key_id, secret))
    ids = [k.key_id for k in keys]
    if len(set(ids)) != len(ids):
        raise KeyFileError(f"{source}: two keys share an id ({ids})")
    return keys


def _vault_key(text: str, source: str) -> tuple[str, bytes]:
    number, (key_id, encoded) = _parse_lines(text, source, "<key_id> <base64>")[0]
    raw = _b64(encoded, source, number)
    if len(raw) != 32:
        raise KeyFileError(f"{source}: not a 32-byte Curve25519 key")
    return key_id, raw


def load_vault_public_key(path: KeySource) -> PublicKey:
    source = f"vault public key file {path}"
    key_id, raw = _vault_key(_read_text(path, "vault public key file"), source)
    public = PublicKey(raw)
    if vault_key_id(public) != key_id:
        raise KeyFileError(f"{source}: key id does not match the key")
    return public


def private_key_from_text(text: str, source: str) -> PrivateKey:
    """A vault private key from the key file's content, read from `source` (named in errors)."""
    key_id, raw = _vault_key(text, source)
    private = PrivateKey(raw)
    if vault_key_id(private.public_key) != key_id:
        raise KeyFileError(f"{source}: key id does not match the key")
    return private


def load_vault_private_key(path: Path) -> PrivateKey:
    """The vault private key from a file only its owner may read; `-` reads standard input."""
    if str(path) == "-":
        return private_key_from_text(sys.stdin.read(), "vault private key (stdin)")
    what = "vault private key file"
    text = _read_text(path, what)
    check_private(path, what)
    return private_key_from_text(text, f"{what} {path}")


def read_private_key_fd(fd: int) -> PrivateKey:
    """The vault private key from an open file descriptor (read to its end, then closed): a
    pipe from a secret store leaves no file and nothing in the environment."""
    source = f"vault private key (file descriptor {fd})"
    try:
        with os.fdopen(fd, "r", encoding="ascii", closefd=True) as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KeyFileError(f"{source}: cannot read ({type(exc).__name__})") from None
    return private_key_from_text(text, source)


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
    private = PrivateKey.generate()
    vid = vault_key_id(private.public_key)

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    _write_secret(paths["token.key"], new_token_key_line()[1], 0o600)
    _write_secret(paths["vault.key"], f"{vid} {b64(bytes(private))}\n", 0o600)
    _write_secret(paths["vault.pub"], f"{vid} {b64(bytes(private.public_key))}\n", 0o644)
    return paths


def new_token_key_line() -> tuple[str, str]:
    """A fresh HMAC-SHA256 token key: (key id, its line `<key_id> hmac-sha256 <base64>`)."""
    secret = secrets.token_bytes(32)
    key_id = hmac_key_id(secret)
    return key_id, f"{key_id} {HMAC_SHA256} {base64.b64encode(secret).decode()}\n"


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
