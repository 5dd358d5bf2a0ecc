"""Signed anchors of the audit chain's head, kept outside the database.

Whoever owns the audit table (or is a superuser) can rewrite it and recompute every hash;
the chain alone cannot show that. An anchor records the head (id and row_hash) at a moment,
signed with an Ed25519 key the auditor holds (PyNaCl `SigningKey`), and is written where the
database's administrators cannot write: a file the auditor keeps (only as safe as its
directory), or an S3 object under Object Lock COMPLIANCE retention (not even the bucket's
owner can delete or overwrite that version until the date). A bucket without Object Lock is
refused, and on verification an anchor version not so retained fails, unless the caller
accepts it by name (`allow_unlocked`): its owner could delete it and write an older one.
`verify --anchor` reads it back, checks the signature against the auditor's public key
(pinned by the verifier, never taken from the anchor) and then that the chain still holds
that row with that hash: a rewritten or truncated history fails, naming the row.

Anchors form their own chain: each carries a sequence number (`seq`, 1, 2, ...) and the
SHA-256 of the anchor before it (`prev`). Object Lock keeps a version from being deleted, not
an older anchor from being written again as a new, newest version; so a verifier reads every
anchor stored beside the one it is given (every version of every object under the same S3
prefix, or the files of the same directory) and refuses a head older than the newest it finds
(`history`, `newest`).

    {"format": "logins-audit-anchor-1",
     "head": {"table": ..., "database": ..., "id": ..., "row_hash": ..., "rows": ...,
              "at": <UTC ISO 8601>, "seq": <int>, "prev": <SHA-256 hex of the previous
              anchor's signed head, or null>},
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
    seq: int
    prev: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def digest(self) -> str:
        """What the next anchor's `prev` names: SHA-256 of this head's signed bytes."""
        return hashlib.sha256(_signed_bytes(self.as_dict())).hexdigest()

    def describe(self) -> str:
        return f"anchor #{self.seq} (head {self.id}, at {self.at})"


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
        parsed = Head(**head)
    except TypeError:
        raise AnchorError(f"anchor {where}: the head has unexpected fields") from None
    if not isinstance(parsed.seq, int) or parsed.seq < 1:
        raise AnchorError(f"anchor {where}: the head has no sequence number")
    return parsed


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


FILE_NOTE = (
    "a local file is only as safe as its directory: whoever can write there can replace or"
    " remove it (an S3 bucket with Object Lock cannot be rewritten, even by its owner)"
)


def _object_lock(client: Any, target: str, bucket: str) -> bool:
    """Has the bucket Object Lock enabled?"""
    from botocore.exceptions import ClientError

    try:
        config = client.get_object_lock_configuration(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ObjectLockConfigurationNotFoundError":
            raise AnchorError(f"{target}: {exc}") from None
        return False
    return bool(config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")


def check_target(target: str, *, allow_unlocked: bool, endpoint_url: str | None = None) -> None:
    """Refuse an S3 bucket without Object Lock (its owner could delete the anchor and write
    an older one in its place) unless `allow_unlocked` says so by name."""
    if not target.startswith("s3://") or allow_unlocked:
        return
    bucket, _ = _s3(target)
    if not _object_lock(_client(endpoint_url), target, bucket):
        raise AnchorError(
            f"{target}: bucket {bucket} has no Object Lock, so its owner can delete the anchor"
            " and write an older one in its place; use a bucket created with Object Lock, or"
            " pass --allow-unlocked to write there anyway"
        )


def write(
    document: bytes,
    target: str,
    *,
    retain_days: int,
    endpoint_url: str | None = None,
    now: datetime | None = None,
    allow_unlocked: bool = False,
) -> str:
    """Write the anchor; returns where (and for S3 the version and the retention). An S3
    bucket without Object Lock is refused unless `allow_unlocked`."""
    if not target.startswith("s3://"):
        path = Path(target)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise AnchorError(f"{path}: exists; anchors are never overwritten") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(document)
        return f"{path} ({FILE_NOTE})"
    check_target(target, allow_unlocked=allow_unlocked, endpoint_url=endpoint_url)
    bucket, key = _s3(target)
    client = _client(endpoint_url)
    from botocore.exceptions import ClientError

    lock: dict[str, Any] = {}
    if _object_lock(client, target, bucket):
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
        where += ", no Object Lock on this bucket (--allow-unlocked): protect it by policy"
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


# -- the anchors' own chain -----------------------------------------------------------------------

_MAX_DOCUMENT = 64 * 1024  # an anchor is ~600 bytes; bigger objects beside it are not anchors


@dataclass(frozen=True)
class Found:
    """An anchor found beside another: where (for S3 the version and when it was written)."""

    where: str
    head: Head
    version: str | None = None  # the S3 version id
    unlocked: str | None = None  # S3: why this version is not under Object Lock retention
    expired: bool = False  # S3: it was, and its retention has ended


def history(source: str, key: VerifyKey, *, endpoint_url: str | None = None) -> list[Found]:
    """Every anchor stored beside `source` that verifies with `key`: for s3://B/P/K every
    version of every object under s3://B/P/ (a delete marker hides no version from this), for
    a file the files of its directory. Documents that are not anchors, or not signed with
    `key`, are passed over: anyone who can write there can put junk, nobody without the
    signing key can put an anchor."""
    documents: list[tuple[str, bytes, Lock]] = []
    if source.startswith("s3://"):
        documents = _s3_versions(source, endpoint_url)
    else:
        directory = Path(source).parent
        for path in sorted(directory.iterdir()) if directory.is_dir() else []:
            try:
                if path.is_file() and path.stat().st_size <= _MAX_DOCUMENT:
                    documents.append((str(path), path.read_bytes(), Lock()))
            except OSError:
                continue
    found = []
    for where, document, lock in documents:
        try:
            head = parse(document, key, where)
        except AnchorError:
            continue
        found.append(Found(where, head, lock.version, lock.unlocked, lock.expired))
    return found


@dataclass(frozen=True)
class Lock:
    """An S3 version's Object Lock state: `unlocked` says why it is not retained."""

    version: str | None = None
    unlocked: str | None = None
    expired: bool = False


def _retention(client: Any, bucket: str, key: str, version: str, now: datetime) -> Lock:
    """Is this version under COMPLIANCE retention until a later date? (GOVERNANCE can be
    lifted by anyone granted s3:BypassGovernanceRetention, the bucket's owner among them.)"""
    from botocore.exceptions import ClientError

    try:  # S3 shows the retention only to a caller allowed s3:GetObjectRetention
        got = client.head_object(Bucket=bucket, Key=key, VersionId=version)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        return Lock(version, f"its Object Lock retention cannot be read ({code})")
    mode, until = got.get("ObjectLockMode"), got.get("ObjectLockRetainUntilDate")
    if mode is None or until is None:
        return Lock(version, "it has no Object Lock retention (or s3:GetObjectRetention is denied)")
    if mode != "COMPLIANCE":
        return Lock(version, f"its retention is {mode}, which can be lifted; not COMPLIANCE")
    if until <= now:
        return Lock(version, f"its Object Lock retention ended {until:%Y-%m-%d}", expired=True)
    return Lock(version)


def _s3_versions(source: str, endpoint_url: str | None) -> list[tuple[str, bytes, Lock]]:
    bucket, key = _s3(source)
    now = datetime.now(timezone.utc)
    prefix = key.rpartition("/")[0] + "/" if "/" in key else ""
    client = _client(endpoint_url)
    from botocore.exceptions import ClientError

    documents = []
    try:
        for page in client.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            for version in page.get("Versions", []):
                if version.get("Size", 0) > _MAX_DOCUMENT:
                    continue
                got = client.get_object(
                    Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"]
                )
                written = version["LastModified"].astimezone(timezone.utc)
                where = (
                    f"s3://{bucket}/{version['Key']} (version {version['VersionId']},"
                    f" written {written:%Y-%m-%dT%H:%M:%SZ})"
                )
                lock = _retention(client, bucket, version["Key"], version["VersionId"], now)
                documents.append((where, got["Body"].read(), lock))
    except ClientError as exc:
        raise AnchorError(f"anchor {source}: cannot list the versions beside it: {exc}") from None
    return documents


def replay_problems(
    given: Head, where: str, found: list[Found], at_least: int | None = None
) -> list[str]:
    """Why `given` is not the newest anchor of its chain, or the chain of anchors is broken:
    a newer anchor found beside it (an older one written again as the newest version), an
    anchor older than `at_least`, two anchors with one sequence number, a `prev` that is not
    the anchor before it. Only anchors of the same table and database count."""
    ours = [f for f in found if (f.head.table, f.head.database) == (given.table, given.database)]
    problems = []
    newest = max(ours, key=lambda f: f.head.seq, default=None)
    if newest is not None and newest.head.seq > given.seq:
        problems.append(
            f"{where} is {given.describe()}, but {newest.where} is {newest.head.describe()}:"
            " an older anchor was written again as the newest (a replay); rows anchored after"
            " it may have been deleted"
        )
    if at_least is not None and given.seq < at_least:
        problems.append(
            f"{where} is {given.describe()}, older than --at-least {at_least}: a replay of an"
            " older anchor, or the newer ones were removed"
        )
    by_seq: dict[int, Found] = {}
    for item in sorted([*ours, Found(where, given)], key=lambda f: f.head.seq):
        seen = by_seq.setdefault(item.head.seq, item)
        if seen.head != item.head:
            problems.append(
                f"{seen.where} and {item.where} are both anchor #{item.head.seq} but differ:"
                " one was not written by this chain of anchors"
            )
        before = by_seq.get(item.head.seq - 1)
        if before is not None and item.head.prev != before.head.digest():
            problems.append(
                f"{item.where} ({item.head.describe()}) does not follow {before.where}: its"
                " prev is not that anchor's hash"
            )
    return list(dict.fromkeys(problems))


def previous(
    targets: list[str], key: VerifyKey, table: str, database: str, endpoint_url: str | None
) -> Found | None:
    """The newest anchor of `table` in `database` already stored beside any of `targets`:
    the one a new anchor follows."""
    found = [
        f
        for target in targets
        for f in history(target, key, endpoint_url=endpoint_url)
        if (f.head.table, f.head.database) == (table, database)
    ]
    return max(found, key=lambda f: f.head.seq, default=None)


def lock_problems(
    given: Head, source: str, found: list[Found], *, endpoint_url: str | None = None
) -> tuple[list[str], list[str]]:
    """(problems, notes): why the anchor versions a verification relies on could have been
    deleted or replaced. For S3: the version `source` reads now and every anchor version of
    the same table found beside it must be under COMPLIANCE retention; an older anchor whose
    retention has ended is only a note (it can be deleted now, which hides no replay of the
    newest). A file: only a note, it is as safe as its directory."""
    if not source.startswith("s3://"):
        return [], [f"{source}: {FILE_NOTE}"]
    bucket, key = _s3(source)
    from botocore.exceptions import ClientError

    try:
        current = _client(endpoint_url).head_object(Bucket=bucket, Key=key).get("VersionId")
    except ClientError as exc:
        raise AnchorError(f"anchor {source}: {exc}") from None
    ours = [f for f in found if (f.head.table, f.head.database) == (given.table, given.database)]
    problems, notes = [], []
    if current is None or not any(f.version == current for f in ours):
        problems.append(f"{source}: the version it reads is not among the anchors beside it")
    for f in ours:
        if f.unlocked is None:
            continue
        line = f"{f.where}: {f.unlocked}, so the bucket's owner could delete or replace it"
        if f.expired and f.version != current and f.head.seq < given.seq:
            notes.append(line)
        else:
            problems.append(line)
    return problems, notes
