"""Mask step: replace PII with keyed tokens and seal each distinct value once into the vault.

Sealing costs ~90 us per value, so the `SealCache` remembers which tokens the vault already
holds (only after the sink committed them: a token sealed in a batch that rolled back must be
sealed again) and reuses a ciphertext while its first write is still in flight. Rejected
bodies are sealed whole; duplicates keep no fields at all. After this step no raw PII is left
in the event.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from logins.config import MaskStep
from logins.records import Event, VaultEntry
from logins.tokens import Tokenizer
from logins.vault import Sealer


class SealCache:
    """Per-process memory of sealed tokens, shared by the mask step and the sink (thread-safe)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._committed: dict[str, None] = {}
        self._pending: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def is_committed(self, token: str) -> bool:
        return token in self._committed

    def pending(self, token: str) -> bytes | None:
        return self._pending.get(token)

    def add_pending(self, token: str, sealed: bytes) -> None:
        with self._lock:
            if len(self._pending) >= max(self._size, 1):
                self._pending.clear()  # bounded; a dropped entry only costs a re-seal
            self._pending[token] = sealed

    def mark_committed(self, tokens: Iterable[str]) -> None:
        if self._size == 0:
            return
        with self._lock:
            for token in tokens:
                self._pending.pop(token, None)
                self._committed[token] = None
            while len(self._committed) > self._size:  # FIFO eviction, oldest first
                del self._committed[next(iter(self._committed))]


class Masker:
    def __init__(
        self, step: MaskStep, tokenizer: Tokenizer, sealer: Sealer, cache: SealCache
    ) -> None:
        self._fields = list(step.fields.items())
        self._tokenizer = tokenizer
        self._sealer = sealer
        self._cache = cache

    def __call__(self, event: Event) -> Event:
        message = event.message
        if event.rejection is not None:
            event.sealed_body = self._sealer.seal_rejected(message.message_id, message.body)
            event.vault_key_id = self._sealer.key_id
        elif event.duplicate_of is not None:
            event.fields = None
        elif event.fields is not None and not event.masked:
            self._mask_fields(event, event.fields)
        message.body = ""
        event.masked = True
        return event

    def _mask_fields(self, event: Event, fields: dict[str, object]) -> None:
        for name, column in self._fields:
            value = fields.pop(name, None)
            if value is None:
                fields[column] = None
                continue
            assert isinstance(value, str)
            token = self._tokenizer.token(name, value)
            fields[column] = token
            if self._cache.is_committed(token):
                continue
            sealed = self._cache.pending(token)
            if sealed is None:
                sealed = self._sealer.seal(name, token, value)
                self._cache.add_pending(token, sealed)
            event.vault_entries.append(VaultEntry(token, name, sealed, self._sealer.key_id))

    def batch(self, events: Iterable[Event]) -> list[Event]:
        return [self(e) for e in events]
