"""Period keys never reach the recovery store in the clear: a snapshot seals each with a pad
kept in a file of its own, wiped and unlinked when the period retires (issue 18, finding 2).
The store's free space keeps old snapshots; their sealed keys are noise once the pad is gone."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.steps import dedupe
from flows.steps.dedupe import KEY_DIR_ENV, PAD_SUFFIX, DedupeLogic, key_directory
from tests.unit.test_dedupe_window import SECOND, T0, WINDOW, login


@pytest.fixture
def pads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv(KEY_DIR_ENV, str(tmp_path / "keys"))
    key_directory.cache_clear()
    yield tmp_path / "keys"
    key_directory.cache_clear()


def test_a_retired_periods_sealed_key_is_noise_once_its_pad_is_wiped(pads: Path) -> None:
    logic = DedupeLogic(WINDOW, 1024, None)
    logic.on_batch([login(1, T0)])
    key = logic.window.live_keys()[0]
    old = pickle.dumps(logic.snapshot())  # what SQLite's free space may keep for ever
    assert key not in old
    [pad_file] = pads.glob(f"*{PAD_SUFFIX}")
    assert pad_file.stat().st_mode & 0o777 == 0o600
    [[number, sealed, _, name]] = pickle.loads(old)["periods"]
    assert name == pad_file.name and len(sealed) == len(key) and sealed != key
    assert dedupe._xor(sealed, pad_file.read_bytes()) == key  # the pad opens it ...

    # ... and a restart within the window restores the key from it: the resend is seen
    restarted = DedupeLogic(WINDOW, 1024, pickle.loads(old))
    assert restarted.window.live_keys() == [key]
    resend = login(1, T0 + 5 * SECOND)
    restarted.on_batch([resend])
    assert resend.duplicate
    assert list(pads.glob(f"*{PAD_SUFFIX}")) == [pad_file]  # one pad per period, reused

    # the period retires (a window past its end): its pad is overwritten and unlinked
    restarted.on_batch([login(2, T0 + 3 * WINDOW * SECOND)])
    assert number not in restarted.window.live_numbers()
    assert not pad_file.exists()
    newer = pickle.dumps(restarted.snapshot())
    assert key not in newer
    # the old snapshot (as free space would keep it) now restores without that period
    again = DedupeLogic(WINDOW, 1024, pickle.loads(old))
    assert again.window.live_keys() == []
    late = login(1, T0 + 6 * SECOND)
    again.on_batch([late])
    assert not late.duplicate  # a row, never a loss


def test_an_idle_shard_wipes_its_pad_on_the_wall_clock(pads: Path) -> None:
    now = [T0 / 1000]
    logic = DedupeLogic(WINDOW, 1024, None, clock=lambda: now[0])
    logic.on_batch([login(1, T0)])
    pickle.dumps(logic.snapshot())
    assert len(list(pads.glob(f"*{PAD_SUFFIX}"))) == 1
    wake = logic.notify_at()
    assert wake is not None
    now[0] = wake.timestamp()
    logic.on_notify()
    assert logic.window.live_keys() == [] and list(pads.glob(f"*{PAD_SUFFIX}")) == []


def test_without_recovery_nothing_is_written(pads: Path) -> None:
    """Bytewax does not pickle snapshots without recovery: no pad is made."""
    logic = DedupeLogic(WINDOW, 1024, None)
    logic.on_batch([login(1, T0)])
    logic.snapshot()
    assert not pads.exists() or list(pads.iterdir()) == []


def test_a_snapshot_dropped_for_another_window_wipes_its_pads(pads: Path) -> None:
    logic = DedupeLogic(WINDOW, 1024, None)
    logic.on_batch([login(1, T0)])
    blob = pickle.dumps(logic.snapshot())
    assert len(list(pads.glob(f"*{PAD_SUFFIX}"))) == 1
    restored = DedupeLogic(WINDOW / 2, 1024, pickle.loads(blob))  # its keys serve old periods
    assert restored.window.live_keys() == [] and list(pads.glob(f"*{PAD_SUFFIX}")) == []
