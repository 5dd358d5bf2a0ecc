"""`python -m bench tokens`: the token key in a key file against the token key in KMS, on the
same generated stream, through the mask step (`flows.steps.mask.Masker`: tokens for each
batch's distinct values, then sealing), and the section of docs/benchmarks.md it writes.

KMS is moto's server (`python -m moto.server`) in a process of its own on loopback, as real
KMS is another machine: each GenerateMac is an HTTP round trip (signing, a TCP exchange,
moto's own work), which real KMS costs too, with network latency instead of moto's CPU.
`--kms-key-id` measures your own KMS key instead (boto3's credentials, AWS_REGION).

    python -m bench tokens [--messages N] [--kms-messages N]   # rewrites the section only
    python -m bench tokens --report-only                       # from bench/.work/tokens.json
    python -m bench tokens --kms-key-id alias/K [--kms-endpoint URL]   # about 15,000 calls
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import median
from typing import Any

import boto3
from botocore.config import Config

from bench.common import PYTHON, log
from flows.steps.mask import Masker
from flows.steps.validate import Validator
from logins.core.config import MaskStep, load_config
from logins.core.keys import TokenKey, hmac_key_id
from logins.core.kms import KmsKey
from logins.core.records import Event, SqsMessage
from logins.core.sealcache import SealCache
from logins.core.tokens import Tokenizer
from logins.core.vault import Sealer
from logins.dev.embedded import free_port
from logins.dev.generator import generate

BATCH = 1000  # messages per mask batch, as the flow's source hands them
# the shipped configuration's validate and mask steps (config/base.yaml; no key is read)
SHIPPED = load_config({"SQS_QUEUE_URL": "-", "LOGINS_TOKEN_KEY_FILE": "-",
                       "LOGINS_VAULT_PUBLIC_KEY_FILE": "-"})  # fmt: skip
MASK = next(step for step in SHIPPED.steps if isinstance(step, MaskStep))
SECRET = bytes(range(32))
_MOTO_CREDENTIALS = "bench"  # moto accepts any; these never reach AWS


@dataclass(frozen=True)
class Target:
    """The KMS key measured: a fresh key on moto, or the operator's own."""

    endpoint: str | None
    key_id: str
    moto: bool
    what: str


@contextlib.contextmanager
def kms_target(key_id: str | None, endpoint: str | None) -> Iterator[Target]:
    """The operator's key, else a fresh HMAC key on moto's server in its own process on a free
    loopback port."""
    if key_id is not None:
        yield Target(endpoint, key_id, False, f"the KMS key {key_id} at {endpoint or 'AWS KMS'}")
        return
    port = free_port()
    server = subprocess.Popen(
        [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    moto = Target(f"http://127.0.0.1:{port}", "", True, "moto's server (`python -m moto.server`)"
                  " in its own process on loopback, sharing the 2 cores")  # fmt: skip
    try:
        client = _client(moto)
        for _ in range(200):
            try:
                client.list_keys(Limit=1)
                break
            except Exception:
                time.sleep(0.05)
        created = client.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
        yield dataclasses.replace(moto, key_id=created["KeyMetadata"]["KeyId"])
    finally:
        server.terminate()
        server.wait(10)


def _client(target: Target, connections: int = 10) -> Any:
    secret = _MOTO_CREDENTIALS if target.moto else None  # None: boto3's credential chain
    return boto3.session.Session().client(
        "kms",
        endpoint_url=target.endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=secret,
        aws_secret_access_key=secret,
        config=Config(
            max_pool_connections=max(connections, 10),
            retries={"mode": "standard", "max_attempts": 3},
        ),
    )


def batches(messages: int, seed: int) -> list[list[dict[str, Any]]]:
    """The validated fields of the stream's valid logins, in batches of BATCH messages (the
    mask step sees only these; rejected bodies are sealed, not tokenised)."""
    validator = Validator(SHIPPED.validate_step, Tokenizer([TokenKey("b", SECRET)]))
    out: list[list[dict[str, Any]]] = []
    stream = generate(messages, seed=seed)
    for start in range(0, len(stream), BATCH):
        events = validator.batch(
            SqsMessage(str(i), "r", m.body, 0, 1)
            for i, m in enumerate(stream[start : start + BATCH], start)
        )
        out.append([e.fields for e in events if e.fields is not None])
    return out


def run_mask(tokenizer: Tokenizer, data: list[list[dict[str, Any]]]) -> dict[str, float]:
    """The mask step over every batch; messages/s of it."""
    masker = Masker(MASK, tokenizer, Sealer(_public_key()), SealCache(50_000))
    messages = 0
    started = time.perf_counter()
    for fields in data:
        events = [Event(SqsMessage("m", "r", "", 0, 1), fields=dict(f)) for f in fields]
        masker.batch(events)
        messages += len(events)
    seconds = time.perf_counter() - started
    return {"messages": messages, "seconds": seconds, "msgs_per_s": messages / seconds}


def _public_key() -> Any:
    from nacl.public import PrivateKey

    return PrivateKey(bytes(32 * [7])).public_key


def kms_run(
    target: Target,
    data: list[list[dict[str, Any]]],
    *,
    cache: int,
    threads: int,
    passes: int = 1,
) -> dict[str, Any]:
    key = KmsKey(
        target.key_id,
        region=os.environ.get("AWS_REGION", "us-east-1"),
        endpoint_url=target.endpoint,
        client=_client(target, threads),
        cache_size=cache,
        concurrency=threads,
    )
    tokenizer = Tokenizer([key])
    results = []
    for _ in range(passes):
        calls, hits, misses = key.calls, key.hits, key.misses
        result = run_mask(tokenizer, data)
        made = key.calls - calls
        lookups = (key.hits - hits) + (key.misses - misses)
        result |= {
            "kms_calls": made,
            "calls_per_s": made / result["seconds"],
            "hit_rate": (key.hits - hits) / lookups if lookups else 0.0,
            "calls_per_msg": made / result["messages"],
        }
        results.append(result)
    key.close()
    return {"cache_size": cache, "threads": threads, "passes": results}


def latency_ms(target: Target, calls: int = 200) -> float:
    client = _client(target)
    timings = []
    for i in range(calls):
        started = time.perf_counter()
        client.generate_mac(
            KeyId=target.key_id, Message=f"ip\x00{i}".encode(), MacAlgorithm="HMAC_SHA_256"
        )
        timings.append(time.perf_counter() - started)
    return median(timings) * 1000


def measure(
    messages: int = 100_000,
    kms_messages: int = 5_000,
    seed: int = 1,
    kms_key_id: str | None = None,
    kms_endpoint: str | None = None,
) -> dict[str, Any]:
    """Both custodies; the KMS runs on the first `kms_messages` of the same stream."""
    log(f"tokens: generating {messages:,} messages")
    data = batches(messages, seed)
    kms_data = batches(kms_messages, seed)
    out: dict[str, Any] = {
        "messages": messages, "kms_messages": kms_messages, "seed": seed, "batch": BATCH,
        "file": {}, "file_same": {}, "load_average_start": os.getloadavg()[0],
    }  # fmt: skip
    name, key = "hmac-sha256", TokenKey(hmac_key_id(SECRET), SECRET)
    for where, stream in (("file", data), ("file_same", kms_data)):
        runs = [run_mask(Tokenizer([key]), stream) for _ in range(3)]
        out[where][name] = sorted(runs, key=lambda r: r["msgs_per_s"])[1]
    log(f"tokens: key file ({name}) {out['file'][name]['msgs_per_s']:,.0f} msg/s")
    with kms_target(kms_key_id, kms_endpoint) as target:
        out["kms_target"] = target.what
        out["latency_ms"] = latency_ms(target)
        log(f"tokens: one GenerateMac, median {out['latency_ms']:.1f} ms")
        kms: dict[str, Any] = {}
        kms["cache_8"] = kms_run(target, kms_data, cache=50_000, threads=8, passes=4)
        kms["nocache_8"] = kms_run(target, kms_data, cache=0, threads=8)
        kms["cache_32"] = kms_run(target, kms_data, cache=50_000, threads=32)
        first = kms_data[:1]  # one batch: the cache cannot matter, the threads do
        kms["batch_1"] = kms_run(target, first, cache=50_000, threads=1)
        kms["batch_8"] = kms_run(target, first, cache=50_000, threads=8)
        for name, run in kms.items():
            first = run["passes"][0]
            log(
                f"tokens: KMS {name}: {first['msgs_per_s']:,.0f} msg/s,"
                f" {first['calls_per_s']:,.0f} calls/s, hit rate {first['hit_rate']:.0%}"
            )
        out["kms"] = kms
    out["load_average_end"] = os.getloadavg()[0]
    return out
