"""Dedupe logic (bounded, content-keyed, redelivery-aware) and the mask step (no raw PII left)."""

from __future__ import annotations

import pickle

from flows.steps.dedupe import DedupeLogic, shard_of
from flows.steps.mask import Masker
from logins.core.config import MaskStep
from logins.core.keys import TokenKey
from logins.core.records import Event, Rejection, SqsMessage
from logins.core.sealcache import SealCache
from logins.core.tokens import Tokenizer
from logins.core.vault import Sealer

MINUTE = 60_000


def event(
    message_id: str, fp: bytes, sent: int, rejected: bool = False, received: int = 1
) -> Event:
    return Event(
        message=SqsMessage(message_id, "rh", "{}", sent, received),
        fields=None if rejected else {"ip": "1.2.3.4"},
        rejection=Rejection("not_json", "x") if rejected else None,
        fingerprint=b"" if rejected else fp,
    )


def test_resend_within_window_is_a_duplicate_of_the_first() -> None:
    logic = DedupeLogic(window_seconds=600, slots=1000, state=None)
    out, _ = logic.on_batch([event("a", b"F", 0), event("b", b"F", 5 * MINUTE)])
    assert [e.duplicate for e in out] == [False, True]


def test_same_login_after_the_window_is_a_new_row() -> None:
    logic = DedupeLogic(window_seconds=600, slots=1000, state=None)
    out, _ = logic.on_batch([event("a", b"F", 0), event("b", b"F", 11 * MINUTE)])
    assert [e.duplicate for e in out] == [False, False]


def test_redelivery_of_the_same_message_is_not_a_duplicate() -> None:
    logic = DedupeLogic(window_seconds=600, slots=1000, state=None)
    logic.on_batch([event("a", b"F", 0)])
    out, _ = logic.on_batch([event("a", b"F", 0, received=2)])
    assert not out[0].duplicate  # the ledger makes its second write a no-op
    out, _ = logic.on_batch([event("b", b"F", 0)])  # another message, the same millisecond
    assert out[0].duplicate


def test_rejected_events_pass_untouched() -> None:
    logic = DedupeLogic(window_seconds=600, slots=1000, state=None)
    out, _ = logic.on_batch([event("a", b"", 0, rejected=True), event("b", b"", 0, rejected=True)])
    assert [e.outcome for e in out] == ["rejected", "rejected"]
    assert len(logic.window) == 0


def test_state_is_bounded_by_window_and_size() -> None:
    logic = DedupeLogic(window_seconds=60, slots=100, state=None)
    for i in range(10_000):
        logic.on_batch([event(f"m{i}", i.to_bytes(4, "big"), i * 1000)])
        assert len(logic.window) <= 100
    logic = DedupeLogic(window_seconds=10, slots=10_000, state=None)
    logic.on_batch([event(f"m{i}", i.to_bytes(4, "big"), i * 1000) for i in range(1000)])
    assert len(logic.window) <= 11  # only the last 10 s of SentTimestamp are inside the window
    assert len(pickle.loads(pickle.dumps(logic.snapshot()))["periods"][0][2]) <= 8 * 22


def test_state_snapshot_pickles_and_restores() -> None:
    logic = DedupeLogic(window_seconds=600, slots=1000, state=None)
    logic.on_batch([event("a", b"F", 0)])
    restored = DedupeLogic(600, 1000, pickle.loads(pickle.dumps(logic.snapshot())))
    out, _ = restored.on_batch([event("b", b"F", 1000)])
    assert out[0].duplicate


def test_shards_spread_keys() -> None:
    import hashlib

    fps = [hashlib.blake2b(str(i).encode(), digest_size=16).digest() for i in range(5000)]
    keys = {shard_of(event(str(i), fp, 0), 64) for i, fp in enumerate(fps)}
    assert len(keys) == 64


def _masker(cache: SealCache) -> Masker:
    from nacl.public import PrivateKey

    step = MaskStep(type="mask", fields={"ip": "masked_ip", "device_id": "masked_device_id"})
    return Masker(
        step,
        Tokenizer([TokenKey("k1", b"\x01" * 32)]),
        Sealer(PrivateKey.generate().public_key),
        cache,
    )


def test_mask_replaces_pii_with_tokens_and_seals_each_value_once() -> None:
    cache = SealCache(1000)
    masker = _masker(cache)
    events = [
        Event(
            SqsMessage(f"m{i}", "rh", "raw body 1.2.3.4", 0, 1),
            fields={"ip": "1.2.3.4", "device_id": "593-47-5928", "user_id": "u"},
        )
        for i in range(3)
    ]
    out = masker.batch(events)
    for e in out:
        assert e.masked and e.message.body == ""
        assert e.fields is not None and set(e.fields) == {
            "masked_ip",
            "masked_device_id",
            "user_id",
        }
        assert "1.2.3.4" not in repr(e.fields)
    # in flight: every event carries the entry (its batch may commit alone) but it was sealed once
    assert len({v.sealed for e in out for v in e.vault_entries}) == 2
    cache.mark_committed(v.token for e in out for v in e.vault_entries)
    later = masker(
        Event(
            SqsMessage("m9", "rh", "", 0, 1), fields={"ip": "1.2.3.4", "device_id": "593-47-5928"}
        )
    )
    assert later.vault_entries == []  # already in the vault: nothing to seal or write


def test_mask_seals_rejected_bodies_and_drops_duplicate_fields() -> None:
    masker = _masker(SealCache(10))
    rejected = Event(
        SqsMessage("r", "rh", '{"ip": "1.2.3.4"', 0, 1), rejection=Rejection("not_json", "x")
    )
    duplicate = Event(SqsMessage("d", "rh", "{}", 0, 1), fields={"ip": "1.2.3.4"}, duplicate=True)
    masker.batch([rejected, duplicate])
    assert rejected.sealed_body and b"1.2.3.4" not in rejected.sealed_body
    assert rejected.message.body == "" and rejected.vault_key_id
    assert duplicate.fields is None and duplicate.message.body == ""


def test_seal_cache_is_bounded() -> None:
    cache = SealCache(100)
    cache.mark_committed(f"t{i}" for i in range(1000))
    assert len(cache.committed_among(f"t{i}" for i in range(1000))) == 100
    assert cache.committed_among(["t999", "t0"]) == {"t999"}


def test_seal_cache_remembers_what_its_lru_evicts_as_hashes() -> None:
    # 1,900 hashes in 12,500 buckets of 8: no bucket fills, whatever the process's hash seed
    # (with 1,250 buckets one overflowed in about 3% of runs, and the test flaked)
    cache = SealCache(100, overflow_slots=100_000)
    assert cache.overflow_bytes == 100_000 * 8  # allocated at start, whatever comes
    tokens = [f"k1.{i:032x}" for i in range(2000)]
    cache.mark_committed(tokens)
    assert cache.committed_among(tokens) == set(tokens)  # 100 in the LRU, 1,900 as hashes
    others = [f"k1.{i:032x}" for i in range(2000, 102_000)]
    assert cache.committed_among(others) == set()  # no false "held": it would skip a seal


def test_seal_cache_overflow_is_bounded_and_forgets_in_turn() -> None:
    cache = SealCache(10, overflow_slots=64)
    tokens = [f"t{i}" for i in range(10_000)]
    cache.mark_committed(tokens)
    found = cache.committed_among(tokens)
    assert set(tokens[-10:]) <= found  # the LRU's ten
    assert len(found) <= 10 + 64
    assert len(found) > 10 + 32  # buckets that filled forget one slot, not all
    assert SealCache(0, overflow_slots=64).overflow_bytes == 0  # no cache: nothing allocated


def test_seal_cache_keeps_the_tokens_that_come_back() -> None:
    cache = SealCache(3)
    cache.mark_committed(["a", "b", "c"])
    assert cache.committed_among(["a", "x"]) == {"a"}  # "a" is now the most recent
    cache.mark_committed(["d"])  # evicts the least recently used: "b"
    assert cache.committed_among(["a", "b", "c", "d"]) == {"a", "c", "d"}
