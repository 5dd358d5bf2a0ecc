"""The stored dedupe fingerprint depends on the login's fields and its period's random key
only (issue 18, finding 3; the attack was tests/attack/test_kms_fingerprint.py).

The pipeline runs under KMS custody (moto KMS). The attacker holds the token key's KMS
access (GenerateMac, as many calls as they like) and what the recovery store holds: the live
period keys and the stored slots. With a period key, a guess is tested with nothing else;
with every KMS-derived key instead, no guess matches anything stored.
"""

from __future__ import annotations

import hashlib
import json

from flows.steps.dedupe_window import FP_BYTES, SLOT_BYTES, Window
from flows.steps.validate import Validator, canonical_digest
from logins.core.kms import KmsKey
from logins.core.records import SqsMessage
from logins.core.tokens import Tokenizer
from logins.dev.embedded import EmbeddedKms
from logins.dev.generator import logins_schema

VICTIM = {"user_id": "victim-7", "app_version": "2.3.0", "device_type": "ios",
          "ip": "203.0.113.77", "locale": "US", "device_id": "999-88-7777"}  # fmt: skip
T0 = 1_780_000_000_000
FINGERPRINT_LABEL = b"dedupe-fingerprint"  # what the former inner key was the MAC of


def stored_fingerprints(window: Window) -> set[bytes]:
    """The 6-byte fingerprints of every slot the window's state (its snapshot) holds."""
    return {
        slots[at : at + FP_BYTES]
        for _, _, slots in window.state()["periods"]
        for at in range(0, len(slots), SLOT_BYTES)
    }


def test_kms_gives_nothing_and_the_period_key_alone_tests_a_guess(kms: EmbeddedKms) -> None:
    key_id = kms.create_hmac_key()
    tokenizer = Tokenizer([KmsKey(key_id, region="us-east-1", endpoint_url=kms.endpoint_url)])
    step = logins_schema()
    validator = Validator(step, tokenizer)
    window = Window(600, 1024)
    for n, body in enumerate([VICTIM, *({**VICTIM, "user_id": f"u-{i}"} for i in range(20))]):
        event = validator(SqsMessage(f"m{n}", "r", json.dumps(body), T0 + n, 1))
        assert event.fields is not None and not window.seen(event.fingerprint, T0 + n)
    stored = stored_fingerprints(window)
    period_keys = [key for _, key, _ in window.state()["periods"]]
    assert len(stored) == 21 and len(period_keys) == 1

    def guesses() -> list[tuple[int, list[object]]]:
        out = []
        for host in range(256):
            fields = validator.parse(json.dumps({**VICTIM, "ip": f"203.0.113.{host}"}))
            out.append((host, list(fields.values())))
        return out

    # the attacker's KMS calls: the former inner key, and the token digests of the label
    mac = kms.client().generate_mac(
        KeyId=key_id, MacAlgorithm="HMAC_SHA_256", Message=FINGERPRINT_LABEL
    )["Mac"]
    kms_keys = [mac]
    found_with_kms = []
    for host, values in guesses():
        data = "\x1f".join(["\x00" if v is None else str(v) for v in values]).encode()
        for key in kms_keys:
            inner = hashlib.blake2b(data, key=key, digest_size=16).digest()
            candidates = {inner[i : i + FP_BYTES] for i in range(16 - FP_BYTES + 1)}
            # the former design: the KMS-keyed digest under a (stolen) period key
            candidates |= {
                hashlib.blake2b(inner, key=pk, digest_size=FP_BYTES).digest() for pk in period_keys
            }
            # the KMS key as the outer key of the unkeyed digest
            candidates.add(
                hashlib.blake2b(canonical_digest(values), key=key, digest_size=FP_BYTES).digest()
            )
            if candidates & stored:
                found_with_kms.append(host)
    assert found_with_kms == []  # the attack of finding 3 now finds nothing

    # with the period key and nothing else (no token key, no KMS), a guess is tested
    found = [
        host
        for host, values in guesses()
        for pk in period_keys
        if hashlib.blake2b(canonical_digest(values), key=pk, digest_size=FP_BYTES).digest()
        in stored
    ]
    assert found == [77]
    # and the fingerprint is the same whatever the token key: it depends on none
    other = Validator(step, Tokenizer([KmsKey(kms.create_hmac_key(), region="us-east-1",
                                              endpoint_url=kms.endpoint_url)]))  # fmt: skip
    victim_body = json.dumps(VICTIM)
    assert (
        other(SqsMessage("m", "r", victim_body, T0, 1)).fingerprint
        == validator(SqsMessage("m", "r", victim_body, T0, 1)).fingerprint
    )
