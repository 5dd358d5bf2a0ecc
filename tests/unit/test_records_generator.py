"""Sample messages for any declared schema (logins.dev.samples): every label is what the
validator (tested on its own, table-driven) concludes, valid records never repeat each
other, and every reason the schema allows occurs."""

from __future__ import annotations

from collections import Counter

import pytest

from flows.steps.validate import Validator
from logins.core.config import ValidateStep, load_config
from logins.core.keys import TokenKey
from logins.core.records import SqsMessage
from logins.core.tokens import Tokenizer
from logins.dev.samples import iter_records
from tests.helpers import REPO

SIGNUPS = REPO / "config" / "examples" / "signups.yaml"
ENV = {
    "LOGINS_CONFIG": str(SIGNUPS),
    "SIGNUPS_QUEUE_URL": "q",
    "DATABASE_URL": "postgresql://db/x",
    "LOGINS_TOKEN_KEY_FILE": "k",
    "LOGINS_VAULT_PUBLIC_KEY_FILE": "v",
}
EVERY_TYPE = ValidateStep.model_validate(
    {
        "type": "validate",
        "fields": {
            "code": {"type": "string", "max_length": 12, "pattern": "[A-Z]{2}-[0-9]{1,6}"},
            "ip": {"type": "string", "format": "ip"},
            "n": {"type": "integer", "required": False},
            "x": {"type": "number", "max": 10},
            "flag": {"type": "boolean", "nullable": True},
            "at": {"type": "timestamp"},
            "plan": {"type": "enum", "values": ["a", "b"]},
            "v": {"type": "version"},
        },
    }
)


def signups_step() -> ValidateStep:
    return load_config(ENV).validate_step


@pytest.mark.parametrize("step", [signups_step(), EVERY_TYPE], ids=["signups", "every-type"])
def test_labels_are_what_the_validator_concludes(step: ValidateStep) -> None:
    validator = Validator(step, Tokenizer([TokenKey("k1", b"\x01" * 32)]))
    messages = list(iter_records(step, 2000, seed=4, malformed_rate=0.2, resend_rate=0.05))
    fingerprints: Counter[bytes] = Counter()
    reasons: Counter[str] = Counter()
    for i, message in enumerate(messages):
        event = validator(SqsMessage(f"m{i}", "r", message.body, 1, 1))
        if message.kind == "malformed":
            assert event.rejection is not None, message.body
            assert event.rejection.reason == message.reason, message.body
            reasons[event.rejection.reason] += 1
        else:
            assert event.rejection is None, (message.body, event.rejection)
            if message.kind == "valid":
                fingerprints[event.fingerprint] += 1
    assert max(fingerprints.values()) == 1  # no valid record repeats another
    expected = {"too_large", "not_json", "not_object", "missing_field", "null_field"}
    expected |= {"wrong_type", "too_long", "invalid_value"}
    assert set(reasons) == expected


def test_resends_copy_a_recent_valid_body_and_the_seed_decides() -> None:
    step = signups_step()
    messages = list(iter_records(step, 300, seed=1, resend_rate=0.2))
    valid = [m.body for m in messages if m.kind == "valid"]
    assert all(m.body in valid for m in messages if m.kind == "resend")
    assert sum(m.kind == "resend" for m in messages) > 30
    assert list(iter_records(step, 300, seed=1, resend_rate=0.2)) == messages
    assert list(iter_records(step, 300, seed=2, resend_rate=0.2)) != messages


def test_a_schema_whose_values_run_out_says_so() -> None:
    tiny = ValidateStep.model_validate(
        {"type": "validate", "fields": {"flag": {"type": "boolean"}}}
    )
    with pytest.raises(RuntimeError, match="values run out"):
        list(iter_records(tiny, 10, malformed_rate=0, resend_rate=0))


def test_every_body_is_one_sqs_accepts() -> None:
    """Not empty, at most 256 KiB, SQS's characters only (restated, not imported); at the
    largest max_body_bytes there is no too_large body, since none could be sent."""
    import re

    allowed = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]+")
    step = EVERY_TYPE
    biggest = step.model_copy(update={"max_body_bytes": 262_144})
    for declared, n in ((step, 20_000), (biggest, 2_000)):
        bodies = [m for m in iter_records(declared, n, seed=7, malformed_rate=0.5)]
        refused = [
            m.reason
            for m in bodies
            if not allowed.fullmatch(m.body) or len(m.body.encode("utf-8")) > 262_144
        ]
        assert refused == []
    assert "too_large" not in {m.reason for m in iter_records(biggest, 2_000, seed=7)}
