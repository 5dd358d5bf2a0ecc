"""Signed anchors of the audit chain's head, kept outside the database.

Whoever owns the audit table (or is a superuser) can rewrite it and recompute every hash;
the chain alone cannot show that. An anchor records the head (id and row_hash) at a moment,
signed with an Ed25519 key the auditor holds (PyNaCl `SigningKey`), and is written where the
database's administrators cannot write: a file the auditor keeps, or an S3 object, under
S3 Object Lock retention when the bucket has Object Lock on (then not even the bucket's
owner can delete or overwrite that version until the date). `verify --anchor` reads it back,
checks the signature against the auditor's public key (pinned by the verifier, never taken
from the anchor) and then that the chain still holds that row with that hash: a rewritten
or truncated history fails, naming the row.

    {"format": "logins-audit-anchor-1",
     "head": {"table": ..., "database": ..., "id": ..., "row_hash": ..., "rows": ...,
              "at": <UTC ISO 8601>},
     "key": <SHA-256 of the public key, hex>, "signature": <Ed25519 over the head, hex>}

The head is signed as JSON with sorted keys and no spaces. Key files are one line,
`<key fingerprint, 16 hex> <base64 of 32 bytes>`, like the other key files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

FORMAT = "logins-audit-anchor-1"
SIGNING_KEY = "audit-anchor.key"
VERIFY_KEY = "audit-anchor.pub"


class AnchorError(ValueError):
    """An anchor or an anchor key that cannot be used; the message names which and why."""


def fingerprint(key: VerifyKey) -> str:
    return hashlib.sha256(bytes(key)).hexdigest()


def _line(raw: bytes, key: VerifyKey) -> str:
    return f"{fingerprint(key)[:16]} {base64.b64encode(raw).decode()}\n"


def generate_keys(directory: Path) -> dict[str, Path]:
    """Write audit-anchor.key (0600, for the auditor) and audit-anchor.pub; never overwrite."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"key": directory / SIGNING_KEY, "pub": directory / VERIFY_KEY}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing:
        raise AnchorError(f"refusing to overwrite existing key files: {existing}")
    key = SigningKey.generate()
    for path, raw, mode in (
        (paths["key"], bytes(key), 0o600),
        (paths["pub"], bytes(key.verify_key), 0o644),
    ):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(_line(raw, key.verify_key))
    return paths


def _read_key(path: Path, what: str) -> tuple[str, bytes]:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise AnchorError(f"{what} {path}: cannot read ({exc.strerror})") from None
    try:
        key_id, encoded = text.split()
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, UnicodeDecodeError):
        raise AnchorError(f"{what} {path}: not '<key id> <base64>'") from None
    if len(raw) != 32:
        raise AnchorError(f"{what} {path}: not a 32-byte Ed25519 key")
    return key_id, raw


def load_signing_key(path: Path) -> SigningKey:
    """The auditor's signing key; refused if group or others may read the file."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise AnchorError(f"anchor signing key {path}: cannot read ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AnchorError(
            f"anchor signing key {path}: readable by group or others"
            f" (mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`"
        )
    key_id, raw = _read_key(path, "anchor signing key")
    key = SigningKey(raw)
    if fingerprint(key.verify_key)[:16] != key_id:
        raise AnchorError(f"anchor signing key {path}: key id does not match the key")
    return key


def load_verify_key(path: Path) -> VerifyKey:
    key_id, raw = _read_key(path, "anchor public key")
    key = VerifyKey(raw)
    if fingerprint(key)[:16] != key_id:
        raise AnchorError(f"anchor public key {path}: key id does not match the key")
    return key


@dataclass(frozen=True)
class Head:
    table: str
    database: str
    id: int
    row_hash: str
    rows: int
    at: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _signed_bytes(head: dict[str, Any]) -> bytes:
    return json.dumps(head, sort_keys=True, separators=(",", ":")).encode()


def sign(head: Head, key: SigningKey) -> bytes:
    data = head.as_dict()
    document = {
        "format": FORMAT,
        "head": data,
        "key": fingerprint(key.verify_key),
        "signature": key.sign(_signed_bytes(data)).signature.hex(),
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def parse(document: bytes, key: VerifyKey, where: str) -> Head:
    """The head an anchor document records, once its signature verifies with `key`."""
    try:
        data = json.loads(document)
        if data.get("format") != FORMAT:
            raise AnchorError(f"anchor {where}: not a {FORMAT} document")
        head, signature = data["head"], bytes.fromhex(data["signature"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise AnchorError(f"anchor {where}: not a signed anchor document") from None
    if data.get("key") != fingerprint(key):
        raise AnchorError(
            f"anchor {where}: signed by key {str(data.get('key'))[:16]}..., not the given public"
            f" key {fingerprint(key)[:16]}..."
        )
    try:
        key.verify(_signed_bytes(head), signature)
    except BadSignatureError:
        raise AnchorError(f"anchor {where}: the signature does not verify: altered") from None
    try:
        return Head(**head)
    except TypeError:
        raise AnchorError(f"anchor {where}: the head has unexpected fields") from None


# -- where anchors live -------------------------------------------------------------------------


def _s3(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    key = parts.path.lstrip("/")
    if not parts.netloc or not key:
        raise AnchorError(f"{url}: not s3://bucket/key")
    return parts.netloc, key


def _client(endpoint_url: str | None) -> Any:
    import boto3  # only the S3 path needs it

    return boto3.client("s3", endpoint_url=endpoint_url)


def write(
    document: bytes,
    target: str,
    *,
    retain_days: int,
    endpoint_url: str | None = None,
    now: datetime | None = None,
) -> str:
    """Write the anchor; returns where (and for S3 the version and any retention)."""
    if not target.startswith("s3://"):
        path = Path(target)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise AnchorError(f"{path}: exists; anchors are never overwritten") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(document)
        return str(path)
    bucket, key = _s3(target)
    client = _client(endpoint_url)
    from botocore.exceptions import ClientError

    lock: dict[str, Any] = {}
    try:
        config = client.get_object_lock_configuration(Bucket=bucket)
        enabled = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ObjectLockConfigurationNotFoundError":
            raise AnchorError(f"{target}: {exc}") from None
        enabled = False
    if enabled:
        until = (now or datetime.now(timezone.utc)) + timedelta(days=retain_days)
        lock = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}
    try:
        put = client.put_object(
            Bucket=bucket, Key=key, Body=document, ContentType="application/json", **lock
        )
    except ClientError as exc:
        raise AnchorError(f"{target}: {exc}") from None
    where = f"{target} (version {put.get('VersionId') or 'none'})"
    if lock:
        where += f", Object Lock COMPLIANCE until {lock['ObjectLockRetainUntilDate']:%Y-%m-%d}"
    else:
        where += ", no Object Lock on this bucket: protect it by policy"
    return where


def read(source: str, *, endpoint_url: str | None = None) -> bytes:
    if not source.startswith("s3://"):
        try:
            return Path(source).read_bytes()
        except OSError as exc:
            raise AnchorError(f"anchor {source}: cannot read ({exc.strerror})") from None
    bucket, key = _s3(source)
    from botocore.exceptions import ClientError

    try:
        body: bytes = _client(endpoint_url).get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        raise AnchorError(f"anchor {source}: {exc}") from None
    return body
