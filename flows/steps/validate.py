"""Validate step: turn a raw SQS body into checked fields, or a rejection with a reason code.

Checks run in a fixed order so every body gets one, predictable reason: size, JSON, object,
then each field of the schema in order: missing -> null -> type -> length -> value.
Details name the field and the limit, never the value (it may be PII).
Unknown extra keys are ignored (the producer may add fields; they are not stored), and
counted, their names logged at most once a minute (flows/steps/extrafields.py).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import orjson

from flows.steps.extrafields import EXTRA
from logins.core.appversion import encode_app_version
from logins.core.config import FieldSpec, ValidateStep
from logins.core.records import REASONS, Event, Rejection, SqsMessage, ValidationReason
from logins.core.tokens import Tokenizer

__all__ = ["REASONS", "Validator"]


class Invalid(Exception):
    def __init__(self, reason: ValidationReason, detail: str) -> None:
        assert reason in REASONS
        self.rejection = Rejection(reason, detail)


_JSON_TYPES = {dict: "object", list: "array", bool: "boolean", int: "number", float: "number"}


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _got(value: object) -> str:
    """A value's JSON type, for a field's `wrong_type` detail."""
    return "string" if isinstance(value, str) else _json_type(value)


# The dotted-quad IPv4 text that ipaddress.ip_address accepts (no leading zeros, each part
# 0-255): matched here in one C call; anything else (IPv6, errors) goes to ipaddress.
_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                   r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")  # fmt: skip
_VERSION_CACHE_SIZE = 4096
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
_MAX_TIMESTAMP_CHARS = 64  # longer than any ISO 8601 time: not parsed at all


def _is_ip(value: str) -> bool:
    if _IPV4.fullmatch(value) is not None:
        return True
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_string(name: str, spec: FieldSpec, value: object) -> str:
    """string and version: length, then the value (NUL, empty, format, pattern)."""
    if not isinstance(value, str):
        raise Invalid("wrong_type", f"{name}: expected string, got {_got(value)}")
    if len(value) > spec.max_length:
        raise Invalid("too_long", f"{name}: longer than {spec.max_length} characters")
    if "\x00" in value:  # JSON allows "\u0000"; PostgreSQL text cannot hold it
        raise Invalid("invalid_value", f"{name}: contains NUL")
    if not value.strip():
        raise Invalid("invalid_value", f"{name}: empty")
    if spec.format == "ip" and not _is_ip(value):
        raise Invalid("invalid_value", f"{name}: not an IP address")
    if spec.pattern is not None and _pattern(spec.pattern).fullmatch(value) is None:
        raise Invalid("invalid_value", f"{name}: does not match the pattern")
    return value


def _check_bounds(name: str, spec: FieldSpec, value: float) -> None:
    if spec.min is not None and value < spec.min:
        raise Invalid("invalid_value", f"{name}: less than {spec.min}")
    if spec.max is not None and value > spec.max:
        raise Invalid("invalid_value", f"{name}: greater than {spec.max}")


def _check_integer(name: str, spec: FieldSpec, value: object) -> int:
    # type() and not isinstance(): bool is a subclass of int, and true is not an integer.
    # orjson gives a float for a number with a fraction or an exponent: not an integer either.
    if type(value) is not int:
        raise Invalid("wrong_type", f"{name}: expected integer, got {_got(value)}")
    if not _BIGINT_MIN <= value <= _BIGINT_MAX:
        raise Invalid("invalid_value", f"{name}: outside the range of bigint")
    _check_bounds(name, spec, value)
    return value


def _check_number(name: str, spec: FieldSpec, value: object) -> float:
    if type(value) is not float and type(value) is not int:
        raise Invalid("wrong_type", f"{name}: expected number, got {_got(value)}")
    number = float(value)  # one type in the row and in the fingerprint: 1 and 1.0 are equal
    _check_bounds(name, spec, number)
    return number


def _check_boolean(name: str, spec: FieldSpec, value: object) -> bool:
    if type(value) is not bool:
        raise Invalid("wrong_type", f"{name}: expected boolean, got {_got(value)}")
    return value


def _check_timestamp(name: str, spec: FieldSpec, value: object) -> datetime:
    if not isinstance(value, str):
        raise Invalid("wrong_type", f"{name}: expected string, got {_got(value)}")
    text = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value  # 3.10 has no "Z"
    try:
        parsed = datetime.fromisoformat(text) if len(text) <= _MAX_TIMESTAMP_CHARS else None
    except (ValueError, UnicodeError):
        parsed = None
    if parsed is None:
        raise Invalid("invalid_value", f"{name}: not an ISO 8601 time")
    if parsed.tzinfo is None:
        raise Invalid("invalid_value", f"{name}: a time without an offset (add Z or +hh:mm)")
    # In UTC: timestamptz keeps the instant, not the offset, and the same instant written
    # with another offset is the same value (one dedupe fingerprint).
    return parsed.astimezone(timezone.utc)


def _check_enum(name: str, spec: FieldSpec, value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("wrong_type", f"{name}: expected string, got {_got(value)}")
    assert spec.values is not None
    if value not in spec.values:
        raise Invalid("invalid_value", f"{name}: not one of {', '.join(spec.values)}")
    return value


_CHECKS: dict[str, Callable[[str, FieldSpec, object], Any]] = {
    "string": _check_string,
    "version": _check_string,
    "integer": _check_integer,
    "number": _check_number,
    "boolean": _check_boolean,
    "timestamp": _check_timestamp,
    "enum": _check_enum,
}


def _check_field(name: str, spec: FieldSpec, obj: dict[str, Any]) -> Any:
    """The field's checked value, or Invalid: missing -> null -> type -> length -> value."""
    if name not in obj:
        if spec.required:
            raise Invalid("missing_field", f"{name}: required")
        return None
    value = obj[name]
    if value is None:
        if spec.nullable:
            return None
        raise Invalid("null_field", f"{name}: must not be null")
    return _CHECKS[spec.type](name, spec, value)


@functools.lru_cache(maxsize=64)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _string_test(spec: FieldSpec) -> Callable[[str], object] | None:
    """The fast path's value test beyond length, NUL and empty: format, pattern, or None."""
    tests: list[Callable[[str], object]] = []
    if spec.format == "ip":
        tests.append(_is_ip)
    if spec.pattern is not None:
        tests.append(_pattern(spec.pattern).fullmatch)
    if not tests:
        return None
    if len(tests) == 1:
        return tests[0]
    return lambda value: all(test(value) for test in tests)


# Unkeyed on purpose (issue 18, finding 3): the dedupe window hashes this digest under a random
# key of its period, and that period key must be the only key a guess needs. A key derived
# from the token key (one KMS GenerateMac under KMS) gave an attacker with a period key an
# offline test of every guess. This digest is never stored; a copy of a prepared state costs
# what the keyed one did.
_DIGEST = hashlib.blake2b(digest_size=16)


def canonical_digest(values: Iterable[object]) -> bytes:
    """An unkeyed digest of a record's checked values in the schema's order, for dedupe only
    (never stored; the window keys it per period: flows/steps/dedupe_window.py)."""
    h = _DIGEST.copy()
    h.update("\x1f".join(["\x00" if v is None else str(v) for v in values]).encode())
    return h.digest()


def check_value(name: str, spec: FieldSpec, value: object) -> str | None:
    """One field's value checked as `Validator.parse` checks it (`logins tokenize` uses it):
    the value itself (values are tokenised exactly as sent, never normalised), or Invalid."""
    return _check_field(name, spec, {name: value})


class Validator:
    """Validates bodies against the configured schema; gives valid records their dedupe
    `fingerprint` (`canonical_digest` of every checked value, in the schema's order).

    `tokenizer` is not used: the fingerprint depends on no key (kept for its callers)."""

    def __init__(self, step: ValidateStep, tokenizer: Tokenizer | None = None) -> None:
        self._step = step
        # The fast path's plan, per field: (name, spec, max_length, nullable, value test,
        # version text key, checker). Strings and versions (every field of the logins schema)
        # are checked inline; the other types by their checker (`None` for strings).
        self._plan = [
            (name, spec, spec.max_length, spec.nullable, _string_test(spec),
             f"{name}_text" if spec.type == "version" else None,
             None if spec.type in ("string", "version") else _CHECKS[spec.type])
            for name, spec in step.fields.items()
        ]  # fmt: skip
        self._versions: dict[str, int | None] = {}
        self._declared = frozenset(step.fields)

    def parse(self, body: str, extra: list[list[str]] | None = None) -> dict[str, Any]:
        """The checked fields of `body` (version fields also as `<name>_text`), or Invalid.
        An object's keys that the schema does not declare are appended to `extra`."""
        if len(body) * 4 > self._step.max_body_bytes and (
            len(body.encode("utf-8", "surrogatepass")) > self._step.max_body_bytes
        ):
            raise Invalid("too_large", f"body over {self._step.max_body_bytes} bytes")
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Invalid("not_json", "body is not JSON") from None
        if not isinstance(obj, dict):
            raise Invalid("not_object", f"body is a JSON {_json_type(obj)}, not an object")
        if extra is not None and not obj.keys() <= self._declared:
            extra.append([key for key in obj if key not in self._declared])
        fields: dict[str, Any] = {}
        for name, spec, max_length, nullable, test, text_key, check in self._plan:
            value = obj.get(name)
            if check is not None:  # not a string: its checker, unless an allowed null
                if value is not None:
                    fields[name] = check(name, spec, value)
                elif nullable and name in obj:
                    fields[name] = None
                else:
                    fields[name] = _check_field(name, spec, obj)
                continue
            # Fast path: the checks of _check_string for a value that passes them all (or an
            # allowed null); anything else goes through _check_field for its exact reason.
            if isinstance(value, str):
                if not (
                    value
                    and len(value) <= max_length
                    and "\x00" not in value
                    and not value.isspace()  # the same whitespace as str.strip()
                    and (test is None or test(value))
                ):
                    value = _check_field(name, spec, obj)
            elif not (value is None and nullable and name in obj):
                value = _check_field(name, spec, obj)  # absent, a disallowed null, a non-string
            if text_key is not None:
                fields[name] = None if value is None else self._version(value)
                fields[text_key] = value
            else:
                fields[name] = value
        return fields

    def _version(self, text: str) -> int | None:
        versions = self._versions
        try:
            return versions[text]
        except KeyError:
            if len(versions) >= _VERSION_CACHE_SIZE:
                versions.clear()
            code = versions[text] = encode_app_version(text)
            return code

    def __call__(self, message: SqsMessage) -> Event:
        return self.batch([message])[0]

    def batch(self, messages: Iterable[SqsMessage]) -> list[Event]:
        """An event per message, in order: its checked fields and fingerprint, or why not."""
        parse, fingerprint = self.parse, canonical_digest
        events = []
        extra: list[list[str]] = []  # per message with undeclared keys, their names
        for message in messages:  # one loop for the batch: no call per message but these
            try:
                fields = parse(message.body, extra)
            except Invalid as invalid:
                events.append(Event(message, rejection=invalid.rejection))
                continue
            events.append(Event(message, fields, fingerprint=fingerprint(fields.values())))
        if extra:
            EXTRA.add(len(extra), (name for names in extra for name in names))
        return events
