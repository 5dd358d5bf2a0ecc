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

Its parts: this module (the public calls and the hot loop), logins.dev.population (the users
and the vocabularies their logins are drawn from) and logins.dev.malformed (the defects).
"""

from __future__ import annotations

import functools
import random
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypedDict, Unpack

from connectors.sqs.limits import MAX_BODY_BYTES as SQS_MAX_BODY_BYTES
from logins.core.config import ValidateStep, load_config
from logins.core.records import REASONS as VALIDATOR_REASONS
from logins.dev.malformed import REASON_TABLE, Malformed
from logins.dev.population import (
    ABSENT,
    COMBOS,
    EXTRA_FRAGMENTS,
    LOCALE_FRAGMENTS,
    LOCALE_TABLE,
    MAX_IPS,
    MAX_USERS,
    NL_KEY,
    NULL,
    NV,
    P_EXTRA_KEY,
    P_LOCALE_ABSENT,
    P_LOCALE_HOME,
    P_LOCALE_NULL,
    TABLE_BITS,
    VERSION_NAMES,
    VERSION_TABLE,
    Population,
    new_user,
)

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
MIN_BODY_BYTES = 1024  # room for every non-too_large body the generator writes
# A too_large body is at most max_body_bytes + ~850 bytes (its padding and the login around it),
# and must still fit in an SQS message.
MAX_BODY_LIMIT = SQS_MAX_BODY_BYTES - 1024

_RESEND_WINDOW = 50  # a resend follows its original within this many messages
_TRIES_PER_USER = 8  # redraws for one user before moving to another (heavy users saturate)
_MAX_TRIES = 100_000
_FIB32 = 2654435769  # 2**32 / golden ratio: Fibonacci hashing spreads neighbouring keys


@dataclass(frozen=True, slots=True)
class GeneratedMessage:
    """One SQS message body and what the pipeline must conclude about it."""

    body: str  # the SQS message body
    kind: str  # "valid" | "resend" | "malformed"
    reason: str | None  # for "malformed": the rejection reason code; else None


class GeneratorOptions(TypedDict, total=False):
    """`iter_messages`'s keyword arguments, which `generate` passes on (defaults: there)."""

    seed: int
    malformed_rate: float
    resend_rate: float
    max_body_bytes: int
    schema: ValidateStep | None


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


def generate(n: int, **options: Unpack[GeneratorOptions]) -> list[GeneratedMessage]:
    """All of `iter_messages(n, ...)` as a list, for small runs and tests."""
    return list(iter_messages(n, **options))


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
    population = Population(rng, max(1, min(n // 5, MAX_USERS)))
    users = population.users
    size = population.size
    zipf_a = population.zipf_a
    zipf_inv = population.zipf_inv
    malformed = Malformed(rng, population, max_body_bytes, schema)
    resend_below = malformed_rate + resend_rate
    # The valid 6-tuples seen so far, each as its exact packed index key + 1 (0 is a free
    # slot) in an open-addressing uint32 table sized once for n: 8 bytes per message at most,
    # no per-entry objects, no hash collisions, no rehashing.
    table_bits = min(max(10, (2 * n).bit_length()), 31)
    table = array("I", [0]) * (1 << table_bits)
    mask = (1 << table_bits) - 1
    shift = 32 - table_bits
    recent: deque[tuple[int, str]] = deque(maxlen=_RESEND_WINDOW)
    versions = VERSION_NAMES
    version_table = VERSION_TABLE
    locale_table = LOCALE_TABLE
    fragments = LOCALE_FRAGMENTS
    p_home = P_LOCALE_HOME
    p_null = p_home + P_LOCALE_NULL
    p_absent = p_null + P_LOCALE_ABSENT

    for i in range(n):
        u = rnd()
        if u < malformed_rate:
            reason = REASON_TABLE[bits(TABLE_BITS)]
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
                user = users[index] = new_user(rng)
            n_devices = user[2]
            r = rnd()
            device = int(n_devices * r * r)  # the first device is the everyday one
            r = rnd()
            ip = int((len(user) - 3 - 2 * n_devices) * r * r)
            version = version_table[bits(TABLE_BITS)]
            r = rnd()
            if r < p_home:
                locale = user[1]
            elif r < p_null:
                locale = NULL
            elif r < p_absent:
                locale = ABSENT
            else:
                locale = locale_table[bits(TABLE_BITS)]
            key = 1 + (
                index * COMBOS
                + ((device * MAX_IPS + ip) * NV + version) * NL_KEY
                + (locale if locale < NULL else NULL)
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
        extra = EXTRA_FRAGMENTS[int(rnd() * 4)] if rnd() < P_EXTRA_KEY else ""
        device = 3 + 2 * device
        body = (
            f'{{"user_id":"{user[0]}","app_version":"{versions[version]}",'
            f'"device_type":"{user[device]}","ip":"{user[3 + 2 * n_devices + ip]}"'
            f'{fragments[locale]},"device_id":"{user[device + 1]}"{extra}}}'
        )
        recent.append((i, body))
        yield GeneratedMessage(body, VALID, None)
