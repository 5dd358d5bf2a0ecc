"""Field types of the validate step, table-driven: what each type accepts (and becomes), and
the one reason code and detail for each way a value can be wrong. Options that do not fit
a type are refused when the configuration loads."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from flows.steps.validate import Validator
from logins.core.config import FieldSpec, ValidateStep
from logins.core.keys import TokenKey
from logins.core.records import SqsMessage
from logins.core.tokens import Tokenizer

UTC = timezone.utc

# One field per type and option, all optional so that each case sets only its own key.
SPECS: dict[str, dict[str, Any]] = {
    "s": {"type": "string", "max_length": 8},
    "code": {"type": "string", "max_length": 16, "pattern": "[A-Z]{2}-[0-9]+"},
    "ip": {"type": "string", "format": "ip"},
    "n": {"type": "integer"},
    "age": {"type": "integer", "min": 13, "max": 130},
    "x": {"type": "number"},
    "score": {"type": "number", "min": -1.5, "max": 2.5},
    "flag": {"type": "boolean"},
    "at": {"type": "timestamp"},
    "plan": {"type": "enum", "values": ["free", "pro", "team"]},
    "v": {"type": "version", "max_length": 16},
    "maybe": {"type": "integer", "nullable": True},
}
STEP = ValidateStep(
    type="validate",
    fields={name: FieldSpec(required=False, **spec) for name, spec in SPECS.items()},
)
VALIDATOR = Validator(STEP, Tokenizer([TokenKey("k1", b"\x01" * 32)]))


def parse(body: dict[str, Any] | str) -> Any:
    text = body if isinstance(body, str) else json.dumps(body)
    return VALIDATOR(SqsMessage("id-1", "rh", text, 1_700_000_000_000, 1))


ACCEPTED = [
    ("s", "abc", "abc"),
    ("s", "12345678", "12345678"),  # exactly max_length
    ("code", "AB-12", "AB-12"),
    ("ip", "2001:db8::1", "2001:db8::1"),
    ("n", 0, 0),
    ("n", -(2**63), -(2**63)),  # bigint's range, both ends
    ("n", 2**63 - 1, 2**63 - 1),
    ("age", 13, 13),
    ("age", 130, 130),
    ("x", 1, 1.0),  # an integer is a number; stored as one (double precision)
    ("x", -0.5, -0.5),
    ("x", 1e300, 1e300),
    ("score", 2.5, 2.5),
    ("score", -1.5, -1.5),
    ("flag", True, True),
    ("flag", False, False),
    ("at", "2024-05-01T12:30:00Z", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
    ("at", "2024-05-01T12:30:00z", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
    ("at", "2024-05-01T14:30:00.250+02:00",
     datetime(2024, 5, 1, 14, 30, 0, 250_000, tzinfo=timezone(timedelta(hours=2)))),
    ("at", "2024-05-01T12:30:00-05:30",
     datetime(2024, 5, 1, 12, 30, tzinfo=timezone(-timedelta(hours=5, minutes=30)))),
    ("plan", "team", "team"),
    ("maybe", None, None),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value", "expected"), ACCEPTED)
def test_accepted_values_and_what_they_become(field: str, value: Any, expected: Any) -> None:
    event = parse({field: value})
    assert event.rejection is None, event.rejection
    assert event.fields is not None
    got = event.fields[field]
    assert got == expected and type(got) is type(expected)
    if isinstance(expected, datetime):  # the instant, in UTC (timestamptz keeps no offset)
        assert got.utcoffset() == timedelta(0)


def test_a_version_gives_its_integer_and_its_exact_text() -> None:
    event = parse({"v": "2.3.0"})
    assert event.fields is not None
    assert (event.fields["v"], event.fields["v_text"]) == (20300, "2.3.0")


def test_an_optional_field_left_out_is_none() -> None:
    event = parse({})
    assert event.fields is not None
    assert event.fields == {**dict.fromkeys(SPECS), "v_text": None}


REJECTED = [
    # string
    ("s", 12, "wrong_type", "s: expected string, got number"),
    ("s", True, "wrong_type", "s: expected string, got boolean"),
    ("s", ["a"], "wrong_type", "s: expected string, got array"),
    ("s", "123456789", "too_long", "s: longer than 8 characters"),
    ("s", "", "invalid_value", "s: empty"),
    ("s", " \t", "invalid_value", "s: empty"),
    ("s", "a\x00b", "invalid_value", "s: contains NUL"),
    ("code", "ab-12", "invalid_value", "code: does not match the pattern"),
    ("code", "XAB-12", "invalid_value", "code: does not match the pattern"),  # whole value
    ("code", "AB-12 ", "invalid_value", "code: does not match the pattern"),
    ("ip", "999.1.1.1", "invalid_value", "ip: not an IP address"),
    # integer
    ("n", "12", "wrong_type", "n: expected integer, got string"),
    ("n", True, "wrong_type", "n: expected integer, got boolean"),
    ("n", 1.5, "wrong_type", "n: expected integer, got number"),
    ("n", 1.0, "wrong_type", "n: expected integer, got number"),  # written with a fraction
    ("n", 2**63, "invalid_value", "n: outside the range of bigint"),
    ("n", -(2**63) - 1, "wrong_type", "n: expected integer, got number"),  # past 64 bits
    ("n", {"v": 1}, "wrong_type", "n: expected integer, got object"),
    ("age", 12, "invalid_value", "age: less than 13"),
    ("age", 131, "invalid_value", "age: greater than 130"),
    # number
    ("x", "1.5", "wrong_type", "x: expected number, got string"),
    ("x", False, "wrong_type", "x: expected number, got boolean"),
    ("x", [1.5], "wrong_type", "x: expected number, got array"),
    ("score", 2.51, "invalid_value", "score: greater than 2.5"),
    ("score", -2, "invalid_value", "score: less than -1.5"),
    # boolean
    ("flag", 1, "wrong_type", "flag: expected boolean, got number"),
    ("flag", 0, "wrong_type", "flag: expected boolean, got number"),
    ("flag", "true", "wrong_type", "flag: expected boolean, got string"),
    # timestamp
    ("at", 1_714_566_600, "wrong_type", "at: expected string, got number"),
    ("at", "2024-05-01T12:30:00", "invalid_value",
     "at: a time without an offset (add Z or +hh:mm)"),
    ("at", "2024-05-01", "invalid_value", "at: a time without an offset (add Z or +hh:mm)"),
    ("at", "2024-05-01T25:00:00Z", "invalid_value", "at: not an ISO 8601 time"),
    ("at", "yesterday", "invalid_value", "at: not an ISO 8601 time"),
    ("at", "", "invalid_value", "at: not an ISO 8601 time"),
    ("at", "2024-05-01T12:30:00Z" + " " * 60, "invalid_value", "at: not an ISO 8601 time"),
    # enum
    ("plan", "enterprise", "invalid_value", "plan: not one of free, pro, team"),
    ("plan", "Pro", "invalid_value", "plan: not one of free, pro, team"),
    ("plan", 1, "wrong_type", "plan: expected string, got number"),
    # version
    ("v", 2.3, "wrong_type", "v: expected string, got number"),
    ("v", "1." * 9, "too_long", "v: longer than 16 characters"),
    # null where not allowed, for every type
    *((name, None, "null_field", f"{name}: must not be null") for name in SPECS if name != "maybe"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value", "reason", "detail"), REJECTED)
def test_rejected_values(field: str, value: Any, reason: str, detail: str) -> None:
    event = parse({field: value})
    assert event.rejection is not None, f"{field}={value!r} was accepted"
    assert (event.rejection.reason, event.rejection.detail) == (reason, detail)
    assert event.fields is None


def test_a_required_field_of_every_type_may_not_be_missing() -> None:
    for name, spec in SPECS.items():
        step = ValidateStep(type="validate", fields={name: FieldSpec(**spec)})
        event = Validator(step, Tokenizer([TokenKey("k1", b"\x01" * 32)]))(
            SqsMessage("id-1", "rh", "{}", 1_700_000_000_000, 1)
        )
        assert event.rejection is not None
        assert (event.rejection.reason, event.rejection.detail) == (
            "missing_field",
            f"{name}: required",
        )


def test_every_type_and_reason_is_covered() -> None:
    types = {SPECS[f]["type"] for f, *_ in ACCEPTED} | {SPECS[f]["type"] for f, *_ in REJECTED}
    assert types == {"string", "integer", "number", "boolean", "timestamp", "enum", "version"}
    reasons = {r for _, _, r, _ in REJECTED} | {"missing_field"}
    assert reasons == {"wrong_type", "too_long", "invalid_value", "null_field", "missing_field"}


def test_details_name_limits_never_values() -> None:
    for _, value, _, detail in REJECTED:
        if isinstance(value, str) and len(value.strip()) > 2:
            assert value not in detail


def test_equal_instants_and_equal_numbers_give_one_fingerprint() -> None:
    """The dedupe fingerprint covers the checked values: the same instant written with
    another offset, or 1 and 1.0 in a number field, are the same record."""
    first = parse({"at": "2024-05-01T12:30:00Z", "x": 1})
    again = parse({"at": "2024-05-01T14:30:00+02:00", "x": 1.0})
    other = parse({"at": "2024-05-01T12:30:01Z", "x": 1})
    assert first.fingerprint == again.fingerprint != other.fingerprint


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "integer", "max_length": 10}, "'max_length' does not apply to type 'integer'"),
        ({"type": "integer", "pattern": "x"}, "'pattern' does not apply to type 'integer'"),
        ({"type": "string", "min": 1}, "'min' does not apply to type 'string'"),
        ({"type": "boolean", "max": 1}, "'max' does not apply to type 'boolean'"),
        ({"type": "string", "values": ["a"]}, "'values' does not apply to type 'string'"),
        ({"type": "timestamp", "format": "ip"}, "'format' does not apply to type 'timestamp'"),
        ({"type": "enum"}, "an enum needs 'values'"),
        ({"type": "enum", "values": []}, "at least 1 item"),
        ({"type": "integer", "min": 1.5}, "an integer's min/max must be whole numbers"),
        ({"type": "number", "min": 3, "max": 2}, r"min \(3\) is greater than max \(2\)"),
        ({"type": "string", "pattern": "[a-"}, "pattern is not a valid regular expression"),
        ({"type": "uuid"}, "Input should be 'string', 'integer'"),
    ],
)
def test_options_that_do_not_fit_the_type_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FieldSpec(**spec)
