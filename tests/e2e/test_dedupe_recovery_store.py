"""The dedupe state on disk, attacked as the holder of every key and of the recovery store.

The flow runs as a user runs it (`python -m bytewax.run flows.logins -r … -s 1 -b 0`) with a
four-second window, against the suite's PostgreSQL and moto SQS. A user logs in (and the
producer resends it); during the window, the recovery store holds the login's fingerprint and
its period's key, and the attack below finds the login in it (so the attack works). Then the
user is erased with `logins forget --user-id`, the window passes, the flow runs again on other
logins, and the same attack, with the token key file, the vault private key and every key and
byte string found in the store (every sqlite file opened, every snapshot unpickled, and the
raw bytes of every file), matches every ip of the user's /24 with a thousand device ids, the
other fields as they were: no hit, with no VACUUM or any other step by the operator. No id of
the user's messages is anywhere in the store, as text or as the UUID's 16 bytes, and the key
that served the login is in no file, at any time: a snapshot holds each period key sealed
with a pad in `dedupe-keys/` that is wiped when the period retires, so the sealed copies
SQLite keeps in its free pages and -wal file open to nothing (issue 18, finding 2: without
the pads, a retired key stayed in free space 5 runs out of 5 and re-linked the login 2 of 5).

The attack also tries the fingerprints of the design before this one (48 bits of the token
key's fingerprint of the record, kept with the first message id): on that design the store
matched the erased ip and held the message id (issue 18).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.steps.validate import Validator, canonical_digest
from logins.core.config import load_config
from logins.core.keys import TokenKey, load_token_keys
from logins.core.tokens import Tokenizer
from logins.dev.embedded import EmbeddedSqs
from logins.dev.seed import send_bodies
from tests.helpers import REPO, make_keys, run_module, service_env

WINDOW_SECONDS = 4  # the first run ends well within it, even on a loaded machine
VICTIM = {"user_id": "victim-7", "ip": "203.0.113.77", "device_id": "999-88-7777"}
CONFIG = f"""extends: {REPO / "config" / "local.yaml"}
steps:
  - type: validate
    fields:
      user_id:     {{type: string, max_length: 128}}
      app_version: {{type: version, max_length: 64}}
      device_type: {{type: string, max_length: 32}}
      ip:          {{type: string, max_length: 64, format: ip, pii: true}}
      locale:      {{type: string, max_length: 32, required: false, nullable: true}}
      device_id:   {{type: string, max_length: 256, pii: true}}
  - type: dedupe
    window_seconds: {WINDOW_SECONDS}
    shards: 4
    memory_budget_mb: 1
  - type: mask
    fields: {{ip: masked_ip, device_id: masked_device_id}}
"""


def former_fingerprint(key: TokenKey, values: list[object]) -> bytes:
    """The record digest of the designs before this one: keyed BLAKE2b-128 under a key
    derived from the token key (the MAC of `dedupe-fingerprint`), which no code computes now."""
    derived = hmac.digest(key.secret, b"dedupe-fingerprint", "sha256")
    data = "\x1f".join(["\x00" if v is None else str(v) for v in values]).encode()
    return hashlib.blake2b(data, key=derived, digest_size=16).digest()


def login(user: str, ip: str, device: str) -> str:
    return json.dumps(
        {"user_id": user, "app_version": "2.3.0", "device_type": "ios", "ip": ip,
         "locale": "US", "device_id": device}
    )  # fmt: skip


@pytest.fixture
def env(tmp_path: Path, database_url: str, queue_url: str, sqs: EmbeddedSqs) -> dict[str, str]:
    keys = make_keys(tmp_path / "keys")
    config = tmp_path / "short-window.yaml"
    config.write_text(CONFIG)
    return {
        **os.environ,
        **service_env(
            keys,
            database_url=database_url,
            queue_url=queue_url,
            endpoint_url=sqs.endpoint_url,
            LOGINS_STOP_WHEN_IDLE="1",  # the first run ends within the window
            LOGINS_CONFIG=str(config),
            PRIVATE_KEY=str(keys["vault.key"]),
        ),
    }


# -- what the attacker holds ----------------------------------------------------------------


def store_files(recovery: Path) -> dict[Path, bytes]:
    """Every file of the recovery store, raw (sqlite's free pages and WAL included)."""
    return {p: p.read_bytes() for p in sorted(recovery.rglob("*")) if p.is_file()}


def unpickled(recovery: Path) -> list[Any]:
    """Every value of every table of every sqlite file, each blob unpickled where it can be."""
    found: list[Any] = []
    for path in sorted(recovery.rglob("*.sqlite3")):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                for row in db.execute(f'SELECT * FROM "{table}"'):  # its own table names
                    for value in row:
                        found.append(value)
                        if isinstance(value, bytes):
                            try:
                                found.append(pickle.loads(value))  # the attack
                            except Exception:  # not a pickle: the raw bytes stay
                                continue
    return found


def byte_strings(value: Any) -> Iterator[bytes]:
    """Every bytes and str (as UTF-8) inside `value`, however nested."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes | bytearray):
            yield bytes(item)
        elif isinstance(item, str):
            yield item.encode()
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)


def guesses(validator: Validator) -> Iterator[tuple[str, str, list[Any]]]:
    """The victim's login with every ip of the /24 (the true device id) and with a thousand
    device ids (the true ip), the other fields as they were: (ip, device, the validated field
    values in the validator's order)."""
    fields = validator.parse(login(VICTIM["user_id"], VICTIM["ip"], VICTIM["device_id"]))
    net = VICTIM["ip"].rsplit(".", 1)[0]
    devices = [VICTIM["device_id"], *(f"{n % 1000:03d}-{n % 100:02d}-{n:04d}" for n in range(999))]
    pairs = [(f"{net}.{host}", VICTIM["device_id"]) for host in range(256)]
    pairs += [(VICTIM["ip"], device) for device in devices]
    for ip, device in pairs:
        yield ip, device, list({**fields, "ip": ip, "device_id": device}.values())


def pickled_keys(raw: bytes) -> set[bytes]:
    """Every 32-byte string pickled anywhere in `raw` (free space included): SHORT_BINBYTES."""
    keys, at = set(), raw.find(b"C\x20")
    while at >= 0:
        keys.add(raw[at + 2 : at + 34])
        at = raw.find(b"C\x20", at + 1)
    return keys


def pads(recovery: Path) -> dict[str, bytes]:
    """The period keys' pads in the recovery directory, by file name."""
    return {p.name: p.read_bytes() for p in (recovery / "dedupe-keys").glob("*.pad")}


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def opened_keys(recovery: Path) -> set[bytes]:
    """The keys of the periods the live snapshots hold, opened with their pads."""
    held = pads(recovery)
    return {
        xor(sealed, held[name])
        for value in unpickled(recovery)
        if isinstance(value, dict) and "periods" in value
        for _, sealed, _, name in value["periods"]
        if name in held
    }


def attack(recovery: Path, config_env: dict[str, str]) -> set[tuple[str, str]]:
    """The (ip, device) guesses whose fingerprint, under any key held, is in the store."""
    config = load_config(config_env)
    token_keys = load_token_keys(Path(config_env["LOGINS_TOKEN_KEY_FILE"]))
    validator = Validator(config.validate_step, Tokenizer(token_keys))
    found = unpickled(recovery)
    blobs = [b for value in found for b in byte_strings(value)]
    blobs += list(store_files(recovery).values())
    # every key the project holds: the token key file (its fingerprint key: the former
    # design), the vault's keys, and every byte string of 16-64 bytes found in the store
    keys = {b for b in blobs if 16 <= len(b) <= 64}
    keys |= {k for raw in store_files(recovery).values() for k in pickled_keys(raw)}
    keys |= {Path(config_env[k]).read_bytes() for k in ("PRIVATE_KEY", "LOGINS_TOKEN_KEY_FILE")}
    # and each 32-byte string opened with every pad still in the directory
    keys |= {
        xor(k[:32], pad) for k in list(keys) if len(k) >= 32 for pad in pads(recovery).values()
    }
    candidates: dict[bytes, tuple[str, str]] = {}
    for ip, device, values in guesses(validator):
        former = former_fingerprint(token_keys[0], values)  # the token key's (designs before)
        candidates[former[8:14]] = (ip, device)  # the first design's slot: 48 bits of it
        for digest in (canonical_digest(values), former):
            for key in keys:
                fp = hashlib.blake2b(digest, key=key[:64], digest_size=6).digest()
                candidates[fp] = (ip, device)
    hits = set()
    for blob in blobs:
        for at in range(len(blob) - 5):
            guess = candidates.get(blob[at : at + 6])
            if guess is not None:
                hits.add(guess)
    return hits


# -- the test ---------------------------------------------------------------------------------


def test_after_the_window_the_store_holds_nothing_of_an_erased_user(
    env: dict[str, str], sqs: EmbeddedSqs, queue_url: str, tmp_path: Path
) -> None:
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    made = run_module(["bytewax.recovery", str(recovery), "1"], env)
    assert made.returncode == 0, made.stderr
    flow = ["bytewax.run", "flows.logins", "-r", str(recovery), "-s", "1", "-b", "0"]
    client = sqs.client()
    victim = login(VICTIM["user_id"], VICTIM["ip"], VICTIM["device_id"])
    others = [login(f"u-{i}", f"198.51.100.{i}", f"d-{i}") for i in range(20)]
    victim_ids = send_bodies(client, queue_url, [victim, victim])  # a login and its resend
    sent = time.time()
    send_bodies(client, queue_url, others)
    first = run_module(flow, env)
    assert first.returncode == 0, first.stderr[-3000:]

    # during the window the store holds the login: the attack, which holds the pads now,
    # finds it (and so works); the period keys themselves are in no file of the store
    assert (VICTIM["ip"], VICTIM["device_id"]) in attack(recovery, env)
    live_keys = opened_keys(recovery)
    live_pads = set(pads(recovery))
    assert live_keys and live_pads
    for path, raw in store_files(recovery).items():
        assert not {key for key in live_keys if key in raw}, path

    forgot = run_module(
        ["logins", "forget", "--user-id", VICTIM["user_id"], "--reason", "erasure request",
         "--private-key-file", env["PRIVATE_KEY"]],
        env,
    )  # fmt: skip
    assert forgot.returncode == 0 and "erased 2 vault entries" in forgot.stdout, forgot.stderr
    # the window passes (SentTimestamps are SQS's wall clock): a period is one window and a
    # tick, and retires a window after its end
    time.sleep(max(0.0, sent + 2 * WINDOW_SECONDS + 1 - time.time()))
    send_bodies(client, queue_url, [login(f"v-{i}", f"192.0.2.{i}", f"e-{i}") for i in range(8)])
    # long enough for a shard that got none of these to wake and retire on the wall clock
    second = run_module(flow, {**env, "LOGINS_STOP_WHEN_IDLE": str(WINDOW_SECONDS + 2)})
    assert second.returncode == 0, second.stderr[-3000:]

    # no snapshot holds the period's key any more, and no id of the user's messages is in
    # any file of the store, free space included
    snapshots = unpickled(recovery)
    assert not live_keys & {b for value in snapshots for b in byte_strings(value)}
    for path, raw in store_files(recovery).items():
        for mid in victim_ids:
            assert mid.encode() not in raw and uuid.UUID(mid).bytes not in raw, path
    # SQLite leaves a deleted row's bytes in its free pages and -wal file, so the sealed keys
    # of the dead periods may still be there; their pads are gone, so they open to nothing.
    # No VACUUM: the attack, which also tries every 32-byte string pickled anywhere in the
    # raw files, with and without every pad left, finds nothing.
    assert not live_pads & set(pads(recovery))
    for path, raw in store_files(recovery).items():
        assert not {key for key in live_keys if key in raw}, path
    assert attack(recovery, env) == set()
