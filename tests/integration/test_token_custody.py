"""The token key in AWS KMS (moto's KMS server over loopback): the same tokens as a key file
holding the same material, through the flow, `logins tokenize`, reveal, rotation and dedupe;
a bounded cache and concurrent calls; clear start-up errors; outages retried."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY

from flows.steps.validate import Validator
from logins.cli import main
from logins.core.keys import load_token_keys
from logins.core.kms import KmsKey, KmsKeyError
from logins.core.pipeline_keys import load_tokenizer
from logins.core.records import SqsMessage
from logins.core.tokens import Tokenizer
from logins.dev.embedded import EmbeddedKms, EmbeddedSqs, free_port
from logins.dev.generator import generate
from logins.dev.seed import send_bodies
from tests.faults.sqs_proxy import SqsFaultProxy
from tests.helpers import assert_exact_ledger, config_for, make_keys, run, service_env
from tests.integration.vaultkit import Vault, make_vault

VALUES = [
    ("ip", "192.0.2.1"),
    ("ip", "2001:db8::1"),
    ("device_id", "593-47-5928"),
    ("device_id", "é\u0301 \x1b[31m"),
    ("ip", "\ud800"),  # a lone surrogate: any str the pipeline can meet has a token
]


def kms_env(env: dict[str, str], kms: EmbeddedKms, key_id: str, **extra: str) -> dict[str, str]:
    """`env` with the token key moved from the key file to the KMS key `key_id`."""
    return {
        **env,
        "LOGINS_TOKEN_KEY_FILE": "",
        "LOGINS_TOKEN_KMS_KEY_ID": key_id,
        "LOGINS_KMS_ENDPOINT_URL": kms.endpoint_url,
        **extra,
    }


def material(key_file: Path) -> bytes:
    return load_token_keys(key_file)[0].secret


def kms_calls() -> float:
    return REGISTRY.get_sample_value("logins_token_kms_calls_total") or 0.0


def cache_hits() -> float:
    return REGISTRY.get_sample_value("logins_token_cache_total", {"result": "hit"}) or 0.0


def test_the_same_material_gives_the_same_tokens_and_fingerprints_in_either_custody(
    kms: EmbeddedKms, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys")
    env = service_env(keys, database_url="x", queue_url="q", endpoint_url="http://127.0.0.1:9")
    imported = kms.create_hmac_key(material(keys["token.key"]))  # as ImportKeyMaterial would
    file_config, kms_config = config_for(env), config_for(kms_env(env, kms, imported))
    in_file, in_kms = load_tokenizer(file_config.tokens), load_tokenizer(kms_config.tokens)
    assert in_kms.active.custody == f"kms {imported}" and in_file.active.custody == "file"
    assert in_kms.key_id == in_file.key_id  # the id is derived from the material
    assert in_kms.tokens(VALUES) == in_file.tokens(VALUES)
    assert [in_kms.tokens_all_keys(f, v) for f, v in VALUES] == [
        in_file.tokens_all_keys(f, v) for f, v in VALUES
    ]
    crosswise = [(in_file.token(f, v), f, v) for f, v in VALUES]
    assert in_kms.verify_many(crosswise) == [True] * len(VALUES)
    assert not in_kms.verify(in_file.token("ip", "192.0.2.1"), "ip", "192.0.2.2")
    # dedupe fingerprints: the validate step of either custody gives the same bytes
    body = json.dumps({"user_id": "u", "app_version": "2.3.0", "device_type": "ios",
                       "ip": "192.0.2.1", "locale": None, "device_id": "d"})  # fmt: skip
    prints = [
        Validator(config.validate_step, tokenizer)(SqsMessage("m", "r", body, 0, 1)).fingerprint
        for config, tokenizer in ((file_config, in_file), (kms_config, in_kms))
    ]
    assert prints[0] == prints[1] and len(prints[0]) == 16
    other = kms.create_hmac_key()  # material of its own: other tokens, another id
    in_other = load_tokenizer(config_for(kms_env(env, kms, other)).tokens)
    assert in_other.key_id != in_kms.key_id
    assert not set(in_other.tokens(VALUES)) & set(in_kms.tokens(VALUES))


def test_the_cache_is_a_bounded_lru_and_misses_go_out_concurrently(kms: EmbeddedKms) -> None:
    key = KmsKey(
        kms.create_hmac_key(), region="us-east-1", endpoint_url=kms.endpoint_url,
        cache_size=100, concurrency=4,
    )  # fmt: skip
    tokenizer = Tokenizer([key])
    start_calls, before, hits_before = key.calls, kms_calls(), cache_hits()
    assert start_calls == 1  # the key id, once (no key is derived for dedupe)
    ips = [("ip", f"198.51.100.{i}") for i in range(150)]
    first = tokenizer.tokens(ips)
    assert key.calls - start_calls == 150 and key.misses == 150
    assert kms_calls() - before == 150
    assert {t.name for t in threading.enumerate() if t.name.startswith("kms-mac")} >= {
        "kms-mac_0",
        "kms-mac_1",
    }  # one batch's misses on several threads at once
    assert tokenizer.tokens(ips[-100:]) == first[-100:]  # the most recent 100: cached
    assert key.calls - start_calls == 150 and key.hits == 100
    assert cache_hits() - hits_before == 100
    assert tokenizer.tokens(ips[:10]) == first[:10]  # evicted (LRU): asked again
    assert key.calls - start_calls == 160
    assert tokenizer.tokens([("ip", "198.51.100.1")] * 5) == [first[1]] * 5  # one lookup
    key.close()


def test_the_flow_under_kms_writes_the_key_files_tokens(
    kms: EmbeddedKms,
    sqs: EmbeddedSqs,
    queue_url: str,
    database_url: str,
    flow_env: dict[str, str],
    keys: dict[str, Path],
) -> None:
    imported = kms.create_hmac_key(material(keys["token.key"]))
    env = kms_env(flow_env, kms, imported)
    messages = generate(60, seed=11)
    sent = send_bodies(sqs.client(), queue_url, (m.body for m in messages))
    config = config_for(env)
    before = kms_calls()
    run(config)
    by_file = Tokenizer(load_token_keys(keys["token.key"]))
    with psycopg.connect(database_url) as conn:
        outcome = assert_exact_ledger(conn, config, sent)
        assert len(outcome["duplicate"]) == sum(m.kind == "resend" for m in messages) > 0
        rows = conn.execute("SELECT message_id, masked_ip, masked_device_id FROM user_logins")
        for message_id, masked_ip, masked_device in rows:
            body = json.loads(messages[sent.index(message_id)].body)
            assert masked_ip == by_file.token("ip", body["ip"])
            assert masked_device == by_file.token("device_id", body["device_id"])
        distinct = conn.execute("SELECT count(*) FROM pii_vault").fetchone()
    assert distinct is not None
    assert 0 < kms_calls() - before <= distinct[0] + 2  # one call per distinct value at most
    # reveal verifies a value against its token through KMS; tokenize asks KMS too
    vault = Vault(env, keys, database_url)
    ip = json.loads(next(m.body for m in messages if m.kind == "valid"))["ip"]
    token = by_file.token("ip", ip)
    code, shown = vault.reveal_json(token)
    assert code == 0 and shown == [{"token": token, "field": "ip", "value": ip, "error": None}]
    file_env = {**flow_env, "LOGINS_TOKEN_KMS_KEY_ID": ""}
    both = [vault.cli("tokenize", "--field", "ip", ip, **e).stdout for e in (file_env, env)]
    assert both[0] == both[1] == token + "\n"


def test_rotation_from_a_key_file_to_kms_and_back(
    kms: EmbeddedKms, tmp_path: Path, database_url: str
) -> None:
    vault = make_vault(tmp_path, database_url)
    old_file = vault.keys["token.key"]  # the key file the vault's tokens start under
    old = [vault.add_login(f"u-{i}", f"203.0.113.{i}", f"{i:03d}-11-1111") for i in range(3)]
    new_file = make_keys(tmp_path / "new")["token.key"]  # the new key's material, imported
    fresh = kms.create_hmac_key(material(new_file))
    to_kms = kms_env(vault.env, kms, fresh, LOGINS_TOKEN_PREVIOUS_KEY_FILE=str(old_file))
    key_file = str(vault.keys["vault.key"])
    walked = vault.cli("rotate", "run", "--reason", "into KMS", "--private-key-file", key_file,
                       "--json", **to_kms)  # fmt: skip
    assert walked.exit_code == 0, walked.output
    assert json.loads(walked.stdout)["rotated"] == 6 and json.loads(walked.stdout)["remaining"] == 0
    in_kms = load_tokenizer(config_for(to_kms).tokens)
    expected = {(t["ip"], in_kms.token("ip", f"203.0.113.{i}")) for i, t in enumerate(old)} | {
        (t["device_id"], in_kms.token("device_id", f"{i:03d}-11-1111")) for i, t in enumerate(old)
    }
    assert set(vault.query("SELECT old_token, new_token FROM pii_token_aliases")) == expected
    same_in_a_file = Tokenizer(load_token_keys(new_file))  # rotation's tokens: either custody
    assert {new for _, new in expected} == {
        same_in_a_file.token(f, v)
        for i in range(3)
        for f, v in (("ip", f"203.0.113.{i}"), ("device_id", f"{i:03d}-11-1111"))
    }
    current = vault.query("SELECT masked_ip_current FROM user_logins_unified ORDER BY user_id")
    assert [c for (c,) in current] == [in_kms.token("ip", f"203.0.113.{i}") for i in range(3)]
    revealed = vault.cli("reveal", "--user-id", "u-1", "--reason", "r", "--private-key-file",
                         key_file, "--json", **to_kms)  # fmt: skip
    assert revealed.exit_code == 0, revealed.output  # old tokens verified by the previous file
    assert {r["value"] for r in json.loads(revealed.stdout)} == {"203.0.113.1", "001-11-1111"}

    back = tmp_path / "new.key"  # and out of KMS: a new key first, the old file's line after it
    back.write_text(make_keys(tmp_path / "k2")["token.key"].read_text() + old_file.read_text())
    back.chmod(0o600)
    to_file = {**vault.env, "LOGINS_TOKEN_KEY_FILE": str(back),
               "LOGINS_KMS_ENDPOINT_URL": kms.endpoint_url,
               "LOGINS_TOKEN_PREVIOUS_KMS_KEY_IDS": fresh}  # fmt: skip
    again = vault.cli("rotate", "run", "--reason", "out of KMS", "--private-key-file", key_file,
                      "--json", **to_file)  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["remaining"] == 0
    in_file = Tokenizer(load_token_keys(back))
    current = vault.query("SELECT masked_ip_current FROM user_logins_unified ORDER BY user_id")
    assert [c for (c,) in current] == [in_file.token("ip", f"203.0.113.{i}") for i in range(3)]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unreachable", "DescribeKey failed: EndpointConnectionError: Could not connect to the"),
        ("no such key", "DescribeKey failed: NotFoundException: "),
        ("HMAC_512", "the key is HMAC_512/GENERATE_VERIFY_MAC; tokens need an HMAC_256 key"),
        ("disabled", "the key is Disabled, not Enabled"),
    ],
)
def test_an_unusable_kms_key_fails_the_start_within_seconds_naming_it(
    kms: EmbeddedKms, tmp_path: Path, case: str, message: str
) -> None:
    keys = make_keys(tmp_path / "keys")
    env = service_env(keys, database_url="x", queue_url="q", endpoint_url="http://127.0.0.1:9")
    endpoint, key_id = kms.endpoint_url, "alias/logins-no-such-key"
    if case == "unreachable":
        endpoint = f"http://127.0.0.1:{free_port()}"
        key_id = kms.create_hmac_key()
    elif case == "HMAC_512":
        key_id = kms.create_hmac_key(spec="HMAC_512")
    elif case == "disabled":
        key_id = kms.create_hmac_key()
        kms.client().disable_key(KeyId=key_id)
    run_env = {**kms_env(env, kms, key_id), "LOGINS_KMS_ENDPOINT_URL": endpoint}
    started = time.monotonic()
    checked = CliRunner().invoke(main, ["check"], env=run_env)
    assert checked.exit_code == 2 and checked.exception is not None
    assert isinstance(checked.exception, SystemExit)  # a clear error, not a traceback
    assert f"tokens.kms_key_id {key_id} at {endpoint}: " in checked.output
    assert message in checked.output
    assert time.monotonic() - started < 15


def test_a_kms_outage_is_retried_then_fails_the_batch(kms: EmbeddedKms) -> None:
    proxy = SqsFaultProxy(kms.endpoint_url)
    try:
        patient = KmsKey(kms.create_hmac_key(), region="us-east-1",
                         endpoint_url=proxy.endpoint_url, give_up_after_seconds=60)  # fmt: skip
        proxy.down()
        threading.Timer(1.5, proxy.up).start()
        started = time.monotonic()
        digests = patient.token_digests([b"ip\x00192.0.2.1", b"ip\x00192.0.2.2"])
        assert len(digests) == 2 and time.monotonic() - started >= 1.0  # waited it out
        impatient = KmsKey(patient.kms_key_id, region="us-east-1",
                           endpoint_url=proxy.endpoint_url, give_up_after_seconds=1)  # fmt: skip
        proxy.down()
        with pytest.raises(KmsKeyError, match=r"at http://127\.0\.0\.1:\d+: GenerateMac failed"):
            impatient.token_digests([b"ip\x00192.0.2.3"])
    finally:
        proxy.close()
