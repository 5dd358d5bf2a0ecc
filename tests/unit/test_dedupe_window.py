"""The dedupe window (flows/steps/dedupe_window.py): the resend rule at full rate, keys that are
random per period and die with it, state that pickles and holds only live fingerprints, and a
plain model it agrees with (hypothesis)."""

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
from flows.steps.dedupe import DedupeLogic, slots_per_period
from flows.steps.dedupe_window import KEY_BYTES, SLOT_BYTES, Window, tick_ms
from logins.core.records import Event, SqsMessage

T0 = 1_780_000_000_000  # a SentTimestamp in ms
SECOND = 1000
WINDOW = 600


def digest(n: int) -> bytes:
    return hashlib.blake2b(n.to_bytes(8, "big"), digest_size=16).digest()


def message_id(n: int) -> str:
    return str(uuid.UUID(bytes=hashlib.blake2b(b"id%d" % n, digest_size=16).digest(), version=4))


def login(n: int, sent_ms: int, *, mid: str | None = None) -> Event:
    """Login `n` (its fields decide the digest) sent at `sent_ms`, in message `mid`."""
    return Event(
        message=SqsMessage(mid or message_id(n * 1_000_003 + sent_ms), "rh", "", sent_ms, 1),
        fields={},
        fingerprint=digest(n),
    )


def evicted_early() -> float:
    return REGISTRY.get_sample_value("logins_dedupe_evicted_early_total") or 0.0


@pytest.mark.parametrize("filled", [0.0, 0.9])
def test_the_window_holds_to_the_second(filled: float) -> None:
    """A resend 1 s inside the window is recognised, 1 s outside it is not, also with the
    tables 90 % full of other logins sent over the whole window."""
    window = Window(WINDOW, 4096)
    others = int(window.slots * filled)
    step = WINDOW * SECOND // max(others, 1)
    assert not window.seen(digest(1), T0) and not window.seen(digest(2), T0)
    for i in range(others):  # other logins fill the window; none of them repeats
        assert not window.seen(digest(1000 + i), T0 + i * step)
    assert window.seen(digest(1), T0 + (WINDOW - 1) * SECOND)
    assert not window.seen(digest(2), T0 + (WINDOW + 1) * SECOND)
    assert window.dropped == 0


def test_the_same_message_again_is_not_a_duplicate() -> None:
    """A redelivery (same fields, same SentTimestamp, received before) keeps its outcome; a
    resend is a duplicate, also in the same tick on its first delivery, and so is a
    redelivery of a resend sent at another tick."""
    window = Window(WINDOW, 1024)
    assert not window.seen(digest(1), T0)
    assert not window.seen(digest(1), T0, redelivered=True)  # the original again
    assert window.seen(digest(1), T0)  # a resend in the same SendMessageBatch
    later = T0 + tick_ms(WINDOW)
    assert window.seen(digest(1), later) and window.seen(digest(1), later, redelivered=True)


def test_dropped_fingerprints_are_counted_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over budget, every fingerprint inside its window is either still held or counted as
    evicted early: none disappears silently."""
    monkeypatch.setattr(dedupe, "EARLY", dedupe._EarlyEvictions())
    logic = DedupeLogic(WINDOW, 64, None)
    before = evicted_early()
    logins = 500  # all inside one window, far more than 64 slots
    logic.on_batch([login(n, T0 + n * 10) for n in range(logins)])
    dropped = evicted_early() - before
    assert dropped > 0 and dropped == logic.window.dropped
    assert len(logic.window) + dropped == logins
    # a resend of each login still held is recognised, of each dropped one not (each resend
    # tried on its own copy of the state: a resend not recognised is stored, moving others)
    blob = pickle.dumps(logic.snapshot())
    recognised = 0
    for n in range(logins):
        resend = login(n, T0 + 60 * SECOND + n)
        DedupeLogic(WINDOW, 64, pickle.loads(blob)).on_batch([resend])
        recognised += resend.duplicate
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


def test_the_state_pickles_and_restores(caplog: pytest.LogCaptureFixture) -> None:
    """A restored shard recognises what the first held, into the same budget and another; a
    snapshot of another window is dropped with a warning (its keys serve other periods)."""
    logic = DedupeLogic(WINDOW, 2048, None)
    logic.on_batch([login(n, T0 + n * SECOND) for n in range(300)])
    blob = pickle.dumps(logic.snapshot())
    assert b"flows" not in blob  # plain builtins: restorable whatever this module becomes
    for restored in (
        DedupeLogic(WINDOW, 2048, pickle.loads(blob)),
        DedupeLogic(WINDOW, 8192, pickle.loads(blob)),
    ):
        resends = [login(n, T0 + (n + 300) * SECOND) for n in range(300)]
        restored.on_batch(resends)
        assert all(e.duplicate for e in resends)
    with caplog.at_level(logging.WARNING):
        other = DedupeLogic(WINDOW * 2, 2048, pickle.loads(blob))
    assert len(other.window) == 0 and "window_seconds changed" in caplog.text


def test_a_snapshot_holds_the_live_fingerprints_not_the_budget() -> None:
    """8 bytes per fingerprint held and 32 per live key, whatever the budget."""
    for slots in (1024, 1 << 17):
        window = Window(WINDOW, slots)
        for n in range(500):
            window.seen(digest(n), T0 + n * SECOND)
        size = len(pickle.dumps(window.state()))
        assert 500 * SLOT_BYTES < size < 500 * SLOT_BYTES + 2 * KEY_BYTES + 300


def test_keys_are_random_and_die_with_their_period() -> None:
    """Each period has its own random key (two shards never share one); once a window past
    the period's end, its key and slots are zeroed in memory and absent from the state."""
    a, b = Window(WINDOW, 1024), Window(WINDOW, 1024)
    for window in (a, b):
        window.seen(digest(1), T0)
    assert a.live_keys() != b.live_keys() and len(set(a.live_keys()[0])) > 8
    period = a._periods[0]
    first_key, first_slot = a.live_keys()[0], period.table.replace(bytes(SLOT_BYTES), b"")
    a.seen(digest(2), T0 + WINDOW * SECOND)  # the next period: the first is still needed
    assert first_key in a.live_keys() and len(a.live_keys()) == 2
    a.seen(digest(3), T0 + 2 * WINDOW * SECOND + 2 * tick_ms(WINDOW) * 2)
    assert first_key not in a.live_keys()
    assert period.key == bytes(KEY_BYTES)  # zeroed where it was
    assert all(first_slot not in p.table for p in a._periods)  # its table was zeroed for reuse
    assert first_key not in pickle.dumps(a.state())
    assert len(a) == 1  # only the last login is inside the window


def test_the_window_holds_across_hours_of_time() -> None:
    """Hours later, a resend 9 min apart is still recognised, 11 min apart is not, and the
    state holds at most two periods' logins."""
    window = Window(WINDOW, 1024)
    for n in range(150):  # a login every two minutes for five hours, resent 9 or 11 min later
        sent = T0 + n * 120 * SECOND
        window.seen(digest(n), sent)
        assert window.seen(digest(n), sent + (9 if n % 2 else 11) * 60 * SECOND) == bool(n % 2)
        assert len(window.live_keys()) <= 2
    assert len(window) <= 7  # what the last 10 minutes hold: 5-6 logins, one resend


def test_the_state_fits_its_budget() -> None:
    """What 64 shards allocate (tracemalloc), holding logins, stays within the budget."""
    budget_mb = 6.4
    slots = slots_per_period(budget_mb, 64)
    batches = [[login(n, T0 + n) for n in range(i * 100, i * 100 + 100)] for i in range(64)]
    tracemalloc.start()
    logics = [DedupeLogic(WINDOW, slots, None) for _ in range(64)]
    for logic, batch in zip(logics, batches, strict=True):
        logic.on_batch(batch)
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert sum(len(logic.window) for logic in logics) == 64 * 100
    assert budget_mb * 1e6 * 0.97 < used <= budget_mb * 1e6
    assert slots_per_period(0.001, 64) == 8


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 90 * SECOND), st.booleans()),
        min_size=1,
        max_size=120,
    )
)
def test_it_agrees_with_a_plain_model(steps: list[tuple[int, int, bool]]) -> None:
    """With room to spare, the tables decide exactly what a dict of fields -> first tick
    decides, for logins in SentTimestamp order, including redeliveries of the same message
    (same fields and SentTimestamp, received before: never a duplicate of itself), and
    resends sent in the same millisecond as their original. A redelivery older than the
    window behind the newest login is not checked: its period may have retired (its first
    delivery's outcome stands in the ledger)."""
    window = Window(WINDOW / 10, 4096)
    tick = tick_ms(WINDOW / 10)
    ticks = WINDOW / 10 * SECOND // tick
    model: dict[int, int] = {}
    sent = T0
    last_sent: dict[int, int] = {}  # n -> the SentTimestamp of its last message
    for n, gap, redeliver in steps:
        sent += gap
        again = redeliver and n in last_sent  # the last message of `n`, delivered again
        at = last_sent[n] if again else sent
        last_sent[n] = at
        t = at // tick
        seen = model.get(n)
        expected = False
        if seen is not None and abs(t - seen) <= ticks:
            expected = t != seen or not again
        elif not again:
            model[n] = t
        stale = t < sent // tick - ticks
        assert window.seen(digest(n), at, redelivered=again) == expected or stale


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 400 * SECOND)), max_size=80))
def test_the_state_names_no_message_and_keeps_only_live_keys(
    steps: list[tuple[int, int]],
) -> None:
    """Whatever arrives: the pickled state holds no message id (text or 16 bytes), at most two
    keys, and no key of a period that a window has passed since."""
    logic = DedupeLogic(WINDOW / 10, 256, None)
    sent, events, keys_seen = T0, [], []
    for n, gap in steps:
        sent += gap
        event = login(n, sent)
        events.append(event)
        logic.on_batch([event])
        keys_seen.append((sent, logic.window.live_keys()))
    blob = pickle.dumps(logic.snapshot())
    for event in events:
        mid = event.message.message_id
        assert mid.encode() not in blob and uuid.UUID(mid).bytes not in blob
    state = pickle.loads(blob)
    assert len(state["periods"]) <= 2
    # no key, live or dead, is in the pickled state itself: each is sealed with its pad
    assert not any(key in blob for _, keys in keys_seen for key in keys)
    # a key in use two windows and a tick before the newest login is gone, pad and all
    opened = DedupeLogic(WINDOW / 10, 256, state).window.live_keys()
    assert len(opened) == len(state["periods"])
    for at, keys in keys_seen:
        if sent - at > 2 * WINDOW / 10 * SECOND + tick_ms(WINDOW / 10):
            assert not set(keys) & set(opened)


def test_an_idle_shard_retires_its_keys_on_the_wall_clock() -> None:
    """With no batch for a window, a shard asks to be woken a window after its oldest period
    would retire, and then retires it; a busy shard keeps to its SentTimestamps."""
    now = [T0 / 1000]
    logic = DedupeLogic(WINDOW, 1024, None, clock=lambda: now[0])
    assert logic.notify_at() is None  # nothing held: nothing to wake for
    logic.on_batch([login(1, T0)])
    key = logic.window.live_keys()[0]
    wake = logic.notify_at()
    assert wake is not None
    retires = logic.window.retires_at_ms()
    assert retires is not None and wake.timestamp() == retires / 1000 + WINDOW
    now[0] = wake.timestamp() - 1
    logic.on_batch([login(2, int(now[0] * 1000) - 3 * WINDOW * SECOND)])  # a backlog: busy
    now[0] = wake.timestamp()
    logic.on_notify()
    assert key in logic.window.live_keys()  # busy within the last window: untouched
    now[0] += WINDOW
    logic.on_notify()
    assert logic.window.live_keys() == [] and len(logic.window) == 0
    assert key not in pickle.dumps(logic.snapshot())
