"""Dedupe step: recognise a login the producer sent twice.

The producer's format has no event id, so "the same login" means the same fields within a
short window of SentTimestamp (a resend). State is keyed by shard (a few dozen keys, each
holding many fingerprints) because Bytewax's per-key overhead dominates with one key per
message. It holds keyed fingerprints, never raw values.

Redelivery of the *same* SQS message is not a duplicate: it keeps the outcome it had, and
the sink's ledger makes its second write a no-op. Duplicates still reach the sink, so they
are recorded and deleted from the queue. This state is an optimisation; the ledger in the
database is the truth.

**The window at full rate.** A 10-minute window at 10,000 msg/s is ~6M fingerprints: a
Python object per entry (~180 bytes) does not fit. Each shard is one preallocated, bucketed
cuckoo hash table of fixed-size slots in flat byte arrays, with no object per entry:

    slot = 48 bits of the keyed fingerprint (6 bytes) + SentTimestamp in ticks (2 bytes)
           + the first message's id (16 bytes: SQS ids are UUIDs)     = SLOT_BYTES (24)

A fingerprint lives in one of two buckets of 8 slots, both derived from its 48 bits, so a
lookup is two `bytearray.find` calls over 48 bytes (C, no objects). A slot older than the
window is free, so expiry needs no sweep: a slot's epoch (the high byte of its time) is
mapped through a 256-byte table by `bytes.translate`. A new fingerprint takes a free slot
of either bucket, else moves a resident to its other bucket (cuckoo kicks, at most
`MAX_KICKS`). Only if that fails is a fingerprint dropped; if it was still inside its
window that is counted (`logins_dedupe_evicted_early`) and logged at most once a minute, so
a resend missed for lack of memory is never silent.

A false match needs another live fingerprint with the same 48 bits in the same 16 slots:
16 x 2^-48 per lookup, about once in 55 years at 10,000 msg/s. Times are ticks of 25 ms
(coarser for windows over ~13 min, at most 1/32768 of the window) relative to a base that
moves forward by whole epochs, one `translate` of the epoch bytes, as time passes. A slot
stays taken up to one epoch (256 ticks, 6.4 s at 25 ms) past its window. Message ids that
are not lowercase UUIDs (every SQS implementation we know issues UUIDs) are kept in a dict
beside the slots (`other_ids`), at most one per 64 slots; past that such a fingerprint is
dropped and counted like any other.

Snapshots (Bytewax takes one per key every epoch, even without recovery, and pickles them
only with recovery, at once) are a view of the live arrays, serialised when pickled: no copy
per epoch. The pickled form is a plain dict of bytes and ints. A snapshot in an earlier
format (fingerprint -> packed time and id, or fingerprint -> (id, ms)) is restored entry by
entry, so recovery carries the window across the upgrade.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from bytewax.operators import StatefulBatchLogic

from logins.core import metrics
from logins.core.records import Event

log = logging.getLogger(__name__)

BUCKET = 8  # slots per bucket
KEY_BYTES = 6
ID_BYTES = 16
SLOT_BYTES = KEY_BYTES + 2 + ID_BYTES
MAX_KICKS = 64  # cuckoo moves before a fingerprint is dropped
MIN_TICK_MS = 25
FORMAT = 2
OTHER_IDS_SHARE = 64  # at most 1/64 of the slots hold an id that is not a UUID ...
OTHER_IDS_MIN = 64  # ... or this many, in a small table
SHARD_OVERHEAD = 4096  # bytes of a shard beyond its slots (objects, tables), within budget
_TIME_MAX = 0xFFFF  # a time is 1..65535 ticks after `base`; its high byte 0 marks a free slot
_EPOCH = 256  # ticks per epoch
_NO_ID = bytes(ID_BYTES)  # this slot's id is in `other_ids`
_MIX = 0x9E3779B1  # other bucket = ((tag * _MIX) >> 16) - this bucket, mod buckets
_TAG = 0xFFFFFFFF
_STEP = BUCKET * KEY_BYTES
_EMPTY_KEY = bytes(KEY_BYTES)
_TS_BYTES = 8  # format 1: SentTimestamp ms, big-endian, then the id

# A snapshot: the format-2 dict, or an earlier format (fingerprint -> packed | (id, ms)).
DedupeState = dict[Any, Any]


def shard_of(event: Event, shards: int) -> str:
    """The state key of an event: rejected events spread by message id, valid ones by content."""
    raw = event.fingerprint or event.message.message_id.encode()
    return str(int.from_bytes(raw[:4], "big") % shards)


def slots_per_shard(memory_budget_mb: float, shards: int, max_entries: int | None = None) -> int:
    """Slots one shard holds: its share of the budget (MB = 10^6 bytes), or the deprecated
    per-shard cap if that is set; whole buckets, at least one."""
    slots = (int(memory_budget_mb * 1e6) // shards - SHARD_OVERHEAD) // SLOT_BYTES
    if max_entries is not None:
        log.warning(
            "steps[dedupe].max_entries_per_shard is deprecated: it sets %d slots per shard"
            " (%.1f MB in all) instead of memory_budget_mb; remove it and set the budget",
            max_entries,
            max_entries * shards * SLOT_BYTES / 1e6,
        )
        slots = max_entries
    return max(BUCKET, slots // BUCKET * BUCKET)


def tick_ms(window_seconds: float) -> int:
    """The time resolution: 25 ms, coarser for long windows so that a window is at most half
    the 16-bit time range."""
    return max(MIN_TICK_MS, math.ceil(window_seconds * 1000 * 2 / (_TIME_MAX + 1)))


def _key6(fingerprint: bytes) -> bytes:
    """48 bits of the fingerprint: bytes 8-13 (the shard key uses bytes 0-3), never all zero
    (an empty slot)."""
    k6 = fingerprint[8:14]
    if len(k6) != KEY_BYTES:  # not the validator's 16 bytes (tests, other callers)
        k6 = hashlib.blake2b(fingerprint, digest_size=16).digest()[8:14]
    return b"\x00" * 5 + b"\x01" if k6 == _EMPTY_KEY else k6


def _pack_id(message_id: str) -> bytes:
    """A lowercase UUID as its 16 bytes; anything else as `_NO_ID` (kept in `other_ids`)."""
    if (
        len(message_id) == 36
        and message_id[8] == message_id[13] == message_id[18] == message_id[23] == "-"
        and message_id.lower() == message_id
    ):
        try:
            raw = bytes.fromhex(message_id.replace("-", ""))
        except ValueError:
            return _NO_ID
        if len(raw) == ID_BYTES and raw != _NO_ID:
            return raw
    return _NO_ID


def _unpack_id(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _EarlyEvictions:
    """Counts fingerprints dropped inside their window; logs at most once a minute."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._interval = interval
        self._clock = clock
        self._pending = 0
        self._logged_at = -math.inf

    def add(self, slots: int) -> None:
        metrics.DEDUPE_EVICTED_EARLY.inc()
        with self._lock:
            self._pending += 1
            now = self._clock()
            if now - self._logged_at < self._interval:
                return
            pending, self._pending, self._logged_at = self._pending, 0, now
        log.warning(
            "dedupe state full (%d slots per shard): %d fingerprints dropped before their"
            " window ended since the last report; a resend of one of those messages becomes a"
            " row. Raise steps[dedupe].memory_budget_mb (docs/operations.md)",
            slots,
            pending,
        )


EARLY = _EarlyEvictions()


class DedupeLogic(StatefulBatchLogic[Event, Event, DedupeState]):
    """One shard's window: a cuckoo table of `max_entries` slots (rounded down to buckets)."""

    def __init__(
        self,
        window_seconds: float,
        max_entries: int,
        state: DedupeState | _Snapshot | None,
        *,
        seed: int = 0,
    ) -> None:
        self._tick = tick_ms(window_seconds)
        self._window = int(window_seconds * 1000) // self._tick  # in ticks
        self._buckets = max(1, max_entries // BUCKET)
        self._rng = random.Random(seed)  # noqa: S311 (which resident to move, not a secret)
        slots = self._buckets * BUCKET
        self._keys = bytearray(KEY_BYTES * slots)
        self._hi = bytearray(slots)  # time >> 8: the epoch
        self._lo = bytearray(slots)  # time & 255
        self._ids = bytearray(ID_BYTES * slots)
        self.other_ids: dict[int, str] = {}
        self._other_cap = max(OTHER_IDS_MIN, slots // OTHER_IDS_SHARE)
        self._base: int | None = None  # absolute tick of relative tick 0; set by the first
        self._high = self._window + _EPOCH  # relative high water; keeps the horizon >= 1 epoch
        self._free_epoch = -1
        self._free = b""
        self._set_free()
        if state:
            self._restore(state)

    @property
    def slots(self) -> int:
        return self._buckets * BUCKET

    # -- the step -----------------------------------------------------------------------------

    def on_batch(self, values: list[Event]) -> tuple[list[Event], bool]:
        # The hot path, one pass per batch with the arrays in locals: a lookup is two
        # `find`s, a new fingerprint one `translate` + `find` and four slice writes.
        keys, hi, lo, ids = self._keys, self._hi, self._lo, self._ids
        buckets, window, tick = self._buckets, self._window, self._tick
        base, high, free, free_epoch = self._base, self._high, self._free, self._free_epoch
        horizon = high - window
        other = self.other_ids
        for event in values:
            if event.rejection is not None:
                continue
            message = event.message
            k6 = event.fingerprint[8:14]
            if len(k6) != KEY_BYTES or k6 == _EMPTY_KEY:
                k6 = _key6(event.fingerprint)
            key = int.from_bytes(k6)
            if base is None:
                base = self._base = message.sent_timestamp_ms // tick - high
            t = message.sent_timestamp_ms // tick - base
            if t > high:  # a new high water: often, so the usual case stays inline
                if t > _TIME_MAX or (t - window) // _EPOCH != free_epoch:
                    t = self._advance(t)
                    base, free, free_epoch = self._base, self._free, self._free_epoch
                else:
                    self._high = t
                high = t
                horizon = high - window
            first = key % buckets
            start = first * _STEP
            pos = keys.find(k6, start, start + _STEP)
            while pos >= 0 and (pos - start) % KEY_BYTES:  # straddles two slots: not a key
                pos = keys.find(k6, pos + 1, start + _STEP)
            if pos < 0:
                second = (((key & _TAG) * _MIX >> 16) - first) % buckets
                start = second * _STEP
                pos = keys.find(k6, start, start + _STEP)
                while pos >= 0 and (pos - start) % KEY_BYTES:
                    pos = keys.find(k6, pos + 1, start + _STEP)
                if pos < 0:  # a new fingerprint
                    if t < horizon:  # an older login would be stale at once
                        continue
                    slot = first * BUCKET
                    i = hi[slot : slot + BUCKET].translate(free).find(0)
                    if i < 0:
                        slot = second * BUCKET
                        i = hi[slot : slot + BUCKET].translate(free).find(0)
                        if i < 0:
                            self._kick(first, second, k6, t, message.message_id)
                            continue
                    mid = message.message_id
                    raw = _NO_ID
                    if len(mid) == 36 and mid[8] == mid[13] == mid[18] == mid[23] == "-":
                        raw = _pack_id(mid)
                    if raw is _NO_ID and len(other) >= self._other_cap and not self._room():
                        EARLY.add(self.slots)
                        continue
                    slot += i
                    at = slot * KEY_BYTES
                    keys[at : at + KEY_BYTES] = k6
                    hi[slot] = t >> 8
                    lo[slot] = t & 0xFF
                    at = slot * ID_BYTES
                    ids[at : at + ID_BYTES] = raw
                    if raw is _NO_ID:
                        other[slot] = mid
                    elif other:
                        other.pop(slot, None)
                    continue
            slot = pos // KEY_BYTES
            if not hi[slot]:  # a freed slot that still holds this key: take it again
                if t >= horizon:
                    self._put(slot, k6, t, message.message_id)
                continue
            seen = hi[slot] << 8 | lo[slot]
            if -window <= t - seen <= window:
                first_id = self._id_at(slot)
                if first_id != message.message_id:
                    event.duplicate_of = first_id
            elif t > seen:  # the same login again after its window: now the newest
                self._put(slot, k6, t, message.message_id)
        return values, StatefulBatchLogic.RETAIN

    def _advance(self, t: int) -> int:
        """A new high water `t` (relative): moves the base if `t` is out of range and the
        free-slot table when the window's start enters a new epoch; returns `t` rebased."""
        if t > _TIME_MAX:
            epochs = (t - self._window - _EPOCH) // _EPOCH
            self._rebase(epochs)
            t -= epochs * _EPOCH
        self._high = t
        if (t - self._window) // _EPOCH != self._free_epoch:
            self._set_free()
        return t

    def _relative(self, tick: int) -> int:
        """`tick` relative to `base` (set by the first), moving the high water if later."""
        if self._base is None:
            self._base = tick - self._high
        t = tick - self._base
        return self._advance(t) if t > self._high else t

    def _set_free(self) -> None:
        """The table `translate` maps an epoch byte through: 0 for a free slot (an epoch
        wholly before the window's start, or empty), 1 for a slot in use."""
        self._free_epoch = (self._high - self._window) // _EPOCH
        self._free = bytes(0 if v < self._free_epoch else 1 for v in range(256))

    def _rebase(self, epochs: int) -> None:
        """Move `base` forward by whole epochs: one `translate` of the epoch bytes. Slots that
        fall before the new base become free (epoch 0)."""
        assert self._base is not None
        shift = epochs * _EPOCH
        self._base += shift
        self._high -= shift
        self._hi[:] = self._hi.translate(bytes(max(v - epochs, 0) for v in range(256)))
        self._set_free()

    # -- the table ----------------------------------------------------------------------------

    def _free_in(self, bucket: int) -> int:
        """A free slot of `bucket`, or -1."""
        start = bucket * BUCKET
        i = self._hi[start : start + BUCKET].translate(self._free).find(0)
        return start + i if i >= 0 else -1

    def _insert(self, key: int, k6: bytes, t: int, message_id: str) -> None:
        first = key % self._buckets
        slot = self._free_in(first)
        if slot < 0:
            second = (((key & _TAG) * _MIX >> 16) - first) % self._buckets
            slot = self._free_in(second)
            if slot < 0:
                self._kick(first, second, k6, t, message_id)
                return
        self._put(slot, k6, t, message_id)

    def _kick(self, first: int, second: int, k6: bytes, t: int, message_id: str) -> None:
        """Both buckets are full of live entries: move residents to their other bucket."""
        carried = (k6, t, message_id)
        bucket = first if self._rng.getrandbits(1) else second
        getrandbits = self._rng.getrandbits
        for _ in range(MAX_KICKS):
            slot = bucket * BUCKET + getrandbits(3)
            resident = self._take(slot)
            self._put(slot, *carried)
            carried = resident
            tag = int.from_bytes(carried[0], "big") & _TAG
            bucket = ((tag * _MIX >> 16) - bucket) % self._buckets
            free = self._free_in(bucket)
            if free >= 0:
                self._put(free, *carried)
                return
        if carried[1] >= self._high - self._window:
            EARLY.add(self.slots)

    def _take(self, slot: int) -> tuple[bytes, int, str]:
        k6 = bytes(self._keys[slot * KEY_BYTES : (slot + 1) * KEY_BYTES])
        return k6, self._hi[slot] << 8 | self._lo[slot], self._id_at(slot)

    def _put(self, slot: int, k6: bytes, t: int, message_id: str) -> None:
        raw = _pack_id(message_id)
        other = self.other_ids
        full = raw is _NO_ID and slot not in other and len(other) >= self._other_cap
        if full and not self._room():
            self._hi[slot] = 0  # whatever it held is gone too
            EARLY.add(self.slots)
            return
        self._keys[slot * KEY_BYTES : (slot + 1) * KEY_BYTES] = k6
        self._hi[slot] = t >> 8
        self._lo[slot] = t & 0xFF
        self._ids[slot * ID_BYTES : (slot + 1) * ID_BYTES] = raw
        if raw is _NO_ID:
            other[slot] = message_id
        elif other:
            other.pop(slot, None)

    def _room(self) -> bool:
        """Whether one more id that is not a UUID fits (`_other_cap` of them, so the dict
        stays a small part of the budget): the ids of free slots are dropped first, and
        those slots emptied, so that no slot points at an id that is gone."""
        other, hi, free_epoch = self.other_ids, self._hi, self._free_epoch
        for slot in [s for s in other if hi[s] < free_epoch]:
            del other[slot]
            hi[slot] = 0
        return len(other) < self._other_cap

    def _id_at(self, slot: int) -> str:
        raw = bytes(self._ids[slot * ID_BYTES : (slot + 1) * ID_BYTES])
        return self.other_ids[slot] if raw == _NO_ID else _unpack_id(raw)

    def __len__(self) -> int:
        """Fingerprints inside the window (a loop over every slot: for tests and benchmarks)."""
        return sum(1 for _ in self._live())

    def _live(self) -> Iterator[tuple[bytes, int, str]]:
        """(48-bit key, absolute tick, first message id) of every fingerprint in the window."""
        horizon = self._high - self._window
        base = self._base or 0
        keys, lo = self._keys, self._lo
        for slot, h in enumerate(self._hi):
            t = h << 8 | lo[slot]
            if h and t >= horizon:
                k6 = bytes(keys[slot * KEY_BYTES : (slot + 1) * KEY_BYTES])
                yield k6, base + t, self._id_at(slot)

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> DedupeState:
        """A view, serialised when pickled (see the module docstring), not a copy."""
        return _Snapshot(self)  # type: ignore[return-value]

    def state(self) -> DedupeState:
        """The format-2 snapshot: bytes and ints (and the few ids that are not UUIDs)."""
        return {
            "format": FORMAT,
            "tick_ms": self._tick,
            "window_ticks": self._window,
            "buckets": self._buckets,
            "base": self._base,
            "high": self._high,
            "keys": bytes(self._keys),
            "hi": bytes(self._hi),
            "lo": bytes(self._lo),
            "ids": bytes(self._ids),
            "other_ids": dict(self.other_ids),
        }

    def _restore(self, state: DedupeState | _Snapshot) -> None:
        if isinstance(state, _Snapshot):  # handed over without pickling (in-process)
            state = state.logic.state()
        if state.get("format") == FORMAT:
            self._restore_compact(state)
            return
        # Earlier formats: fingerprint -> 8-byte ms + id, or fingerprint -> (id, ms).
        entries = []
        for fingerprint, entry in state.items():
            if isinstance(entry, bytes):
                ms = int.from_bytes(entry[:_TS_BYTES], "big", signed=True)
                message_id = entry[_TS_BYTES:].decode("utf-8", "surrogatepass")
            else:
                message_id, ms = entry
            entries.append((_key6(fingerprint), ms // self._tick, message_id))
        self._insert_all(entries)

    def _restore_compact(self, state: DedupeState) -> None:
        geometry = (state["tick_ms"], state["window_ticks"], state["buckets"])
        if geometry == (self._tick, self._window, self._buckets):
            self._keys[:] = state["keys"]
            self._hi[:] = state["hi"]
            self._lo[:] = state["lo"]
            self._ids[:] = state["ids"]
            self.other_ids = dict(state["other_ids"])
            self._base, self._high = state["base"], state["high"]
            self._set_free()
            return
        # Another budget or window since the snapshot: insert what is inside the window.
        old = DedupeLogic(1, BUCKET, None)
        old._tick, old._window, old._buckets = geometry
        old._keys, old._hi = bytearray(state["keys"]), bytearray(state["hi"])
        old._lo, old._ids = bytearray(state["lo"]), bytearray(state["ids"])
        old.other_ids = dict(state["other_ids"])
        old._base, old._high = state["base"], state["high"]
        self._insert_all(
            (k6, tick * old._tick // self._tick, message_id) for k6, tick, message_id in old._live()
        )

    def _insert_all(self, entries: Iterable[tuple[bytes, int, str]]) -> None:
        """Restored (key, absolute tick, first id) entries, oldest first."""
        for k6, tick, message_id in sorted(entries, key=lambda e: e[1]):
            t = self._relative(tick)
            if t >= self._high - self._window:
                self._insert(int.from_bytes(k6, "big"), k6, t, message_id)


class _Snapshot:
    """What `snapshot` returns: pickles as the format-2 dict of the logic it views. Bytewax
    pickles a snapshot right after taking it (with recovery; without, it drops it); one
    pickled later would hold later state, which is still a correct window."""

    __slots__ = ("logic",)

    def __init__(self, logic: DedupeLogic) -> None:
        self.logic = logic

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self.logic.state(),))


def builder(window_seconds: float, slots: int) -> Any:
    """The `stateful_batch` builder: a fresh or recovered logic per shard key."""

    def build(state: DedupeState | None) -> DedupeLogic:
        return DedupeLogic(window_seconds, slots, state)

    return build
