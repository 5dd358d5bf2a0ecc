"""A token key that lives in AWS KMS as an HMAC key: tokens come from GenerateMac, and the
secret never enters this process, so nobody who copies the pipeline's host, memory or files
can compute a token offline. Each guess at a value costs a GenerateMac call, which KMS logs
(CloudTrail) and rate-limits.

The key must be an HMAC_256 key (KeyUsage GENERATE_VERIFY_MAC). A token is the first 16 bytes
of HMAC-SHA256, exactly what `logins.core.tokens.LocalKey` computes for an `hmac-sha256` key file
line: with the same material imported into KMS (ImportKeyMaterial), the tokens are the same.
The key id in the tokens is derived from the material the same way (`KEY_ID_LABEL`).

Throughput: a call costs a network round trip, so recent values are remembered (an LRU of
token input -> digest, `tokens.cache_size`), and the distinct uncached values of a batch are
sent as concurrent calls on a small thread pool (`tokens.kms_concurrency`). The cache holds
values the pipeline has seen (a memory dump of the host shows them, as it shows the messages
in flight); it never holds anything that computes a token for a value it has not seen.

Errors: at start, an unreachable endpoint, a missing or disabled key, a key of the wrong
spec or a refused permission fails within seconds, naming the key, the endpoint and KMS's
own error. At run time, throttling and outages are retried with capped exponential backoff
and jitter (botocore's, then ours) for `tokens.kms_give_up_after_seconds`; then the batch
fails, the flow stops, and the uncommitted messages come back from SQS.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from logins.core import metrics
from logins.core.keys import HMAC_SHA256, KEY_ID_LABEL, KeyFileError, TokenAlgorithm

MAC_ALGORITHM = "HMAC_SHA_256"
KEY_SPEC = "HMAC_256"
MAX_MESSAGE_BYTES = 4096  # GenerateMac's limit on the message
DIGEST_BYTES = 16

# KMS errors that another attempt can cure; anything else (access denied, no such key, a
# disabled key, a wrong key usage) is the configuration's and fails at once.
_TRANSIENT_CODES = {
    "ThrottlingException",
    "Throttling",
    "RequestThrottled",
    "TooManyRequestsException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "ServiceUnavailableException",
    "InternalFailure",
    "RequestTimeout",
    "RequestTimeoutException",
}


class KmsKeyError(KeyFileError):
    """A KMS token key that cannot be used; names the key and endpoint and KMS's own error."""


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = exc.response.get("Error", {}).get("Code", "")
        return code in _TRANSIENT_CODES or status >= 500
    return isinstance(exc, BotoCoreError)  # connection refused/reset, timeouts


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


class KmsKey:
    """An AWS KMS HMAC_256 key as a token key (`logins.core.tokens.MacKey`). Thread-safe: the
    Bytewax workers of a process share one."""

    algorithm: TokenAlgorithm = HMAC_SHA256

    def __init__(
        self,
        kms_key_id: str,
        *,
        region: str,
        endpoint_url: str | None = None,
        cache_size: int = 50_000,
        concurrency: int = 8,
        give_up_after_seconds: float = 300,
        client: Any = None,
    ) -> None:
        self.kms_key_id = kms_key_id
        self.custody = f"kms {kms_key_id}"
        self._where = f"tokens.kms_key_id {kms_key_id} at {endpoint_url or f'AWS KMS {region}'}"
        self._client = client or boto3.session.Session().client(
            "kms",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(
                connect_timeout=5,
                read_timeout=10,
                retries={"mode": "standard", "max_attempts": 3},
                max_pool_connections=max(concurrency, 10),
            ),
        )
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._give_up = give_up_after_seconds
        self.calls = 0  # GenerateMac calls made (the start-up ones included)
        self.hits = 0  # token digests answered from the cache
        self.misses = 0  # token digests that needed a call
        self._check_key()
        self.key_id = self._mac(KEY_ID_LABEL, at_start=True)[:4].hex()

    # -- the MacKey protocol ----------------------------------------------------------------

    def token_digests(self, messages: Sequence[bytes]) -> list[bytes]:
        found: dict[bytes, bytes] = {}
        missing: list[bytes] = []
        with self._lock:
            cache = self._cache
            for message in messages:
                if message in found:
                    continue
                digest = cache.get(message)
                if digest is None:
                    found[message] = b""
                    missing.append(message)
                else:
                    cache.move_to_end(message)
                    found[message] = digest
            self.hits += len(found) - len(missing)
            self.misses += len(missing)
        metrics.TOKEN_CACHE.labels("hit").inc(len(found) - len(missing))
        metrics.TOKEN_CACHE.labels("miss").inc(len(missing))
        for message, mac in zip(missing, self._macs(missing), strict=True):
            found[message] = mac[:DIGEST_BYTES]
        if missing and self._cache_size:
            with self._lock:
                for message in missing:
                    self._cache[message] = found[message]
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return [found[m] for m in messages]

    # -- KMS ----------------------------------------------------------------------------------

    def _macs(self, messages: list[bytes]) -> list[bytes]:
        if len(messages) <= 1 or self._concurrency <= 1:
            return [self._mac(m) for m in messages]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="kms-mac")
            pool = self._pool
        return list(pool.map(self._mac, messages))

    def _mac(self, message: bytes, at_start: bool = False) -> bytes:
        if len(message) > MAX_MESSAGE_BYTES:
            raise KmsKeyError(
                f"{self._where}: a token input of {len(message)} bytes is over GenerateMac's"
                f" {MAX_MESSAGE_BYTES}-byte limit (lower the field's max_length)"
            )
        give_up = 0 if at_start else self._give_up
        try:
            return self._generate_mac(message, give_up)
        except (ClientError, BotoCoreError) as exc:
            why = _describe_error(exc)
            raise KmsKeyError(f"{self._where}: GenerateMac failed: {why}") from None

    def _generate_mac(self, message: bytes, give_up_after: float) -> bytes:
        @retry(
            retry=retry_if_exception(_transient),
            stop=stop_after_delay(give_up_after),
            wait=wait_random_exponential(multiplier=0.5, max=10),  # full jitter, as the sink
            reraise=True,
        )
        def call() -> bytes:
            with self._lock:
                self.calls += 1
            metrics.TOKEN_KMS_CALLS.inc()
            response = self._client.generate_mac(
                KeyId=self.kms_key_id, Message=message, MacAlgorithm=MAC_ALGORITHM
            )
            mac: bytes = response["Mac"]
            return mac

        return call()

    def _check_key(self) -> None:
        try:
            meta = self._client.describe_key(KeyId=self.kms_key_id)["KeyMetadata"]
        except (ClientError, BotoCoreError) as exc:
            why = _describe_error(exc)
            raise KmsKeyError(f"{self._where}: DescribeKey failed: {why}") from None
        spec, usage = meta.get("KeySpec"), meta.get("KeyUsage")
        if spec != KEY_SPEC or usage != "GENERATE_VERIFY_MAC":
            raise KmsKeyError(
                f"{self._where}: the key is {spec}/{usage}; tokens need an {KEY_SPEC} key"
                " with KeyUsage GENERATE_VERIFY_MAC"
            )
        if meta.get("KeyState", "Enabled") != "Enabled":
            raise KmsKeyError(f"{self._where}: the key is {meta.get('KeyState')}, not Enabled")

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def __repr__(self) -> str:
        return f"KmsKey({self.kms_key_id!r}, key_id={self.key_id!r})"
