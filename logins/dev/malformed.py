"""The generator's malformed bodies (logins.dev.generator): each with exactly one defect, so
that the rejection reason the validator must give is unambiguous. The limits they break are
read from the declared schema, never restated here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson

from logins.core.config import ValidateStep
from logins.core.records import REASONS
from logins.dev.population import ABSENT_VALUE, Population, weighted_table

_REASON_WEIGHTS = (2, 14, 14, 14, 14, 14, 14, 14)  # too_large bodies are big: keep them rare
# A reason drawn with one getrandbits(TABLE_BITS) call, as the generator's hot loop does.
REASON_TABLE = tuple(REASONS[i] for i in weighted_table(_REASON_WEIGHTS))
_BAD_IPS = ("999.10.1.1", "not-an-ip", "1.2.3", "256.256.256.256", "1.2.3.4.5", "2001:db8::g1", "")
_PLAIN_TEXTS = (
    "user {uid} logged in from {ip}",
    "login ok",
    "<login user_id='{uid}' ip='{ip}'/>",
    "user_id={uid}&ip={ip}&device_type=android",
    "Internal Server Error",
)
_OTHER_SHAPES: tuple[dict[str, Any], ...] = (
    {"event": "logout", "id": 5},
    {},
    {"type": "heartbeat", "ts": 1718000000},
)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


class Malformed:
    """Bodies with exactly one defect each, so the expected reason is unambiguous."""

    __slots__ = (
        "_makers",
        "emptiable",
        "fields",
        "max_body_bytes",
        "non_nullable",
        "population",
        "required",
        "rng",
        "specs",
    )

    def __init__(
        self,
        rng: random.Random,
        population: Population,
        max_body_bytes: int,
        schema: ValidateStep,
    ) -> None:
        self.rng = rng
        self.population = population
        self.max_body_bytes = max_body_bytes
        self.specs = schema.fields
        self.fields = tuple(schema.fields)
        self.required = tuple(n for n, s in schema.fields.items() if s.required)
        self.non_nullable = tuple(n for n, s in schema.fields.items() if not s.nullable)
        # invalid_value: an empty text, or a bad address (twice as often) for an ip field
        self.emptiable = tuple(
            n
            for n, s in schema.fields.items()
            if not s.nullable
            for _ in range(2 if s.format == "ip" else 1)
        )
        self._makers: dict[str, Callable[[], str]] = {
            "too_large": self._too_large,
            "not_json": self._not_json,
            "not_object": self._not_object,
            "missing_field": self._missing_field,
            "null_field": self._null_field,
            "wrong_type": self._wrong_type,
            "too_long": self._too_long,
            "invalid_value": self._invalid_value,
        }

    def body(self, reason: str) -> str:
        return self._makers[reason]()

    def _base(self) -> dict[str, Any]:
        """A well-formed login (all six keys, in order; locale may be ABSENT_VALUE)."""
        return self.population.login(self.population.popular_index())

    @staticmethod
    def _present(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if v is not ABSENT_VALUE}

    def _valid_body(self) -> str:
        return _dumps(self._present(self._base()))

    def _too_large(self) -> str:
        obj = self._present(self._base())
        extra = self.rng.randint(1, 256)
        if self.rng.random() < 0.5:
            obj["pad"] = "x" * (self.max_body_bytes + extra)
        else:  # fewer characters than the limit, more UTF-8 bytes: the limit is in bytes
            obj["pad"] = "\u00e9" * (self.max_body_bytes // 2 + extra)
        return _dumps(obj)

    def _not_json(self) -> str:
        rng = self.rng
        variant = rng.randrange(7)
        if variant == 0:  # truncated: no proper prefix of an object is JSON
            body = self._valid_body()
            return body[: rng.randint(1, len(body) - 1)]
        if variant == 1:
            obj = self._base()
            return rng.choice(_PLAIN_TEXTS).format(uid=obj["user_id"], ip=obj["ip"])
        if variant == 2:  # a Python repr: single quotes (and None for a null locale)
            return str(self._present(self._base()))
        if variant == 3:  # whitespace only (never empty: SQS refuses an empty body)
            return rng.choice(("\t", " ", "\n"))
        if variant == 4:  # an object followed by garbage, e.g. two messages in one body
            return self._valid_body() + rng.choice(("}", "]", "x", ",", "{}", '{"user_id":1}'))
        if variant == 5 and self.max_body_bytes >= 3000:
            return "[" * 3000  # unclosed and too deep
        if variant == 6 and self.max_body_bytes >= 6000:
            return "[" * 3000 + "]" * 3000  # balanced, but deeper than any parser should go
        body = self._valid_body()
        return body[: rng.randint(1, len(body) - 1)]

    def _not_object(self) -> str:
        rng = self.rng
        variant = rng.randrange(8)
        if variant == 0:  # a batch of one
            return "[" + self._valid_body() + "]"
        if variant == 1:  # double-encoded: a JSON string holding the object
            return _dumps(self._valid_body())
        if variant == 2:
            return str(rng.randint(0, 1_000_000))
        if variant == 3:
            return rng.choice(("-1.5e3", "0.96", "[]"))
        if variant == 4:
            return '"login"'
        return ("null", "true", "false")[variant - 5]

    def _missing_field(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.10:
            return _dumps(rng.choice(_OTHER_SHAPES))
        obj = self._present(self._base())
        if r < 0.15:  # wrapped in an envelope
            return _dumps({"message": obj})
        del obj[rng.choice(self.required)]
        return _dumps(obj)

    def _null_field(self) -> str:
        obj = self._base()
        obj[self.rng.choice(self.non_nullable)] = None
        return _dumps(self._present(obj))

    def _wrong_type(self) -> str:
        rng = self.rng
        obj = self._base()
        field = rng.choice(self.fields)
        spec = self.specs[field]
        current = obj[field] if isinstance(obj[field], str) else "US"
        variant = rng.randrange(4)
        value: Any
        if variant == 0:  # a number, as a careless producer writes versions and ips
            if spec.type == "version":
                value = 2.3
            elif spec.format == "ip":
                value = rng.getrandbits(32)
            else:
                value = rng.randint(0, 1_000_000)
        elif variant == 1:
            value = rng.random() < 0.5
        elif variant == 2:
            value = [current]
        else:
            value = {"value": current}
        obj[field] = value
        return _dumps(self._present(obj))

    def _too_long(self) -> str:
        rng = self.rng
        obj = self._base()
        field = rng.choice(self.fields)
        length = self.specs[field].max_length + rng.randint(1, 40)
        seed_text = {  # what a runaway value of each key of the producer's format looks like
            "user_id": obj["user_id"],
            "app_version": "1.",
            "device_type": "android",
            "ip": "192.168.100.200:",
            "locale": "en-US-",
            "device_id": obj["device_id"],
        }[field]
        obj[field] = (seed_text * (length // len(seed_text) + 1))[:length]
        return _dumps(self._present(obj))

    def _invalid_value(self) -> str:
        rng = self.rng
        obj = self._base()
        field = rng.choice(self.emptiable)
        obj[field] = rng.choice(_BAD_IPS) if self.specs[field].format == "ip" else ""
        return _dumps(self._present(obj))
