"""Realistic sample SQS login messages in the producer's format, for the demo, tests and benchmarks.

Seeded and streaming: `iter_messages` yields one message at a time (well over 100k/s), so a
1M-message benchmark holds only the user population (capped) and a table of 8 bytes per message
that keeps valid logins unique (about 100 MB in all at 1M).
Every message is labelled truthfully: "valid", "resend" (an identical copy of a recent valid body,
as a producer retry looks) or "malformed" with exactly one defect, so that the rejection reason
the validator must give is unambiguous.

Malformed or not, every body is one SQS accepts (connectors/sqs/limits.py): never empty, at most
256 KiB, only characters of SQS's allowed set. A defect SQS itself would refuse never reaches a
queue, so the generator does not make one.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from connectors.sqs.limits import MAX_BODY_BYTES as SQS_MAX_BODY_BYTES
from logins.core.config import ValidateStep, load_config
from logins.core.records import REASONS as VALIDATOR_REASONS

VALID = "valid"
RESEND = "resend"
MALFORMED = "malformed"
KINDS = (VALID, RESEND, MALFORMED)

# The validator's reason codes, in the order it checks: size, JSON, object, then per field
# (in the schema's order) missing -> null -> type -> length -> value.
REASONS = VALIDATOR_REASONS
# The producer's format: the keys the realistic bodies below are written with, in the order
# the producer writes them. Their limits (required, nullable, lengths, types) are read from
# the declared schema, never restated here; other schemas: logins.dev.samples.
PRODUCER_KEYS = ("user_id", "app_version", "device_type", "ip", "locale", "device_id")
_PLACEHOLDER_ENV = {
    "SQS_QUEUE_URL": "-",
    "LOGINS_TOKEN_KEY_FILE": "-",
    "LOGINS_VAULT_PUBLIC_KEY_FILE": "-",
}
MAX_USERS = 200_000  # caps the population, which is what bounds memory on long streams
MIN_BODY_BYTES = 1024  # room for every non-too_large body the generator writes
# A too_large body is at most max_body_bytes + ~850 bytes (its padding and the login around it),
# and must still fit in an SQS message.
MAX_BODY_LIMIT = SQS_MAX_BODY_BYTES - 1024

# Weighted vocabularies. One-, two- and three-part versions all occur in the producer's data;
# "4.0.105" has a patch >= 100 and so does not fit the integer encoding (kept as text only).
_APP_VERSIONS: tuple[tuple[str, int], ...] = (
    ("2.3.0", 14), ("2.3.1", 10), ("2.4.0", 9), ("2.4.1", 7), ("2.5.0", 6), ("3.0.0", 6),
    ("3.0.2", 5), ("3.1.0", 4), ("2.2.5", 4), ("2.1.0", 3), ("1.9.12", 2), ("3.7", 5),
    ("3.6", 3), ("2.0", 2), ("0.96", 3), ("0.95", 1), ("3", 3), ("2", 1), ("4.0.105", 1),
)  # fmt: skip
_LOCALES: tuple[tuple[str, int], ...] = (
    ("US", 22), ("RU", 10), ("GB", 8), ("DE", 8), ("FR", 7), ("BR", 7), ("IN", 7), ("ES", 5),
    ("IT", 5), ("JP", 5), ("MX", 4), ("CA", 4), ("PL", 3), ("TR", 3), ("NL", 2),
)  # fmt: skip
_DEVICE_TYPES: tuple[tuple[str, int], ...] = (("android", 55), ("ios", 33), ("web", 12))
_VERSION_NAMES = tuple(v for v, _ in _APP_VERSIONS)
_LOCALE_NAMES = tuple(c for c, _ in _LOCALES)
_NV = len(_VERSION_NAMES)
_NULL = len(_LOCALE_NAMES)  # locale index meaning JSON null
_ABSENT = _NULL + 1  # locale index meaning the key is left out
_NL_KEY = _NULL + 1  # null and absent are the same tuple value (no locale)
# The locale part of a valid body, by locale index (the body is built by hand on the hot path).
_LOCALE_FRAGMENTS = (*(f',"locale":"{c}"' for c in _LOCALE_NAMES), ',"locale":null', "")
_EXTRA_FRAGMENTS = (',"extra":1', ',"client":"beta"', ',"retries":0', ',"sdk":{"name":"kt"}')

_P_LOCALE_NULL = 0.03
_P_LOCALE_ABSENT = 0.01
_P_LOCALE_HOME = 0.6  # a user mostly logs in with the same locale
_P_EXTRA_KEY = 0.005
_P_IPV6 = 0.05
_ZIPF_S = 0.5  # popularity exponent: a few heavy users without exhausting their combinations
_MAX_DEVICES = 3
_MAX_IPS = 4
_RESEND_WINDOW = 50  # a resend follows its original within this many messages
_TRIES_PER_USER = 8  # redraws for one user before moving to another (heavy users saturate)
_MAX_TRIES = 100_000
_TABLE_BITS = 10
_IPV4_FIRST_OCTETS = tuple(o for o in range(1, 224) if o not in (10, 127))
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # the version nibble and the variant bits
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant
_COMBOS = _MAX_DEVICES * _MAX_IPS * _NV * _NL_KEY  # distinct logins one user can have
assert MAX_USERS * _COMBOS < 2**32 - 1, "packed login keys must fit the uint32 table"
_FIB32 = 2654435769  # 2**32 / golden ratio: Fibonacci hashing spreads neighbouring keys


def _table(weights: Sequence[int]) -> tuple[int, ...]:
    """A 2**_TABLE_BITS lookup table of indices, so a weighted draw is one getrandbits call."""
    size = 1 << _TABLE_BITS
    total = sum(weights)
    table = [i for i, w in enumerate(weights) for _ in range(max(1, w * size // total))]
    top = max(range(len(weights)), key=weights.__getitem__)
    table += [top] * (size - len(table))
    return tuple(table[:size])


_VERSION_TABLE = _table([w for _, w in _APP_VERSIONS])
_LOCALE_TABLE = _table([w for _, w in _LOCALES])
_DEVICE_TYPE_TABLE = tuple(_DEVICE_TYPES[i][0] for i in _table([w for _, w in _DEVICE_TYPES]))

_REASON_WEIGHTS = (2, 14, 14, 14, 14, 14, 14, 14)  # too_large bodies are big: keep them rare
_REASON_TABLE = tuple(REASONS[i] for i in _table(_REASON_WEIGHTS))
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
_ABSENT_VALUE = object()  # marks a locale key that is left out of a malformed body's base


@dataclass(frozen=True, slots=True)
class GeneratedMessage:
    """One SQS message body and what the pipeline must conclude about it."""

    body: str  # the SQS message body
    kind: str  # "valid" | "resend" | "malformed"
    reason: str | None  # for "malformed": the rejection reason code; else None


# A user, flat so that the population (what a long stream holds in memory) stays small:
# (user_id, home locale index, number of devices, type_0, id_0, ..., type_k, id_k, ip_0, ...).
_User = tuple[Any, ...]


def _new_user(rng: random.Random) -> _User:
    """A user with 1-3 devices and 1-4 ips, all distinct within the user."""
    rnd = rng.random
    user_id = _uuid4(rng.getrandbits(128))
    home = _LOCALE_TABLE[rng.getrandbits(_TABLE_BITS)]
    r = rnd()
    n_devices = 1 if r < 0.55 else 2 if r < 0.87 else 3
    user: list[Any] = [user_id, home, n_devices]
    device_ids: list[str] = []
    while len(device_ids) < n_devices:
        v = int(rnd() * 1_000_000_000)
        did = f"{v // 1_000_000:03d}-{v // 10_000 % 100:02d}-{v % 10_000:04d}"
        if did not in device_ids:
            device_ids.append(did)
            user += (_DEVICE_TYPE_TABLE[rng.getrandbits(_TABLE_BITS)], did)
    r = rnd()
    n_ips = 1 if r < 0.45 else 2 if r < 0.75 else 3 if r < 0.90 else 4
    ips: list[str] = []
    while len(ips) < n_ips:
        if rnd() < _P_IPV6:
            ip = str(ipaddress.IPv6Address((1 << 125) | rng.getrandbits(125)))
        else:  # public-looking: not 0/8, 10/8, 127/8 or class D/E
            v = rng.getrandbits(32)
            first = _IPV4_FIRST_OCTETS[(v >> 24) % len(_IPV4_FIRST_OCTETS)]
            ip = f"{first}.{(v >> 16) & 255}.{(v >> 8) & 255}.{1 + (v & 255) % 254}"
        if ip not in ips:
            ips.append(ip)
    return (*user, *ips)


def _uuid4(bits: int) -> str:
    """str(uuid.UUID(int=bits, version=4)), without the object: users are made on the hot path."""
    bits = (bits & _UUID_CLEAR) | _UUID_SET
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Population:
    """Lazily created users with Zipf-like popularity (rank i is user i)."""

    __slots__ = ("rng", "size", "users", "zipf_a", "zipf_inv")

    def __init__(self, rng: random.Random, size: int) -> None:
        self.rng = rng
        self.size = size
        self.users: list[_User | None] = [None] * size
        # Inverse CDF of a continuous power law on [1, size + 1): O(1) per draw, no table.
        self.zipf_a = (size + 1) ** (1 - _ZIPF_S) - 1
        self.zipf_inv = 1 / (1 - _ZIPF_S)

    def popular_index(self) -> int:
        return min(int((1 + self.zipf_a * self.rng.random()) ** self.zipf_inv) - 1, self.size - 1)

    def user(self, index: int) -> _User:
        user = self.users[index]
        if user is None:
            user = self.users[index] = _new_user(self.rng)
        return user

    def login(self, index: int) -> dict[str, Any]:
        """One well-formed login of a user as a dict in the producer's key order (the slow
        path of `_stream`'s inlined draw, for the malformed messages); locale may be
        _ABSENT_VALUE."""
        user = self.user(index)
        rnd = self.rng.random
        n_devices = user[2]
        r = rnd()
        device = 3 + 2 * int(n_devices * r * r)
        r = rnd()
        ip = 3 + 2 * n_devices + int((len(user) - 3 - 2 * n_devices) * r * r)
        version = _VERSION_TABLE[self.rng.getrandbits(_TABLE_BITS)]
        r = rnd()
        locale: Any
        if r < _P_LOCALE_HOME:
            locale = _LOCALE_NAMES[user[1]]
        elif r < _P_LOCALE_HOME + _P_LOCALE_NULL:
            locale = None
        elif r < _P_LOCALE_HOME + _P_LOCALE_NULL + _P_LOCALE_ABSENT:
            locale = _ABSENT_VALUE
        else:
            locale = _LOCALE_NAMES[_LOCALE_TABLE[self.rng.getrandbits(_TABLE_BITS)]]
        return {
            "user_id": user[0],
            "app_version": _VERSION_NAMES[version],
            "device_type": user[device],
            "ip": user[ip],
            "locale": locale,
            "device_id": user[device + 1],
        }


def iter_messages(
    n: int,
    *,
    seed: int = 0,
    malformed_rate: float = 0.03,
    resend_rate: float = 0.02,
    max_body_bytes: int = 16384,
    schema: ValidateStep | None = None,
) -> Iterator[GeneratedMessage]:
    """Yield `n` messages, deterministically for `seed`; arguments are checked at the call.
    `schema`: the declared fields whose limits the malformed messages break (default: the
    shipped logins stream's); its keys must be the producer's format."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not (0.0 <= malformed_rate <= 1.0 and 0.0 <= resend_rate <= 1.0):
        raise ValueError("malformed_rate and resend_rate must be within [0, 1]")
    if malformed_rate + resend_rate > 1.0:
        raise ValueError("malformed_rate + resend_rate must not exceed 1")
    if not MIN_BODY_BYTES <= max_body_bytes <= MAX_BODY_LIMIT:
        raise ValueError(
            f"max_body_bytes must be within [{MIN_BODY_BYTES}, {MAX_BODY_LIMIT}] (a too_large"
            f" body must still fit SQS's {SQS_MAX_BODY_BYTES} bytes), got {max_body_bytes}"
        )
    schema = schema or logins_schema()
    _check_schema(schema)
    return _stream(n, seed, malformed_rate, resend_rate, max_body_bytes, schema)


def generate(
    n: int,
    *,
    seed: int = 0,
    malformed_rate: float = 0.03,
    resend_rate: float = 0.02,
    max_body_bytes: int = 16384,
    schema: ValidateStep | None = None,
) -> list[GeneratedMessage]:
    """All of `iter_messages(n, ...)` as a list, for small runs and tests."""
    return list(
        iter_messages(
            n,
            seed=seed,
            malformed_rate=malformed_rate,
            resend_rate=resend_rate,
            max_body_bytes=max_body_bytes,
            schema=schema,
        )
    )


@functools.lru_cache(maxsize=1)
def logins_schema() -> ValidateStep:
    """The declared fields of the shipped logins stream (config/base.yaml; no key is read)."""
    return load_config(_PLACEHOLDER_ENV).validate_step


def _check_schema(schema: ValidateStep) -> None:
    if tuple(schema.fields) != PRODUCER_KEYS:
        raise ValueError(
            f"this generator writes the producer's login format {list(PRODUCER_KEYS)}; the"
            f" schema declares {list(schema.fields)} (use logins.dev.samples for other streams)"
        )


def _stream(
    n: int,
    seed: int,
    malformed_rate: float,
    resend_rate: float,
    max_body_bytes: int,
    schema: ValidateStep,
) -> Iterator[GeneratedMessage]:
    """The hot loop: the draw inlined, locals only, bodies written by hand (the values never
    need JSON escaping), so that it runs at over 100k messages/s."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not security: it must be seedable
    rnd = rng.random
    bits = rng.getrandbits
    population = _Population(rng, max(1, min(n // 5, MAX_USERS)))
    users = population.users
    size = population.size
    zipf_a = population.zipf_a
    zipf_inv = population.zipf_inv
    malformed = _Malformed(rng, population, max_body_bytes, schema)
    resend_below = malformed_rate + resend_rate
    # The valid 6-tuples seen so far, each as its exact packed index key + 1 (0 is a free
    # slot) in an open-addressing uint32 table sized once for n: 8 bytes per message at most,
    # no per-entry objects, no hash collisions, no rehashing.
    table_bits = min(max(10, (2 * n).bit_length()), 31)
    table = array("I", [0]) * (1 << table_bits)
    mask = (1 << table_bits) - 1
    shift = 32 - table_bits
    recent: deque[tuple[int, str]] = deque(maxlen=_RESEND_WINDOW)
    versions = _VERSION_NAMES
    version_table = _VERSION_TABLE
    locale_table = _LOCALE_TABLE
    fragments = _LOCALE_FRAGMENTS
    p_home = _P_LOCALE_HOME
    p_null = p_home + _P_LOCALE_NULL
    p_absent = p_null + _P_LOCALE_ABSENT

    for i in range(n):
        u = rnd()
        if u < malformed_rate:
            reason = _REASON_TABLE[bits(_TABLE_BITS)]
            yield GeneratedMessage(malformed.body(reason), MALFORMED, reason)
            continue
        if u < resend_below and recent:
            while recent and recent[0][0] < i - _RESEND_WINDOW:
                recent.popleft()
            if recent:
                body = recent[int(rnd() * len(recent))][1]
                yield GeneratedMessage(body, RESEND, None)
                continue
        # A valid login whose 6-tuple has not been seen before: redraw on a repeat, and move
        # to a uniformly drawn user when a heavy user's combinations are running out.
        index = int((1 + zipf_a * rnd()) ** zipf_inv) - 1
        if index >= size:
            index = size - 1
        tries = 0
        while True:
            user = users[index]
            if user is None:
                user = users[index] = _new_user(rng)
            n_devices = user[2]
            r = rnd()
            device = int(n_devices * r * r)  # the first device is the everyday one
            r = rnd()
            ip = int((len(user) - 3 - 2 * n_devices) * r * r)
            version = version_table[bits(_TABLE_BITS)]
            r = rnd()
            if r < p_home:
                locale = user[1]
            elif r < p_null:
                locale = _NULL
            elif r < p_absent:
                locale = _ABSENT
            else:
                locale = locale_table[bits(_TABLE_BITS)]
            key = 1 + (
                index * _COMBOS
                + ((device * _MAX_IPS + ip) * _NV + version) * _NL_KEY
                + (locale if locale < _NULL else _NULL)
            )
            slot = ((key * _FIB32) & 0xFFFFFFFF) >> shift
            taken = table[slot]
            while taken and taken != key:  # linear probing
                slot = (slot + 1) & mask
                taken = table[slot]
            if not taken:
                break
            tries += 1
            if tries % _TRIES_PER_USER == 0:
                if tries >= _MAX_TRIES:
                    raise RuntimeError("cannot draw a new unique login: population exhausted")
                index = int(rnd() * size)
        table[slot] = key
        extra = _EXTRA_FRAGMENTS[int(rnd() * 4)] if rnd() < _P_EXTRA_KEY else ""
        device = 3 + 2 * device
        body = (
            f'{{"user_id":"{user[0]}","app_version":"{versions[version]}",'
            f'"device_type":"{user[device]}","ip":"{user[3 + 2 * n_devices + ip]}"'
            f'{fragments[locale]},"device_id":"{user[device + 1]}"{extra}}}'
        )
        recent.append((i, body))
        yield GeneratedMessage(body, VALID, None)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


class _Malformed:
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
        population: _Population,
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
        """A well-formed login (all six keys, in order; locale may be _ABSENT_VALUE)."""
        return self.population.login(self.population.popular_index())

    @staticmethod
    def _present(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if v is not _ABSENT_VALUE}

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
