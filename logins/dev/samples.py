"""Sample messages for any declared schema (a stream other than logins), for tests and demos.

Everything is read from the validate step's fields: their types, limits, patterns, enum
values, which may be null or absent. Like the login generator, every message is labelled
truthfully: "valid" (a record no earlier valid message repeats), "resend" (an identical copy
of a recent valid body) or "malformed" with exactly one defect, so that the rejection reason
the validator must give is unambiguous. Seeded: the same arguments give the same messages.

Values for a `pattern` come from rstr's xeger (random strings matching a regular expression),
a small library, rather than a regex walker of our own.
"""

from __future__ import annotations

import random
import string
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import rstr

from logins.core.config import FieldSpec, ValidateStep
from logins.dev.generator import MALFORMED, MAX_BODY_LIMIT, RESEND, VALID, GeneratedMessage

__all__ = ["iter_records"]

_TEXT = string.ascii_letters + string.digits
_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
_OFFSETS = (timezone.utc, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5)))
_RESEND_WINDOW = 50  # a resend follows its original within this many messages
_MAX_TRIES = 1000
_P_NULL = 0.05  # a nullable field is null this often
_P_ABSENT = 0.03  # an optional field is left out this often
_ABSENT = object()


class _Values:
    """Draws valid values, and values with one defect, for each declared field."""

    def __init__(self, rng: random.Random, step: ValidateStep) -> None:
        self.rng = rng
        self.step = step
        self.xeger = rstr.Rstr(rng)

    def valid(self, name: str, spec: FieldSpec) -> Any:
        """A valid value (or null / absent, where allowed, now and then)."""
        rng = self.rng
        if not spec.required and rng.random() < _P_ABSENT:
            return _ABSENT
        if spec.nullable and rng.random() < _P_NULL:
            return None
        return self._value(name, spec)

    def _value(self, name: str, spec: FieldSpec) -> Any:
        rng = self.rng
        if spec.type == "string":
            return self._string(name, spec)
        if spec.type == "integer":
            low = int(spec.min) if spec.min is not None else 0
            high = int(spec.max) if spec.max is not None else 1_000_000
            return rng.randint(low, high)
        if spec.type == "number":
            bottom = float(spec.min) if spec.min is not None else 0.0
            top = float(spec.max) if spec.max is not None else 1000.0
            return min(max(round(rng.uniform(bottom, top), 2), bottom), top)
        if spec.type == "boolean":
            return rng.random() < 0.5
        if spec.type == "timestamp":
            at = _EPOCH + timedelta(seconds=rng.randrange(365 * 86400))
            return at.astimezone(rng.choice(_OFFSETS)).isoformat().replace("+00:00", "Z")
        if spec.type == "enum":
            assert spec.values is not None
            return rng.choice(spec.values)
        assert spec.type == "version"
        return f"{rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 30)}"

    def _string(self, name: str, spec: FieldSpec) -> str:
        rng = self.rng
        for _ in range(_MAX_TRIES):
            if spec.format == "ip":
                text = ".".join(str(rng.randint(1, 254)) for _ in range(4))
            elif spec.pattern is not None:
                text = self.xeger.xeger(spec.pattern)
            else:
                size = rng.randint(1, min(spec.max_length, 24))
                text = "".join(rng.choice(_TEXT) for _ in range(size))
            if text.strip() and "\x00" not in text and len(text) <= spec.max_length:
                return text
        raise ValueError(f"{name}: no value of its pattern fits max_length {spec.max_length}")

    def defects(self, spec: FieldSpec) -> dict[str, Callable[[], Any]]:
        """For one field: the reason codes it can be made to fail with, and how."""
        rng = self.rng
        made: dict[str, Callable[[], Any]] = {}
        if not spec.nullable:
            made["null_field"] = lambda: None
        made["wrong_type"] = lambda: {
            "string": 12,
            "version": 2.3,
            "integer": "12",
            "number": "1.5",
            "boolean": 1,
            "timestamp": 1_767_225_600,
            "enum": 1,
        }[spec.type]
        if spec.type in ("string", "version"):
            made["too_long"] = lambda: "x" * (spec.max_length + rng.randint(1, 40))
            made["invalid_value"] = lambda: ""
        elif spec.type in ("integer", "number"):
            outside = _outside(spec)
            if outside is not None:
                made["invalid_value"] = lambda: outside
        elif spec.type == "timestamp":
            made["invalid_value"] = lambda: "2026-01-01T12:00:00"  # no offset
        elif spec.type == "enum":
            made["invalid_value"] = lambda: "".join(spec.values or []) + "-other"
        return made


def _outside(spec: FieldSpec) -> int | float | None:
    """A number just outside the field's range (or past bigint), if there is one."""
    if spec.min is not None:
        return spec.min - 1
    if spec.max is not None:
        return spec.max + 1
    return 2**63 if spec.type == "integer" else None


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _canonical(spec: FieldSpec, value: Any) -> Any:
    """The value as the validator keeps it (one instant, one number), for uniqueness."""
    if value is None or value is _ABSENT:
        return None
    if spec.type == "timestamp":
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    if spec.type == "number":
        return float(value)
    return value


def iter_records(
    step: ValidateStep,
    n: int,
    *,
    seed: int = 0,
    malformed_rate: float = 0.05,
    resend_rate: float = 0.05,
) -> Iterator[GeneratedMessage]:
    """`n` messages for the declared `step`, deterministically for `seed`."""
    if n < 0 or not 0 <= malformed_rate + resend_rate <= 1:
        raise ValueError("n must be >= 0 and malformed_rate + resend_rate within [0, 1]")
    rng = random.Random(seed)  # noqa: S311 - sample data, not security: it must be seedable
    values = _Values(rng, step)
    fields = list(step.fields.items())
    required = [name for name, spec in fields if spec.required]
    defects = {name: values.defects(spec) for name, spec in fields}
    # too_large only while such a body still fits in an SQS message (connectors/sqs/limits.py)
    too_large = {"too_large"} if step.max_body_bytes <= MAX_BODY_LIMIT else set()
    reasons = sorted(
        {"not_json", "not_object"}
        | too_large
        | {reason for made in defects.values() for reason in made}
        | ({"missing_field"} if required else set())
    )
    seen: set[tuple[Any, ...]] = set()
    recent: deque[tuple[int, str]] = deque(maxlen=_RESEND_WINDOW)

    def record() -> dict[str, Any]:
        for _ in range(_MAX_TRIES):
            drawn = {name: values.valid(name, spec) for name, spec in fields}
            key = tuple(_canonical(spec, drawn[name]) for name, spec in fields)
            if key not in seen:
                seen.add(key)
                return {k: v for k, v in drawn.items() if v is not _ABSENT}
        raise RuntimeError("cannot draw a new unique record: the schema's values run out")

    def malformed(reason: str) -> str:
        if reason == "too_large":
            return _dumps({**record(), "pad": "x" * step.max_body_bytes})
        if reason == "not_json":
            body = _dumps(record())
            return body[: rng.randint(1, len(body) - 1)]
        if reason == "not_object":
            return _dumps([record()])
        obj = {name: values._value(name, spec) for name, spec in fields}
        if reason == "missing_field":
            del obj[rng.choice(required)]
            return _dumps(obj)
        name = rng.choice([f for f, made in defects.items() if reason in made])
        obj[name] = defects[name][reason]()
        return _dumps(obj)

    for i in range(n):
        u = rng.random()
        if u < malformed_rate:
            reason = rng.choice(reasons)
            yield GeneratedMessage(malformed(reason), MALFORMED, reason)
            continue
        if u < malformed_rate + resend_rate and recent:
            body = recent[rng.randrange(len(recent))][1]
            yield GeneratedMessage(body, RESEND, None)
            continue
        body = _dumps(record())
        recent.append((i, body))
        yield GeneratedMessage(body, VALID, None)
