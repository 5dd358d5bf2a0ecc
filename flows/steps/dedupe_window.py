"""One shard's dedupe window: pure logic (no Bytewax), keys that die with their period.

"The same login" is the same fields within `window_seconds` of SentTimestamp (a resend): the
producer's format has no event id. A login is remembered as a **fingerprint**, a keyed hash of
the validator's digest of its fields, under a key that is **random per period** (a period is
one window long, numbered by SentTimestamp: the rolling salts of privacy-first analytics). The
key is never derived from the token key or from KMS; it comes from `secrets`. The digest it
hashes is unkeyed (`flows.steps.validate.canonical_digest`, never stored), so the period key
is the one key a stored fingerprint depends on: the token key and KMS test no guess against
it, and once the period key is gone nothing does (issue 18, finding 3; before, the digest was
keyed by GenerateMac("dedupe-fingerprint"), one KMS call that, with a period key, tested
every guess offline).

A login sent at tick T is compared with the remembered logins of every live period (at most
two: T's own and the one before or after), each under that period's key. Once the newest
SentTimestamp seen (the high water H) is a full window past a period's end, no login of that
period can be inside anyone's window again: its key and its table are zeroed and dropped
(`_retire`), in memory and so in every snapshot taken after. A key therefore lives at most two
windows past the first login it fingerprints (as SentTimestamps go; an idle shard retires on
the wall clock, see flows/steps/dedupe.py), and a slot no longer than its key.

Nothing in a slot names a message or a row: a slot is 6 bytes of fingerprint and 2 bytes of
time (ticks since the period's start). A redelivery of the *same* SQS message (same fields,
same SentTimestamp, a receive count over 1) is told from a resend by its time: a match at
the very same tick may be the message itself, so it is not a duplicate (the sink's ledger
makes its second write a no-op). A first delivery is never its own match, so it is a
duplicate whatever the tick (an original and its resend sent in one SendMessageBatch share
their SentTimestamp). Only a redelivered resend within one tick (10 ms for a 10-minute
window) of its original, whose first delivery did not commit, becomes a row: never a loss.

Each period's table is a bucketed cuckoo hash table of `slots` 8-byte slots in one flat
bytearray (no object per entry), buckets of 8 filled in order, so that a lookup is two
`bytearray.find` calls and a snapshot copies only the filled slots. A new fingerprint goes to
one of two buckets derived from its 48 bits, else moves residents to their other bucket (at
most `MAX_KICKS`); only if that fails is one dropped, counted in `dropped` when it was still
inside its window. A false match needs another fingerprint with the same 48 bits in the same
16 slots: 16 x 2^-48 per lookup and period.

The state (`state()`) is plain builtins: the tick, the window, the high water and, per live
period, its number, its key and its filled slots (8 bytes each), nothing for a period that
has died. A snapshot taken with another window or tick is dropped with a warning (the keys
serve periods of the old length); one taken with another budget is re-inserted.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import secrets
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

BUCKET = 8  # slots per bucket
SLOT_BYTES = 8  # 6 bytes of fingerprint, 2 of time
FP_BYTES = 6
KEY_BYTES = 32
PERIODS = 2  # live periods at most: a shard's budget is two tables
MAX_KICKS = 64  # cuckoo moves before a fingerprint is dropped
_TIME_RANGE = 1 << 16  # a period is at most this many ticks (2 bytes of time per slot)
_STEP = BUCKET * SLOT_BYTES
_MIX = 0x9E3779B1  # other bucket = ((tag * _MIX) >> 16) - this bucket, mod buckets
_TAG = 0xFFFFFFFF
_EMPTY = bytes(FP_BYTES)
_NOT_EMPTY = bytes(FP_BYTES - 1) + b"\x01"  # a fingerprint of all zeros would read as empty

# The pickled form: {"tick_ms", "window_ticks", "high", "periods": [[n, key, slots], ...]}
WindowState = dict[str, Any]


def tick_ms(window_seconds: float) -> int:
    """The time resolution in ms: a period (the window and one tick) fits 2 bytes of ticks."""
    return max(1, math.ceil(window_seconds * 1000 / (_TIME_RANGE - 1)))


class _Period:
    """One period's random key and table. `retire` zeroes both."""

    __slots__ = ("fill", "hasher", "key", "number", "table")

    def __init__(self, number: int, table: bytearray, fill: bytearray, key: bytes) -> None:
        self.number = number
        self.key = bytearray(key)
        self.hasher = hashlib.blake2b(key=self.key, digest_size=FP_BYTES)
        self.table = table  # zeroed
        self.fill = fill  # slots taken per bucket, zeroed

    def fingerprint(self, digest: bytes) -> bytes:
        h = self.hasher.copy()
        h.update(digest)
        fp = h.digest()
        return _NOT_EMPTY if fp == _EMPTY else fp

    def find(self, fp: bytes, bucket: int) -> int:
        """The slot holding `fp` in `bucket`, or -1."""
        table, start = self.table, bucket * _STEP
        end = start + self.fill[bucket] * SLOT_BYTES
        pos = table.find(fp, start, end)
        while pos >= 0 and (pos - start) % SLOT_BYTES:  # straddles two slots: not a fingerprint
            pos = table.find(fp, pos + 1, end)
        return pos // SLOT_BYTES

    def retire(self) -> None:
        """Zero the key and every slot: nothing of the period stays in memory we hold."""
        self.key[:] = bytes(KEY_BYTES)
        self.hasher = None  # type: ignore[assignment]
        self.table[:] = bytes(len(self.table))
        self.fill[:] = bytes(len(self.fill))


class Window:
    """The dedupe window of one shard: `seen(digest, sent_ms)` says whether a login is a resend.

    `slots` is the size of each of the (at most two) period tables, rounded down to buckets."""

    def __init__(
        self,
        window_seconds: float,
        slots: int,
        state: WindowState | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        self.tick_ms = tick_ms(window_seconds)
        self.window = int(window_seconds * 1000) // self.tick_ms  # in ticks
        self.period_ticks = self.window + 1  # two ticks of one period are within the window
        self.buckets = max(1, slots // BUCKET)
        self.dropped = 0  # fingerprints dropped inside their window (the table was full)
        self._rng = random.Random(seed)  # noqa: S311 (which resident to move, not a secret)
        self._high: int | None = None  # the newest tick seen
        self._periods: list[_Period] = []
        self._spare = [
            (bytearray(self.slots * SLOT_BYTES), bytearray(self.buckets)) for _ in range(PERIODS)
        ]
        if state:
            self._restore(state)

    @property
    def slots(self) -> int:
        return self.buckets * BUCKET

    # -- the rule -----------------------------------------------------------------------------

    def seen(self, digest: bytes, sent_ms: int, redelivered: bool = False) -> bool:
        """True if a login with the same digest was sent within the window (a resend; for a
        `redelivered` message, one sent at another tick); else remembers this one (if its
        period is live) and returns False."""
        t = sent_ms // self.tick_ms
        if self._high is None or t > self._high:
            self._advance(t)
        number = t // self.period_ticks
        own = None
        for period in self._periods:
            fp = period.fingerprint(digest)
            if period.number == number:
                own = period, fp
            key = int.from_bytes(fp, "big")
            first = key % self.buckets
            slot = period.find(fp, first)
            if slot < 0:
                slot = period.find(fp, self._other(key, first))
            if slot >= 0:
                at = slot * SLOT_BYTES + FP_BYTES
                seen = period.number * self.period_ticks + int.from_bytes(
                    period.table[at : at + 2], "big"
                )
                if -self.window <= t - seen <= self.window:
                    return t != seen or not redelivered  # else maybe this very message
        assert self._high is not None
        if t < self._high - self.window:
            return False  # older than the window: nothing to remember
        if own is None:
            period = self._open(number)
            own = period, period.fingerprint(digest)
        self._insert(own[0], own[1], t)
        return False

    def retires_at_ms(self) -> int | None:
        """The high water (SentTimestamp ms) at which the oldest live period retires."""
        if not self._periods:
            return None
        oldest = min(p.number for p in self._periods)
        return ((oldest + 1) * self.period_ticks + self.window) * self.tick_ms

    def expire(self, high_ms: int) -> None:
        """Move the high water to `high_ms` if later (an idle shard, on the wall clock)."""
        t = high_ms // self.tick_ms
        if self._high is None or t > self._high:
            self._advance(t)

    def _other(self, key: int, bucket: int) -> int:
        return (((key & _TAG) * _MIX >> 16) - bucket) % self.buckets

    def _advance(self, t: int) -> None:
        """A new high water: periods wholly before the window's start retire."""
        self._high = t
        horizon = t - self.window
        for period in [p for p in self._periods if (p.number + 1) * self.period_ticks <= horizon]:
            self._retire(period)

    def _retire(self, period: _Period) -> None:
        period.retire()
        self._periods.remove(period)
        self._spare.append((period.table, period.fill))

    def _open(self, number: int) -> _Period:
        """A new period with a fresh random key (live periods are within one of the newest,
        so a table is always spare)."""
        table, fill = self._spare.pop()
        period = _Period(number, table, fill, secrets.token_bytes(KEY_BYTES))
        self._periods.append(period)
        return period

    # -- the table ----------------------------------------------------------------------------

    def _insert(self, period: _Period, fp: bytes, t: int) -> None:
        offset = t - period.number * self.period_ticks
        entry = fp + offset.to_bytes(2, "big")
        key = int.from_bytes(fp, "big")
        first = key % self.buckets
        if self._put(period, first, entry) or self._put(period, self._other(key, first), entry):
            return
        self._kick(period, first if self._rng.getrandbits(1) else self._other(key, first), entry)

    @staticmethod
    def _put(period: _Period, bucket: int, entry: bytes) -> bool:
        n = period.fill[bucket]
        if n == BUCKET:
            return False
        at = (bucket * BUCKET + n) * SLOT_BYTES
        period.table[at : at + SLOT_BYTES] = entry
        period.fill[bucket] = n + 1
        return True

    def _kick(self, period: _Period, bucket: int, carried: bytes) -> None:
        """Both buckets are full: move residents to their other bucket, at most MAX_KICKS."""
        table = period.table
        for _ in range(MAX_KICKS):
            at = (bucket * BUCKET + self._rng.getrandbits(3)) * SLOT_BYTES
            resident = bytes(table[at : at + SLOT_BYTES])
            table[at : at + SLOT_BYTES] = carried
            carried = resident
            bucket = self._other(int.from_bytes(carried[:FP_BYTES], "big"), bucket)
            if self._put(period, bucket, carried):
                return
        assert self._high is not None
        t = period.number * self.period_ticks + int.from_bytes(carried[FP_BYTES:], "big")
        if t >= self._high - self.window:
            self.dropped += 1

    # -- inspection (tests, benchmarks) -------------------------------------------------------

    def __len__(self) -> int:
        """Fingerprints inside the window."""
        return sum(1 for _ in self.live())

    def live(self) -> Iterator[tuple[int, bytes, int]]:
        """(period, fingerprint, tick) of every fingerprint inside the window."""
        horizon = (self._high or 0) - self.window
        for period in self._periods:
            base = period.number * self.period_ticks
            for entry in _entries(period):
                t = base + int.from_bytes(entry[FP_BYTES:], "big")
                if t >= horizon:
                    yield period.number, entry[:FP_BYTES], t

    def live_numbers(self) -> list[int]:
        """The numbers of the live periods."""
        return [p.number for p in self._periods]

    def live_keys(self) -> list[bytes]:
        """The keys of the live periods."""
        return [bytes(p.key) for p in self._periods]

    # -- state --------------------------------------------------------------------------------

    def state(self) -> WindowState:
        """Plain builtins: the live periods' keys and filled slots, nothing of a retired one."""
        return {
            "tick_ms": self.tick_ms,
            "window_ticks": self.window,
            "high": self._high,
            "periods": [[p.number, bytes(p.key), _filled(p)] for p in self._periods],
        }

    def _restore(self, state: WindowState) -> None:
        if (state["tick_ms"], state["window_ticks"]) != (self.tick_ms, self.window):
            log.warning(
                "steps[dedupe].window_seconds changed since the snapshot: the recovered dedupe"
                " state is dropped (its keys serve periods of the old length); a resend of a"
                " login sent before the restart becomes a row"
            )
            return
        self._high = state["high"]
        for number, key, filled in state["periods"]:
            table, fill = self._spare.pop()
            period = _Period(number, table, fill, key)
            self._periods.append(period)
            base = number * self.period_ticks
            for at in range(0, len(filled), SLOT_BYTES):
                entry = filled[at : at + SLOT_BYTES]
                self._insert(
                    period, entry[:FP_BYTES], base + int.from_bytes(entry[FP_BYTES:], "big")
                )


def _filled(period: _Period) -> bytes:
    """The period's taken slots, 8 bytes each, without the empty ones (buckets fill in order,
    a fingerprint is never all zeros, so a slot is empty iff its 8 bytes are zero)."""
    table, starts = period.table, range(0, len(period.table), _STEP)
    return b"".join(
        [table[at : at + n * SLOT_BYTES] for at, n in zip(starts, period.fill, strict=True) if n]
    )


def _entries(period: _Period) -> Iterator[bytes]:
    filled = _filled(period)
    for at in range(0, len(filled), SLOT_BYTES):
        yield filled[at : at + SLOT_BYTES]
