"""`steps[mask].algorithm` names what the mask step computes: HMAC-SHA256 under the token key
(the standard library's hmac here, independent of logins.core.tokens). Pre-release: the old
name `blake2b-keyed` is refused, not an alias."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from flows.steps.mask import Masker
from logins.core.config import ConfigError, MaskStep, load_config
from logins.core.keys import load_token_keys, load_vault_public_key
from logins.core.records import Event, SqsMessage
from logins.core.sealcache import SealCache
from logins.core.tokens import Tokenizer
from logins.core.vault import Sealer
from tests.helpers import REPO, make_keys

ENV = {
    "SQS_QUEUE_URL": "http://q",
    "LOGINS_TOKEN_KEY_FILE": "/keys/token.key",
    "LOGINS_VAULT_PUBLIC_KEY_FILE": "/keys/vault.pub",
}


def test_the_default_algorithm_is_hmac_sha256_and_the_mask_step_computes_it(
    tmp_path: Path,
) -> None:
    step = next(s for s in load_config(ENV).steps if isinstance(s, MaskStep))
    assert step.algorithm == "hmac-sha256"
    keys = make_keys(tmp_path / "keys")
    key_id, algorithm, secret_b64 = keys["token.key"].read_text().split()
    assert algorithm == "hmac-sha256"
    (key,) = load_token_keys(keys["token.key"])
    masker = Masker(
        step, Tokenizer([key]), Sealer(load_vault_public_key(keys["vault.pub"])), SealCache(100)
    )
    event = Event(SqsMessage("m-1", "r-1", "{}", 1_760_000_000_000, 1))
    event.fields = {"ip": "192.0.2.7", "device_id": "d-1"}
    (masked,) = masker.batch([event])
    expected = (
        hmac.new(base64.b64decode(secret_b64), b"ip\x00192.0.2.7", hashlib.sha256)
        .digest()[:16]
        .hex()
    )
    assert masked.fields is not None
    assert masked.fields[step.fields["ip"]] == f"{key_id}.{expected}"


def test_the_old_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(
        f"extends: {REPO / 'config/local.yaml'}\nsteps:\n"
        "  - type: validate\n    fields:\n      ip: {format: ip, pii: true}\n"
        "  - type: mask\n    algorithm: blake2b-keyed\n    fields: {ip: masked_ip}\n"
    )
    with pytest.raises(ConfigError, match="algorithm"):
        load_config({**ENV, "LOGINS_CONFIG": str(path)})
