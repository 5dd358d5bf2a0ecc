"""Keys beyond the schema: counted in logins_messages_with_extra_fields_total, their names (never
their values, at most a few, cut short) logged at most once a minute."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import pytest
from prometheus_client import REGISTRY

from flows.steps import extrafields
from flows.steps.extrafields import MAX_NAMES, ExtraFields
from flows.steps.validate import Validator
from logins.core.config import load_config
from logins.core.keys import TokenKey
from logins.core.records import SqsMessage
from logins.core.tokens import Tokenizer
from tests.helpers import GOOD_LOGIN
from tests.unit.conftest import Clock

SECRET_VALUES = ("alice@example.com", "078-05-1120", "hunter2")


def extra_total() -> float:
    return REGISTRY.get_sample_value("logins_messages_with_extra_fields_total") or 0.0


@pytest.fixture
def clock(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Clock:
    monkeypatch.setattr(extrafields, "EXTRA", ExtraFields(clock=clock))
    monkeypatch.setattr("flows.steps.validate.EXTRA", extrafields.EXTRA)
    return clock


@pytest.fixture
def validator() -> Validator:
    env = {"LOGINS_TOKEN_KEY_FILE": "unused", "LOGINS_VAULT_PUBLIC_KEY_FILE": "unused"}
    step = load_config(env).validate_step
    return Validator(step, Tokenizer([TokenKey("k1", b"s" * 32)]))


def messages(*bodies: Mapping[str, object]) -> list[SqsMessage]:
    return [SqsMessage(f"m-{i}", "r", json.dumps(b), 1, 1) for i, b in enumerate(bodies)]


def test_extra_keys_are_counted_and_named_never_their_values(
    validator: Validator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flows.steps.extrafields")
    before = extra_total()
    batch = messages(
        {**GOOD_LOGIN, "email": SECRET_VALUES[0]},
        GOOD_LOGIN,
        {**GOOD_LOGIN, "ssn": SECRET_VALUES[1], "email": SECRET_VALUES[0]},
        {"password": SECRET_VALUES[2]},  # rejected (missing fields), still counted
    )
    events = validator.batch(batch)
    assert [e.outcome for e in events] == ["row", "row", "row", "rejected"]
    assert extra_total() - before == 3
    [record] = caplog.records
    text = record.getMessage()
    assert text.startswith("3 message(s) carried keys the schema does not declare")
    assert text.endswith("among them: email, ssn, password")
    assert record.extra_field_names == ["email", "ssn", "password"]  # type: ignore[attr-defined]
    assert record.extra_field_messages == 3  # type: ignore[attr-defined]
    logged = caplog.text + json.dumps(record.__dict__, default=str)
    assert not any(value in logged for value in SECRET_VALUES)
    assert all(e.fields is None or "email" not in e.fields for e in events)  # not stored


def test_the_names_are_logged_at_most_once_a_minute(
    validator: Validator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flows.steps.extrafields")
    before = extra_total()
    validator.batch(messages({**GOOD_LOGIN, "email": "x"}))
    clock.now += 30
    validator.batch(messages({**GOOD_LOGIN, "phone": "y"}, {**GOOD_LOGIN, "phone": "z"}))
    assert len(caplog.records) == 1  # counted, not logged again within the minute
    assert extra_total() - before == 3
    clock.now += 31
    validator.batch(messages({**GOOD_LOGIN, "email": "x"}))
    assert len(caplog.records) == 2
    second = caplog.records[1].getMessage()
    assert second.startswith("3 message(s) in the last 61s carried keys")
    assert second.endswith("among them: phone, email")


def test_at_most_a_few_names_each_cut_short_and_escaped(
    validator: Validator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flows.steps.extrafields")
    keys = {f"k{i}": i for i in range(20)}
    long_key = "x" * 100 + "-alice@example.com"
    validator.batch(messages({**GOOD_LOGIN, long_key: 1, "bad\nkey": 2, **keys}))
    names = caplog.records[0].extra_field_names  # type: ignore[attr-defined]
    assert len(names) == MAX_NAMES
    assert names[0] == "x" * 32 + "..." and names[1] == "bad\\nkey"
    assert "alice" not in caplog.text and "\n" not in caplog.records[0].getMessage()
