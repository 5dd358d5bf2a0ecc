"""Which tokens the vault already holds, as far as this process knows.

Shared by the mask step (which seals only what the vault lacks) and the sink (which marks a
token committed only after its transaction committed), so it lives below both.

Two tiers. The front is an exact LRU of `size` tokens: the values that keep coming back (the
active users) stay there. What it evicts moves to the back tier, a table of 8-byte keyed
hashes allocated whole at start (`overflow_slots`, buckets of 8 slots; a full bucket forgets
one of its slots in turn), so the long tail of a large stream is remembered at 8 bytes a token
instead of ~175: 2M tokens in 16 MB. Without it, a stream with more distinct values than the
LRU holds re-seals the forgotten ones and sends them to the vault again, whose insert then
finds each in an index larger than PostgreSQL's buffers (1.66 vault entries per message at
1M messages instead of 0.58; bench/pgsplit.py).

Forgetting is always safe: a forgotten token costs one vault entry more, which the vault's
insert skips. A false "held" is not: that value would not be sealed. The back tier's keys are
Python's string hash (SipHash, keyed per process), 64 bits compared within one bucket of 8,
so a false match has a probability of about 2^-61 per lookup; tokens are keyed digests, so
nobody without the token key can choose two that collide.
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable

BUCKET = 8  # slots per bucket of the back tier
SLOT_BYTES = 8  # one unsigned 64-bit hash per slot
PENDING_LIMIT = 65_536  # ciphertexts whose first write is in flight (a few batches' worth)
_MASK = (1 << 64) - 1


class SealCache:
    """Per-process memory of sealed tokens, shared by the mask step and the sink (thread-safe).

    `size` tokens in the exact LRU front (a token seen again moves to its end), and up to
    `overflow_slots` more, evicted from the front, as hashes in the back tier (0: none)."""

    def __init__(self, size: int, overflow_slots: int = 0) -> None:
        self._size = size
        self._committed: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._buckets = -(-overflow_slots // BUCKET) if size > 0 else 0
        self._overflow = array("Q", bytes(self._buckets * BUCKET * SLOT_BYTES))
        self._turn = 0  # which slot of a full bucket is forgotten next

    @property
    def overflow_bytes(self) -> int:
        """Memory of the back tier, allocated at start."""
        return self._buckets * BUCKET * SLOT_BYTES

    def committed_among(self, tokens: Iterable[str]) -> set[str]:
        """Those of `tokens` the vault holds (as far as this process knows); refreshes them."""
        found: set[str] = set()
        committed, overflow = self._committed, self._overflow
        with self._lock:
            for token in tokens:
                if token in committed:
                    committed.move_to_end(token)
                    found.add(token)
                elif self._buckets:
                    key, start = self._slot(token)
                    if key in overflow[start : start + BUCKET]:
                        found.add(token)
        return found

    def pending_among(self, tokens: Iterable[str]) -> dict[str, bytes]:
        """The sealed values of those of `tokens` whose first write is still in flight."""
        pending = self._pending
        with self._lock:
            return {t: pending[t] for t in tokens if t in pending}

    def add_pending_many(self, entries: Iterable[tuple[str, bytes]]) -> None:
        limit = max(min(self._size, PENDING_LIMIT), 1)
        with self._lock:
            for token, sealed in entries:
                if len(self._pending) >= limit:
                    self._pending.clear()  # bounded; a dropped entry only costs a re-seal
                self._pending[token] = sealed

    def mark_committed(self, tokens: Iterable[str]) -> None:
        if self._size == 0:
            return
        committed = self._committed
        with self._lock:
            for token in tokens:
                self._pending.pop(token, None)
                committed[token] = None
                committed.move_to_end(token)
            while len(committed) > self._size:  # least recently used first, to the back tier
                token, _ = committed.popitem(last=False)
                if self._buckets:
                    self._remember(token)

    def _slot(self, token: str) -> tuple[int, int]:
        """`token`'s key in the back tier (its hash; 0 marks a free slot) and where its
        bucket starts."""
        key = (hash(token) & _MASK) or 1
        return key, key % self._buckets * BUCKET

    def _remember(self, token: str) -> None:
        """Put `token`'s hash in its bucket: a free slot, else the bucket's next in turn."""
        key, start = self._slot(token)
        bucket = self._overflow[start : start + BUCKET]
        if key in bucket:
            return
        try:
            slot = bucket.index(0)
        except ValueError:
            slot = self._turn
            self._turn = (slot + 1) % BUCKET
        self._overflow[start + slot] = key
