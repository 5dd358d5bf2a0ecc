"""Which tokens the vault already holds, as far as this process knows.

Shared by the mask step (which seals only what the vault lacks) and the sink (which marks a
token committed only after its transaction committed), so it lives below both.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable


class SealCache:
    """Per-process memory of sealed tokens, shared by the mask step and the sink (thread-safe).

    `committed` is an LRU: a token seen again moves to the end, so the values that keep
    coming back (the active users) stay remembered and are not written to the vault again.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._committed: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def committed_among(self, tokens: Iterable[str]) -> set[str]:
        """Those of `tokens` the vault holds (as far as this process knows); refreshes them."""
        found: set[str] = set()
        committed = self._committed
        with self._lock:
            for token in tokens:
                if token in committed:
                    committed.move_to_end(token)
                    found.add(token)
        return found

    def pending_among(self, tokens: Iterable[str]) -> dict[str, bytes]:
        """The sealed values of those of `tokens` whose first write is still in flight."""
        pending = self._pending
        with self._lock:
            return {t: pending[t] for t in tokens if t in pending}

    def add_pending_many(self, entries: Iterable[tuple[str, bytes]]) -> None:
        limit = max(self._size, 1)
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
            while len(committed) > self._size:  # least recently used first
                committed.popitem(last=False)
