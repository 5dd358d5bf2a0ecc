"""Validate step: turn a raw SQS body into checked fields, or a rejection with a reason code.

Checks run in a fixed order so every body gets one, predictable reason: size, JSON, object,
then each field of the schema in order: missing -> null -> type -> length -> value.
Details name the field and the limit, never the value (it may be PII).
Unknown extra keys are ignored (the producer may add fields; they are not stored).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

import orjson

from logins.appversion import encode_app_version
from logins.config import FieldSpec, ValidateStep
from logins.records import REASONS, Event, Rejection, SqsMessage, ValidationReason
from logins.tokens import Tokenizer

__all__ = ["REASONS", "Validator"]


class Invalid(Exception):
    def __init__(self, reason: ValidationReason, detail: str) -> None:
        assert reason in REASONS
        self.rejection = Rejection(reason, detail)


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


# The dotted-quad IPv4 text that ipaddress.ip_address accepts (no leading zeros, each part
# 0-255): matched here in one C call; anything else (IPv6, errors) goes to ipaddress.
_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                   r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")  # fmt: skip
_VERSION_CACHE_SIZE = 4096


def _is_ip(value: str) -> bool:
    if _IPV4.fullmatch(value) is not None:
        return True
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_field(name: str, spec: FieldSpec, obj: dict[str, Any]) -> str | None:
    if name not in obj:
        if spec.required:
            raise Invalid("missing_field", f"{name}: required")
        return None
    value = obj[name]
    if value is None:
        if spec.nullable:
            return None
        raise Invalid("null_field", f"{name}: must not be null")
    if not isinstance(value, str):
        raise Invalid("wrong_type", f"{name}: expected string, got {_json_type(value)}")
    if len(value) > spec.max_length:
        raise Invalid("too_long", f"{name}: longer than {spec.max_length} characters")
    if "\x00" in value:  # JSON allows "\u0000"; PostgreSQL text cannot hold it
        raise Invalid("invalid_value", f"{name}: contains NUL")
    if not value.strip():
        raise Invalid("invalid_value", f"{name}: empty")
    if spec.format == "ip" and not _is_ip(value):
        raise Invalid("invalid_value", f"{name}: not an IP address")
    return value


def check_value(name: str, spec: FieldSpec, value: object) -> str | None:
    """One field's value checked as `Validator.parse` checks it (`logins tokenize` uses it):
    the value itself (values are tokenised exactly as sent, never normalised), or Invalid."""
    return _check_field(name, spec, {name: value})


class Validator:
    """Validates bodies against the configured schema; `fingerprint`s valid records for dedupe."""

    def __init__(self, step: ValidateStep, tokenizer: Tokenizer) -> None:
        self._step = step
        self._fields = list(step.fields.items())
        self._tokenizer = tokenizer
        # The fast path's plan: (name, spec, max_length, nullable, is_ip, version text key).
        self._plan = [
            (name, spec, spec.max_length, spec.nullable, spec.format == "ip",
             f"{name}_text" if spec.type == "version" else None)
            for name, spec in self._fields
        ]  # fmt: skip
        self._versions: dict[str, int | None] = {}

    def parse(self, body: str) -> dict[str, Any]:
        """The checked fields of `body` (version fields also as `<name>_text`), or Invalid."""
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
        fields: dict[str, Any] = {}
        for name, spec, max_length, nullable, is_ip, text_key in self._plan:
            # Fast path: the checks of _check_field for a value that passes them all (or an
            # allowed null); anything else goes through _check_field for its exact reason.
            value = obj.get(name)
            if isinstance(value, str):
                if not (
                    value
                    and len(value) <= max_length
                    and "\x00" not in value
                    and not value.isspace()  # the same whitespace as str.strip()
                    and (not is_ip or _is_ip(value))
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
        try:
            fields = self.parse(message.body)
        except Invalid as invalid:
            return Event(message=message, rejection=invalid.rejection)
        fingerprint = self._tokenizer.fingerprint(list(fields.values()))
        return Event(message=message, fields=fields, fingerprint=fingerprint)

    def batch(self, messages: Iterable[SqsMessage]) -> list[Event]:
        return [self(m) for m in messages]
