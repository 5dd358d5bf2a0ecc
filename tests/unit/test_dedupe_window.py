"""The dedupe window at full rate: compact state that holds its window, counts what it has to
drop, survives pickling (and the earlier snapshot formats) and agrees with a plain model."""

from __future__ import annotations

import hashlib
import logging
import pickle
import tracemalloc
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from flows.steps import dedupe
from flows.steps.dedupe import DedupeLogic, slots_per_shard, tick_ms
from logins.core.records import Event, SqsMessage

T0 = 1_780_000_000_000  # a SentTimestamp in ms
SECOND = 1000
WINDOW = 600


def fingerprint(n: int) -> bytes:
    return hashlib.blake2b(n.to_bytes(8, "big"), digest_size=16).digest()


def message_id(n: int) -> str:
    return str(uuid.UUID(bytes=hashlib.blake2b(b"id%d" % n, digest_size=16).digest(), version=4))


def login(n: int, sent_ms: int, *, mid: str | None = None) -> Event:
    """Login `n` (its fields decide the fingerprint) sent at `sent_ms`, in message `mid`."""
    return Event(
        message=SqsMessage(mid or message_id(n * 1_000_003 + sent_ms), "rh", "", sent_ms, 1),
        fields={},
        fingerprint=fingerprint(n),
    )


def evicted_early() -> float:
    return REGISTRY.get_sample_value("logins_dedupe_evicted_early_total") or 0.0


@pytest.mark.parametrize("filled", [0.0, 0.9])
def test_the_window_holds_to_the_second(filled: float) -> None:
    """A resend 1 s inside the window is recognised, 1 s outside it is not, also with the
    table 90 % full of other logins sent over the whole window."""
    logic = DedupeLogic(WINDOW, 4096, None)
    early = evicted_early()
    others = int(logic.slots * filled)
    step = WINDOW * SECOND // max(others, 1)
    first = [login(n, T0) for n in range(1, 3)]
    logic.on_batch(first)
    # other logins fill the window; none of them repeats
    for i in range(others):
        logic.on_batch([login(1000 + i, T0 + i * step)])
    inside = login(1, T0 + (WINDOW - 1) * SECOND)
    outside = login(2, T0 + (WINDOW + 1) * SECOND)
    logic.on_batch([inside, outside])
    assert inside.duplicate_of == first[0].message.message_id
    assert outside.duplicate_of is None
    assert evicted_early() == early


def test_dropped_fingerprints_are_counted_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over budget, every fingerprint inside its window is either still held or counted as
    evicted early: none disappears silently."""
    monkeypatch.setattr(dedupe, "EARLY", dedupe._EarlyEvictions())
    logic = DedupeLogic(WINDOW, 64, None)
    before = evicted_early()
    logins = 500  # all inside one window, far more than 64 slots
    logic.on_batch([login(n, T0 + n * 10) for n in range(logins)])
    dropped = evicted_early() - before
    assert dropped > 0
    assert len(logic) + dropped == logins
    # a resend of each login still held is recognised, of each dropped one not (each resend
    # tried on its own copy of the state: a resend not recognised is stored, moving others)
    blob = pickle.dumps(logic.snapshot())
    recognised = 0
    for n in range(logins):
        resend = login(n, T0 + 60 * SECOND + n)
        DedupeLogic(WINDOW, 64, pickle.loads(blob)).on_batch([resend])
        recognised += resend.duplicate_of is not None
    assert recognised == logins - dropped


def test_early_evictions_are_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    early = dedupe._EarlyEvictions(60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=dedupe.__name__):
        for _ in range(1000):
            early.add(slots=64)
        now[0] = 59.0
        early.add(slots=64)
        assert len(caplog.records) == 1
        now[0] = 61.0
        early.add(slots=64)
    assert len(caplog.records) == 2
    assert "1 fingerprints dropped" in caplog.records[0].getMessage()
    assert "1001 fingerprints dropped" in caplog.records[1].getMessage()


def test_the_state_pickles_and_restores() -> None:
    """A restored shard recognises what the first held, with UUID and other message ids,
    into the same geometry and into another budget and window."""
    logic = DedupeLogic(WINDOW, 2048, None)
    firsts = [
        login(n, T0 + n * SECOND, mid=None if n % 5 else f"not-a-uuid-{n}") for n in range(300)
    ]
    logic.on_batch(firsts)
    blob = pickle.dumps(logic.snapshot())
    assert b"flows" not in blob  # plain builtins: restorable whatever this module becomes
    for restored in (
        DedupeLogic(WINDOW, 2048, pickle.loads(blob)),
        DedupeLogic(WINDOW * 2, 8192, pickle.loads(blob)),
    ):
        resends = [login(n, T0 + (n + 300) * SECOND) for n in range(300)]
        restored.on_batch(resends)
        assert [e.duplicate_of for e in resends] == [e.message.message_id for e in firsts]


def test_a_snapshot_of_the_packed_dict_format_is_restored() -> None:
    """The format before this one: fingerprint -> 8-byte big-endian ms + the id (UTF-8)."""
    old = {fingerprint(n): (T0 + n).to_bytes(8, "big") + message_id(n).encode() for n in range(50)}
    restored = DedupeLogic(WINDOW, 1024, old)
    resends = [login(n, T0 + 5 * 60 * SECOND) for n in range(50)]
    restored.on_batch(resends)
    assert [e.duplicate_of for e in resends] == [message_id(n) for n in range(50)]


def test_the_window_holds_across_hours_of_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Times are 16-bit ticks from a base that moves: hours later, a resend 9 min apart is
    still recognised, 11 min apart is not, and nothing older lingers."""
    rebases: list[int] = []
    rebase = DedupeLogic._rebase
    monkeypatch.setattr(
        DedupeLogic, "_rebase", lambda self, n: (rebases.append(n), rebase(self, n))
    )
    logic = DedupeLogic(WINDOW, 1024, None)
    for n in range(150):  # a login every two minutes for five hours, resent 9 or 11 min later
        sent = T0 + n * 120 * SECOND
        logic.on_batch([login(n, sent)])
        resend = login(n, sent + (9 if n % 2 else 11) * 60 * SECOND)
        logic.on_batch([resend])
        assert (resend.duplicate_of is not None) == bool(n % 2)
    assert len(rebases) >= 5  # 5 h of 25 ms ticks is 11 times the 16-bit range
    assert len(logic) <= 7  # what the last 10 minutes hold: 5-6 logins, one resend


def test_the_state_fits_its_budget() -> None:
    """What 64 shards allocate (tracemalloc), holding logins, stays within the budget."""
    budget_mb = 6.4
    slots = slots_per_shard(budget_mb, 64)
    batches = [[login(n, T0 + n) for n in range(i * 100, i * 100 + 100)] for i in range(64)]
    tracemalloc.start()
    logics = [DedupeLogic(WINDOW, slots, None) for _ in range(64)]
    for logic, batch in zip(logics, batches, strict=True):
        logic.on_batch(batch)
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert sum(map(len, logics)) == 64 * 100
    assert budget_mb * 1e6 * 0.98 < used <= budget_mb * 1e6
    assert slots_per_shard(150, 64, max_entries=2000) == 2000  # the deprecated cap still works
    assert slots_per_shard(0.001, 64) == 8


def test_ids_that_are_not_uuids_are_bounded_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Such ids take a dict entry each: at most one per 64 slots (or 64); past that a login
    with one is dropped and counted, and the ids of expired slots make room first."""
    monkeypatch.setattr(dedupe, "EARLY", dedupe._EarlyEvictions())
    logic = DedupeLogic(WINDOW, 1024, None)
    before = evicted_early()
    logic.on_batch([login(n, T0 + n, mid=f"id-{n}") for n in range(100)])
    assert len(logic.other_ids) == 64
    assert evicted_early() - before == 36
    later = [login(1000 + n, T0 + 11 * 60 * SECOND + n, mid=f"id-{n}") for n in range(50)]
    logic.on_batch(later)  # the first 64 are out of the window now
    assert evicted_early() - before == 36
    resend = login(1049, T0 + 12 * 60 * SECOND)
    logic.on_batch([resend])
    assert resend.duplicate_of == "id-49"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 90 * SECOND), st.booleans()),
        min_size=1,
        max_size=120,
    )
)
def test_it_agrees_with_a_plain_model(steps: list[tuple[int, int, bool]]) -> None:
    """With room to spare, the table decides exactly what a dict of fingerprint ->
    (first tick, first id) decides, for logins in SentTimestamp order, including
    redeliveries of the same message (never a duplicate of itself)."""
    logic = DedupeLogic(WINDOW / 10, 4096, None)
    tick, window = tick_ms(WINDOW / 10), WINDOW / 10 * SECOND // tick_ms(WINDOW / 10)
    model: dict[int, tuple[int, str]] = {}
    sent, last_id = T0, {}
    for n, gap, redeliver in steps:
        sent += gap
        mid = last_id[n] if redeliver and n in last_id else message_id(sent * 100 + n)
        last_id[n] = mid
        event = login(n, sent, mid=mid)
        logic.on_batch([event])
        t = sent // tick
        seen = model.get(n)
        expected = None
        if seen is not None and abs(t - seen[0]) <= window:
            expected = seen[1] if seen[1] != mid else None
        else:
            model[n] = (t, mid)
        assert event.duplicate_of == expected
