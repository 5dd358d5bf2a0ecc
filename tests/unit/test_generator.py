"""The sample-message generator: deterministic, realistic, streaming and truthfully labelled.

The labels are checked against an independent reference of the validator's rules (written
here from the spec, not imported), so a mislabelled message fails a test rather than a
benchmark's accounting.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logins.dev.generator import (
    MAX_BODY_LIMIT,
    REASONS,
    GeneratedMessage,
    generate,
    iter_messages,
)

N = 20_000
MAX_BODY = 16_384
# The spec's limits, restated so that the test does not trust the module under test.
LIMITS = {
    "user_id": 128,
    "app_version": 64,
    "device_type": 32,
    "ip": 64,
    "locale": 32,
    "device_id": 256,
}
FIELD_ORDER = ("user_id", "app_version", "device_type", "ip", "locale", "device_id")
REQUIRED = ("user_id", "app_version", "device_type", "ip", "device_id")
DEVICE_ID = re.compile(r"\d{3}-\d{2}-\d{4}")
LOCALE = re.compile(r"[A-Z]{2}")
ALL_REASONS = set(REASONS)


def field_defect(obj: dict[str, Any], field: str) -> str | None:
    """The first defect of one field: missing -> null -> type -> length -> value."""
    if field not in obj:
        return None if field == "locale" else "missing_field"
    value = obj[field]
    if value is None:
        return None if field == "locale" else "null_field"
    if not isinstance(value, str):
        return "wrong_type"
    if len(value) > LIMITS[field]:
        return "too_long"
    if field == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return "invalid_value"
    elif field != "locale" and value == "":
        return "invalid_value"
    return None


def parse(body: str) -> Any:
    """json.loads, with deep nesting (RecursionError) reported like any other bad JSON."""
    try:
        return json.loads(body)
    except RecursionError as exc:
        raise ValueError("too deep") from exc


def defects(body: str, max_body_bytes: int = MAX_BODY) -> list[str]:
    """Every defect, in the validator's order; the first is the reason it must give."""
    if len(body.encode()) > max_body_bytes:
        return ["too_large"]
    try:
        obj = parse(body)
    except ValueError:
        return ["not_json"]
    if not isinstance(obj, dict):
        return ["not_object"]
    return [d for f in FIELD_ORDER if (d := field_defect(obj, f)) is not None]


def reference_reason(body: str, max_body_bytes: int = MAX_BODY) -> str | None:
    found = defects(body, max_body_bytes)
    return found[0] if found else None


def login_tuple(body: str) -> tuple[str | None, ...]:
    obj = json.loads(body)
    return tuple(obj.get(f) for f in FIELD_ORDER)  # a null and an absent locale are alike


@pytest.fixture(scope="module")
def messages() -> list[GeneratedMessage]:
    return generate(N, seed=1)


@pytest.fixture(scope="module")
def valid(messages: list[GeneratedMessage]) -> list[dict[str, Any]]:
    return [json.loads(m.body) for m in messages if m.kind == "valid"]


def test_same_seed_same_messages_other_seed_other_messages() -> None:
    first = generate(3_000, seed=7)
    assert first == generate(3_000, seed=7)
    assert first == list(iter_messages(3_000, seed=7))
    assert [m.body for m in generate(3_000, seed=8)] != [m.body for m in first]


@pytest.mark.parametrize("n", [0, 1, 2, 4, 5, 137, 1_001])
def test_exact_count(n: int) -> None:
    assert len(generate(n, seed=n)) == n


def test_rates_roughly_as_asked(messages: list[GeneratedMessage]) -> None:
    kinds = Counter(m.kind for m in messages)
    assert set(kinds) == {"valid", "resend", "malformed"}
    assert kinds["malformed"] / N == pytest.approx(0.03, abs=0.006)
    assert kinds["resend"] / N == pytest.approx(0.02, abs=0.005)

    other = Counter(m.kind for m in generate(N, seed=2, malformed_rate=0.2, resend_rate=0.1))
    assert other["malformed"] / N == pytest.approx(0.2, abs=0.02)
    assert other["resend"] / N == pytest.approx(0.1, abs=0.02)

    assert {m.kind for m in generate(2_000, malformed_rate=0, resend_rate=0)} == {"valid"}


def test_every_reason_appears_and_too_large_is_rare(messages: list[GeneratedMessage]) -> None:
    reasons = Counter(m.reason for m in messages if m.kind == "malformed")
    assert set(reasons) == ALL_REASONS == set(REASONS)
    total = sum(reasons.values())
    assert reasons["too_large"] / total < 0.06
    for reason in ALL_REASONS - {"too_large"}:
        assert reasons[reason] / total > 0.08, reason
    assert all((m.reason is None) == (m.kind != "malformed") for m in messages)


def test_labels_match_the_validator_rules(messages: list[GeneratedMessage]) -> None:
    for m in messages:
        assert reference_reason(m.body) == m.reason, m
        if m.reason not in (None, "missing_field"):  # another shape misses several fields
            assert len(defects(m.body)) == 1, m  # exactly one defect: the reason is unambiguous


def test_valid_bodies_are_in_the_producers_format(
    messages: list[GeneratedMessage], valid: list[dict[str, Any]]
) -> None:
    for m, obj in zip([m for m in messages if m.kind == "valid"], valid, strict=True):
        assert isinstance(m.body, str)
        assert m.body == json.dumps(obj, separators=(",", ":"))
        assert [k for k in obj if k in FIELD_ORDER] == [
            f for f in FIELD_ORDER if f in obj
        ]  # the producer's key order
        assert all(isinstance(obj[f], str) for f in REQUIRED)
        assert uuid.UUID(obj["user_id"]).version == 4
        assert str(uuid.UUID(obj["user_id"])) == obj["user_id"]
        assert obj["device_type"] in {"android", "ios", "web"}
        assert DEVICE_ID.fullmatch(obj["device_id"])
        ipaddress.ip_address(obj["ip"])
        assert obj.get("locale") is None or LOCALE.fullmatch(obj["locale"])

    device_types = Counter(o["device_type"] for o in valid)
    assert device_types.most_common(1)[0][0] == "android"
    assert set(device_types) == {"android", "ios", "web"}
    locales = Counter(o.get("locale", "<absent>") for o in valid)
    assert 10 <= len(set(locales) - {None, "<absent>"}) <= 20
    assert locales[None] / len(valid) == pytest.approx(0.03, abs=0.01)
    assert locales["<absent>"] / len(valid) == pytest.approx(0.01, abs=0.005)
    ips = {o["ip"] for o in valid}
    v6 = sum(1 for ip in ips if ipaddress.ip_address(ip).version == 6)
    assert 0.02 < v6 / len(ips) < 0.10
    extra = sum(1 for o in valid if set(o) - set(FIELD_ORDER))
    assert 0 < extra / len(valid) < 0.02


def test_one_two_and_three_part_versions(valid: list[dict[str, Any]]) -> None:
    parts = Counter(o["app_version"].count(".") + 1 for o in valid)
    assert set(parts) == {1, 2, 3}
    assert all(re.fullmatch(r"\d+(\.\d+){0,2}", o["app_version"]) for o in valid)


def test_repetition_is_realistic(valid: list[dict[str, Any]]) -> None:
    users = Counter(o["user_id"] for o in valid)
    assert 500 < len(users) <= N // 5
    assert users.most_common(1)[0][1] >= 20  # some users log in often
    assert sum(1 for c in users.values() if c == 1) > 100  # and many only once
    devices = Counter(o["device_id"] for o in valid)
    ips = Counter(o["ip"] for o in valid)
    assert sum(1 for c in devices.values() if c > 1) > 100
    assert sum(1 for c in ips.values() if c > 1) > 100
    per_user: dict[str, set[str]] = {}
    for o in valid:
        per_user.setdefault(o["user_id"], set()).add(o["device_id"])
    assert max(len(d) for d in per_user.values()) == 3


def test_no_two_valid_messages_share_a_login_tuple(messages: list[GeneratedMessage]) -> None:
    tuples = [login_tuple(m.body) for m in messages if m.kind == "valid"]
    assert len(set(tuples)) == len(tuples)


def test_every_resend_copies_a_recent_valid_body(messages: list[GeneratedMessage]) -> None:
    assert messages[0].kind != "resend"
    last_valid_at: dict[str, int] = {}
    for i, m in enumerate(messages):
        if m.kind == "valid":
            assert m.body not in last_valid_at
            last_valid_at[m.body] = i
        elif m.kind == "resend":
            assert m.body in last_valid_at, i
            assert 0 < i - last_valid_at[m.body] <= 50


def test_too_large_bodies_exceed_the_limit_in_bytes(messages: list[GeneratedMessage]) -> None:
    large = [m.body for m in messages if m.reason == "too_large"]
    assert large
    assert all(len(b.encode()) > MAX_BODY for b in large)
    assert all(len(m.body.encode()) <= MAX_BODY for m in messages if m.reason != "too_large")

    small = generate(5_000, seed=3, malformed_rate=0.5, max_body_bytes=1_024)
    for m in small:
        assert reference_reason(m.body, 1_024) == m.reason, m
    assert any(m.reason == "too_large" for m in small)


def test_not_json_bodies_do_not_parse(messages: list[GeneratedMessage]) -> None:
    bodies = [m.body for m in messages if m.reason == "not_json"]
    assert len(bodies) > 50
    for body in bodies:
        with pytest.raises((ValueError, RecursionError)):
            json.loads(body)
    assert "[" * 3000 in bodies  # deep nesting is among them


def test_not_object_bodies_parse_to_non_objects(messages: list[GeneratedMessage]) -> None:
    values = [json.loads(m.body) for m in messages if m.reason == "not_object"]
    assert len(values) > 50
    assert not any(isinstance(v, dict) for v in values)
    assert {type(v) for v in values} >= {list, int, float, str, bool, type(None)}


def test_messages_are_frozen() -> None:
    message = generate(1)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.body = "{}"  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": -1},
        {"n": 5, "malformed_rate": -0.1},
        {"n": 5, "resend_rate": 1.5},
        {"n": 5, "malformed_rate": 0.6, "resend_rate": 0.6},
        {"n": 5, "max_body_bytes": 100},
        {"n": 5, "max_body_bytes": 262_144},  # a too_large body could not be sent to SQS
    ],
)
def test_bad_arguments_fail_at_the_call(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        iter_messages(**kwargs)  # not only when iterated


def test_streams_200k_messages() -> None:
    stream = iter_messages(200_000, seed=5)
    assert iter(stream) is stream  # a generator, not a list in disguise
    kinds = Counter(m.kind for m in stream)
    assert sum(kinds.values()) == 200_000


# SQS's rules, restated from its documentation so the test does not trust connectors/sqs_limits.
SQS_CHARACTERS = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]+")


def sqs_accepts(body: str) -> bool:
    return bool(SQS_CHARACTERS.fullmatch(body)) and len(body.encode("utf-8")) <= 262_144


@pytest.mark.parametrize(
    ("n", "kwargs"),
    [
        (200_000, {"seed": 11}),  # the default mix
        (100_000, {"seed": 12, "malformed_rate": 1.0, "resend_rate": 0.0}),  # every defect
        (2_000, {"seed": 13, "malformed_rate": 1.0, "resend_rate": 0.0,
                 "max_body_bytes": MAX_BODY_LIMIT}),  # the largest too_large bodies
    ],
)  # fmt: skip
def test_every_body_is_one_sqs_accepts(n: int, kwargs: dict[str, Any]) -> None:
    """Not empty, at most 256 KiB, no character outside SQS's set: the generator once sent an
    empty not_json body and LocalStack refused it at message 2,177."""
    refused = Counter(m.reason for m in iter_messages(n, **kwargs) if not sqs_accepts(m.body))
    assert refused == Counter()


@settings(max_examples=30, deadline=None, database=None)
@given(
    n=st.integers(min_value=0, max_value=400),
    seed=st.integers(min_value=0, max_value=2**32),
    malformed_rate=st.floats(min_value=0, max_value=0.5),
    resend_rate=st.floats(min_value=0, max_value=0.5),
)
def test_invariants_hold_for_any_parameters(
    n: int, seed: int, malformed_rate: float, resend_rate: float
) -> None:
    out = generate(n, seed=seed, malformed_rate=malformed_rate, resend_rate=resend_rate)
    assert len(out) == n
    assert not out or out[0].kind != "resend"
    seen: set[str] = set()
    tuples: set[tuple[str | None, ...]] = set()
    for m in out:
        assert reference_reason(m.body) == m.reason
        if m.kind == "valid":
            t = login_tuple(m.body)
            assert t not in tuples
            tuples.add(t)
            seen.add(m.body)
        elif m.kind == "resend":
            assert m.body in seen
