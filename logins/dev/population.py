"""The generator's users (logins.dev.generator): seeded, Zipf-popular, each with 1-3 devices and
1-4 ips, and the weighted vocabularies their logins are drawn from.

Users are flat tuples made lazily, so that the population (what a long stream holds in memory)
stays small; the constants the generator's hot loop inlines are public here for it.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from typing import Any

MAX_USERS = 200_000  # caps the population, which is what bounds memory on long streams

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
VERSION_NAMES = tuple(v for v, _ in _APP_VERSIONS)
LOCALE_NAMES = tuple(c for c, _ in _LOCALES)
NV = len(VERSION_NAMES)
NULL = len(LOCALE_NAMES)  # locale index meaning JSON null
ABSENT = NULL + 1  # locale index meaning the key is left out
NL_KEY = NULL + 1  # null and absent are the same tuple value (no locale)
# The locale part of a valid body, by locale index (the body is built by hand on the hot path).
LOCALE_FRAGMENTS = (*(f',"locale":"{c}"' for c in LOCALE_NAMES), ',"locale":null', "")
EXTRA_FRAGMENTS = (',"extra":1', ',"client":"beta"', ',"retries":0', ',"sdk":{"name":"kt"}')

P_LOCALE_NULL = 0.03
P_LOCALE_ABSENT = 0.01
P_LOCALE_HOME = 0.6  # a user mostly logs in with the same locale
P_EXTRA_KEY = 0.005
_P_IPV6 = 0.05
_ZIPF_S = 0.5  # popularity exponent: a few heavy users without exhausting their combinations
_MAX_DEVICES = 3
MAX_IPS = 4
TABLE_BITS = 10
_IPV4_FIRST_OCTETS = tuple(o for o in range(1, 224) if o not in (10, 127))
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # the version nibble and the variant bits
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant
COMBOS = _MAX_DEVICES * MAX_IPS * NV * NL_KEY  # distinct logins one user can have
assert MAX_USERS * COMBOS < 2**32 - 1, "packed login keys must fit the uint32 table"

ABSENT_VALUE = object()  # marks a locale key that is left out of a login's dict


def weighted_table(weights: Sequence[int]) -> tuple[int, ...]:
    """A 2**TABLE_BITS lookup table of indices, so a weighted draw is one getrandbits call."""
    size = 1 << TABLE_BITS
    total = sum(weights)
    table = [i for i, w in enumerate(weights) for _ in range(max(1, w * size // total))]
    top = max(range(len(weights)), key=weights.__getitem__)
    table += [top] * (size - len(table))
    return tuple(table[:size])


VERSION_TABLE = weighted_table([w for _, w in _APP_VERSIONS])
LOCALE_TABLE = weighted_table([w for _, w in _LOCALES])
_DEVICE_TYPE_TABLE = tuple(
    _DEVICE_TYPES[i][0] for i in weighted_table([w for _, w in _DEVICE_TYPES])
)

# A user, flat so that the population stays small:
# (user_id, home locale index, number of devices, type_0, id_0, ..., type_k, id_k, ip_0, ...).
User = tuple[Any, ...]


def new_user(rng: random.Random) -> User:
    """A user with 1-3 devices and 1-4 ips, all distinct within the user."""
    rnd = rng.random
    user_id = _uuid4(rng.getrandbits(128))
    home = LOCALE_TABLE[rng.getrandbits(TABLE_BITS)]
    r = rnd()
    n_devices = 1 if r < 0.55 else 2 if r < 0.87 else 3
    user: list[Any] = [user_id, home, n_devices]
    device_ids: list[str] = []
    while len(device_ids) < n_devices:
        v = int(rnd() * 1_000_000_000)
        did = f"{v // 1_000_000:03d}-{v // 10_000 % 100:02d}-{v % 10_000:04d}"
        if did not in device_ids:
            device_ids.append(did)
            user += (_DEVICE_TYPE_TABLE[rng.getrandbits(TABLE_BITS)], did)
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


class Population:
    """Lazily created users with Zipf-like popularity (rank i is user i)."""

    __slots__ = ("rng", "size", "users", "zipf_a", "zipf_inv")

    def __init__(self, rng: random.Random, size: int) -> None:
        self.rng = rng
        self.size = size
        self.users: list[User | None] = [None] * size
        # Inverse CDF of a continuous power law on [1, size + 1): O(1) per draw, no table.
        self.zipf_a = (size + 1) ** (1 - _ZIPF_S) - 1
        self.zipf_inv = 1 / (1 - _ZIPF_S)

    def popular_index(self) -> int:
        return min(int((1 + self.zipf_a * self.rng.random()) ** self.zipf_inv) - 1, self.size - 1)

    def user(self, index: int) -> User:
        user = self.users[index]
        if user is None:
            user = self.users[index] = new_user(self.rng)
        return user

    def login(self, index: int) -> dict[str, Any]:
        """One well-formed login of a user as a dict in the producer's key order (the slow
        path of the generator's inlined draw, for the malformed messages); locale may be
        ABSENT_VALUE."""
        user = self.user(index)
        rnd = self.rng.random
        n_devices = user[2]
        r = rnd()
        device = 3 + 2 * int(n_devices * r * r)
        r = rnd()
        ip = 3 + 2 * n_devices + int((len(user) - 3 - 2 * n_devices) * r * r)
        version = VERSION_TABLE[self.rng.getrandbits(TABLE_BITS)]
        r = rnd()
        locale: Any
        if r < P_LOCALE_HOME:
            locale = LOCALE_NAMES[user[1]]
        elif r < P_LOCALE_HOME + P_LOCALE_NULL:
            locale = None
        elif r < P_LOCALE_HOME + P_LOCALE_NULL + P_LOCALE_ABSENT:
            locale = ABSENT_VALUE
        else:
            locale = LOCALE_NAMES[LOCALE_TABLE[self.rng.getrandbits(TABLE_BITS)]]
        return {
            "user_id": user[0],
            "app_version": VERSION_NAMES[version],
            "device_type": user[device],
            "ip": user[ip],
            "locale": locale,
            "device_id": user[device + 1],
        }
