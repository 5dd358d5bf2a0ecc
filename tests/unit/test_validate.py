"""Validation: every reason code, table-driven, and what a valid body becomes."""

from __future__ import annotations

import json

import pytest

from flows.steps.validate import REASONS, Validator
from logins.core.config import FieldSpec, ValidateStep
from logins.core.keys import TokenKey
from logins.core.records import Event, SqsMessage
from logins.core.tokens import Tokenizer
from tests.helpers import GOOD_LOGIN

SCHEMA = ValidateStep(
    type="validate",
    max_body_bytes=8192,
    fields={
        "user_id": FieldSpec(max_length=128),
        "app_version": FieldSpec(type="version", max_length=64),
        "device_type": FieldSpec(max_length=32),
        "ip": FieldSpec(max_length=64, format="ip", pii=True),
        "locale": FieldSpec(max_length=32, required=False, nullable=True),
        "device_id": FieldSpec(max_length=256, pii=True),
    },
)


@pytest.fixture
def validator() -> Validator:
    return Validator(SCHEMA, Tokenizer([TokenKey("k1", b"\x01" * 32)]))


def check(validator: Validator, body: str) -> Event:
    return validator(SqsMessage("id-1", "rh", body, 1_700_000_000_000, 1))


def with_(**changes: object) -> str:
    data = {**GOOD_LOGIN, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...})


CASES = [
    ("too_large", with_(pad="x" * 9000), "body over 8192 bytes"),
    ("too_large", with_(pad="é" * 4100), "body over 8192 bytes"),  # bytes, not characters
    ("not_json", "{not json", "body is not JSON"),
    ("not_json", "", "body is not JSON"),
    ("not_json", json.dumps(GOOD_LOGIN) + " trailing", "body is not JSON"),
    ("not_json", "[" * 3000 + "]" * 3000, "body is not JSON"),  # nesting beyond the parser
    ("not_object", "[1, 2]", "body is a JSON array, not an object"),
    ("not_object", "null", "body is a JSON NoneType, not an object"),
    ("not_object", '"text"', "body is a JSON str, not an object"),
    ("missing_field", with_(user_id=...), "user_id: required"),
    ("missing_field", with_(device_id=...), "device_id: required"),
    ("missing_field", '{"event": "logout", "id": 5}', "user_id: required"),
    ("null_field", with_(ip=None), "ip: must not be null"),
    ("null_field", with_(app_version=None), "app_version: must not be null"),
    ("wrong_type", with_(user_id=42), "user_id: expected string, got number"),
    ("wrong_type", with_(app_version=2.3), "app_version: expected string, got number"),
    ("wrong_type", with_(ip=["1.2.3.4"]), "ip: expected string, got array"),
    (
        "wrong_type",
        with_(device_type={"os": "android"}),
        "device_type: expected string, got object",
    ),
    ("wrong_type", with_(locale=True), "locale: expected string, got boolean"),
    ("too_long", with_(user_id="u" * 129), "user_id: longer than 128 characters"),
    ("too_long", with_(device_type="d" * 33), "device_type: longer than 32 characters"),
    ("invalid_value", with_(user_id=""), "user_id: empty"),
    ("invalid_value", with_(ip="999.10.1.1"), "ip: not an IP address"),
    ("invalid_value", with_(ip="not-an-ip"), "ip: not an IP address"),
]


@pytest.mark.parametrize(("reason", "body", "detail"), CASES)
def test_rejections(validator: Validator, reason: str, body: str, detail: str) -> None:
    event = check(validator, body)
    assert event.outcome == "rejected"
    assert event.rejection is not None
    assert (event.rejection.reason, event.rejection.detail) == (reason, detail)
    assert event.fields is None


def test_every_reason_code_is_covered() -> None:
    assert {reason for reason, _, _ in CASES} == set(REASONS)


def test_details_never_contain_the_value(validator: Validator) -> None:
    for body in [with_(ip="10.0.0.999"), with_(user_id="secret-" * 30), with_(ip=12345)]:
        event = check(validator, body)
        assert event.rejection is not None
        assert "10.0.0.999" not in event.rejection.detail
        assert "secret" not in event.rejection.detail
        assert "12345" not in event.rejection.detail


@pytest.mark.parametrize(
    ("version", "encoded"),
    [
        ("2.3.0", 20300),
        ("0.96", 9600),
        ("3.7", 30700),
        ("3", 30000),
        ("2.3.0-beta", None),
        ("1.2.3.4", None),
        ("1.100", None),
    ],
)
def test_valid_body_becomes_fields(validator: Validator, version: str, encoded: int | None) -> None:
    event = check(validator, with_(app_version=version))
    assert event.outcome == "row"
    assert event.fields == {
        "user_id": GOOD_LOGIN["user_id"],
        "app_version": encoded,
        "app_version_text": version,
        "device_type": "android",
        "ip": "199.172.111.135",
        "locale": "RU",
        "device_id": "593-47-5928",
    }


@pytest.mark.parametrize("locale", [None, ...])
def test_locale_may_be_null_or_absent(validator: Validator, locale: object) -> None:
    event = check(validator, with_(locale=locale))
    assert event.outcome == "row"
    assert event.fields is not None and event.fields["locale"] is None


def test_ipv6_and_extra_keys_are_accepted(validator: Validator) -> None:
    event = check(validator, with_(ip="2001:db8::1", extra="ignored"))
    assert event.outcome == "row"
    assert event.fields is not None and "extra" not in event.fields


def test_fingerprint_is_content_based_and_depends_on_no_key(validator: Validator) -> None:
    """The dedupe window keys it per period; no key of the token key's may be in it (issue
    18, finding 3: tests/unit/test_dedupe_fingerprint_keys.py)."""
    first, again = check(validator, with_()), check(validator, with_())
    other = check(validator, with_(locale="DE"))
    assert first.fingerprint == again.fingerprint != other.fingerprint
    rekeyed = Validator(SCHEMA, Tokenizer([TokenKey("k2", b"\x02" * 32)]))
    assert check(rekeyed, with_()).fingerprint == first.fingerprint
