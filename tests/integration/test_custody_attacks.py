"""Attacks on the token key, as each attacker would try them (moto's KMS over loopback).

The pipeline host: it has the pipeline's configuration, files, environment, credentials and
memory. With a key file, that is the key: every IPv4 address can be tokenised offline. With a
KMS key, the secret is in none of them: the host computes no token without calling KMS, once
per guess, and every call is visible outside the host (a loopback proxy counts them here, as
CloudTrail records them on AWS)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from logins.core.keys import load_token_keys
from logins.core.kms import KmsKey, KmsKeyError
from logins.core.pipeline_keys import load_tokenizer
from logins.core.tokens import Tokenizer
from logins.dev.embedded import EmbeddedKms
from tests.faults.sqs_proxy import SqsFaultProxy
from tests.helpers import REPO, config_for, make_keys, service_env

SLASH_24 = [f"198.51.100.{i}" for i in range(256)]
SEEN = "198.51.100.77"  # the one address of the /24 that the pipeline tokenised


@pytest.fixture
def proxy(kms: EmbeddedKms) -> Iterator[SqsFaultProxy]:
    """KMS behind a loopback proxy: it counts every call (CloudTrail's part) and can cut the
    host off (offline)."""
    server = SqsFaultProxy(kms.endpoint_url)
    yield server
    server.close()


def read_memory(pid: int) -> bytes:
    """Every readable mapping of a process, as a host attacker with a memory dump has it."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            addresses, perms = line.split()[:2]
            if "r" not in perms:
                continue
            low, high = (int(a, 16) for a in addresses.split("-"))
            try:
                mem.seek(low)
                chunks.append(mem.read(high - low))
            except (OSError, ValueError, OverflowError):
                continue  # [vvar] and guard pages do not read
    return b"".join(chunks)


def host_process(env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.custody_child", SEEN, "192.0.2.1"],
        env={**os.environ, **env},
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, child.stderr.read() if child.stderr else ""
    return child, json.loads(line)


@pytest.mark.parametrize("custody", ["key file", "kms"])
def test_a_pipeline_host_holds_the_key_only_with_a_key_file(
    kms: EmbeddedKms, tmp_path: Path, custody: str
) -> None:
    keys = make_keys(tmp_path / "keys")
    (key,) = load_token_keys(keys["token.key"])
    secret = key.secret
    env = service_env(keys, database_url="x", queue_url="q", endpoint_url="http://127.0.0.1:9")
    if custody == "kms":  # the same material, imported into KMS; the host gets no key file
        env |= {"LOGINS_TOKEN_KEY_FILE": "", "LOGINS_KMS_ENDPOINT_URL": kms.endpoint_url,
                "LOGINS_TOKEN_KMS_KEY_ID": kms.create_hmac_key(secret)}  # fmt: skip
        keys["token.key"].unlink()
    child, tokens = host_process(env)
    try:
        memory = read_memory(child.pid)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)
    assert tokens[0] == Tokenizer([key]).token("ip", SEEN)  # the same tokens either way
    assert len(memory) > 10_000_000  # the whole process: the interpreter, boto3, the tokenizer
    found = memory.count(secret) + memory.count(base64.b64encode(secret))
    if custody == "key file":
        assert found > 0  # its memory holds the key: a dump of it enumerates everything
    else:
        assert found == 0  # no copy of the key, raw or base64, anywhere in the process
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "keys").iterdir())
    assert (base64.b64encode(secret) in on_disk) is (custody == "key file")


def test_offline_a_pipeline_host_computes_no_token_it_has_not_seen(
    kms: EmbeddedKms, proxy: SqsFaultProxy
) -> None:
    # The host's own client, with no patience: offline, each guess fails at once.
    client = boto3.session.Session().client(
        "kms", region_name="us-east-1", endpoint_url=proxy.endpoint_url,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
    )  # fmt: skip
    key = KmsKey(kms.create_hmac_key(), region="us-east-1", endpoint_url=proxy.endpoint_url,
                 client=client, give_up_after_seconds=0.001)  # fmt: skip
    tokenizer = Tokenizer([key])
    in_table = tokenizer.token("ip", SEEN)  # what the pipeline wrote into user_logins
    proxy.down()  # the host, copied and taken offline
    answered, refused = {}, 0
    for ip in SLASH_24:
        try:
            answered[ip] = tokenizer.token("ip", ip)
        except KmsKeyError as exc:
            assert "GenerateMac failed" in str(exc)
            refused += 1
    assert refused == 255  # no guess could be tested offline...
    assert answered == {SEEN: in_table}  # ...only the value it had already seen (its cache)
    key.close()


def test_each_guess_through_kms_is_a_call_kms_records(
    kms: EmbeddedKms, proxy: SqsFaultProxy, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys")
    env = service_env(keys, database_url="x", queue_url="q", endpoint_url="http://127.0.0.1:9")
    env |= {"LOGINS_TOKEN_KEY_FILE": "", "LOGINS_KMS_ENDPOINT_URL": proxy.endpoint_url,
            "LOGINS_TOKEN_KMS_KEY_ID": kms.create_hmac_key()}  # fmt: skip
    config = config_for(env)
    pipeline = load_tokenizer(config.tokens)
    in_table = pipeline.token("ip", SEEN)
    calls = proxy.counts["forwarded", "GenerateMac"]
    # the host, online, with the pipeline's configuration and credentials, enumerates the /24
    attacker = load_tokenizer(config.tokens)
    found = [ip for ip, t in zip(SLASH_24, attacker.tokens([("ip", ip) for ip in SLASH_24]),
                                 strict=True) if t == in_table]  # fmt: skip
    assert found == [SEEN]  # it works, but not unseen:
    made = proxy.counts["forwarded", "GenerateMac"] - calls
    assert made == 256 + 1  # one GenerateMac per guess (+ the key id)
