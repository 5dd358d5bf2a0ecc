"""Mask step: replace PII with keyed tokens and seal each distinct value once into the vault.

Per batch, the distinct values are tokenised in one call (with a KMS token key: concurrent
GenerateMacs, see `logins.core.kms`), and the values the vault does not hold yet
are sealed under one data key for the whole batch (`logins.core.vault.SealBatch`: one sealed box
per batch, then about a microsecond per value). The `SealCache` remembers which tokens the
vault already holds (only after the sink committed them: a token sealed in a batch that
rolled back must be sealed again), so a value that keeps coming back is not sent to the vault
again, and a ciphertext is reused while its first write is still in flight. Rejected bodies
are sealed whole; duplicates keep no fields at all. After this step no raw PII is left in the
event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from logins.core.config import MaskStep
from logins.core.records import Event, VaultEntry
from logins.core.sealcache import SealCache
from logins.core.tokens import Tokenizer
from logins.core.vault import Sealer

# A PII value taken out of an event: (event, its fields, column, (field, value)).
_Masked = tuple[Event, dict[str, Any], str, tuple[str, str]]


class Masker:
    def __init__(
        self, step: MaskStep, tokenizer: Tokenizer, sealer: Sealer, cache: SealCache
    ) -> None:
        self._fields = list(step.fields.items())
        self._tokenizer = tokenizer
        self._sealer = sealer
        self._cache = cache

    def __call__(self, event: Event) -> Event:
        self.batch([event])
        return event

    def batch(self, events: Iterable[Event]) -> list[Event]:
        events = list(events)
        seals = self._sealer.batch()
        key_id = self._sealer.key_id
        spec = self._fields
        masked: list[_Masked] = []
        distinct: dict[tuple[str, str], None] = {}  # (field, value), first seen first
        for event in events:
            message = event.message
            fields = event.fields
            if event.rejection is not None:
                event.sealed_body = seals.seal_rejected(message.message_id, message.body)
                event.vault_key_id = key_id
            elif event.duplicate:
                event.fields = None
            elif fields is not None and not event.masked:
                # the PII out of `fields`; its column is filled once the token is known
                for name, column in spec:
                    value = fields.pop(name, None)
                    fields[column] = None
                    if value is not None:
                        assert isinstance(value, str)
                        pair = (name, value)
                        distinct[pair] = None
                        masked.append((event, fields, column, pair))
            message.body = ""
            event.masked = True
        if not masked:
            return events
        # One call for the batch's distinct values: with a KMS key, concurrent GenerateMacs.
        pairs = list(distinct)
        tokens = dict(zip(pairs, self._tokenizer.tokens(pairs), strict=True))
        values = {tokens[pair]: pair for pair in pairs}  # token -> (field, value)
        cache = self._cache
        committed = cache.committed_among(values)
        sealed = cache.pending_among(t for t in values if t not in committed)
        fresh = [
            (token, seals.seal(field, token, value))
            for token, (field, value) in values.items()
            if token not in committed and token not in sealed
        ]
        cache.add_pending_many(fresh)
        sealed.update(fresh)
        # one entry per token the vault lacks, shared by the events that carry it
        entries = {
            token: VaultEntry(token, field, sealed[token], key_id)
            for token, (field, _) in values.items()
            if token not in committed
        }
        for event, fields, column, pair in masked:
            token = fields[column] = tokens[pair]
            entry = entries.get(token)
            if entry is not None:
                event.vault_entries.append(entry)
        return events
