"""Dedupe step: recognise a login the producer sent twice (the rule and its state:
`flows/steps/dedupe_window.py`).

State is keyed by shard (a few dozen keys, each holding many fingerprints) because Bytewax's
per-key overhead dominates with one key per message; this module only keys the events and
calls each shard's `Window`. A recognised resend is marked `duplicate` without naming the
message it repeats: the state keeps nothing that could name it.

Redelivery of the *same* SQS message is not a duplicate: it keeps the outcome it had, and the
sink's ledger makes its second write a no-op. Duplicates still reach the sink, so they are
recorded and deleted from the queue. This state is an optimisation; the ledger is the truth.

A shard's periods retire as its SentTimestamps move on. A shard that receives nothing (an
idle flow, or a quiet shard) asks Bytewax to wake it (`notify_at`) a window after its oldest
period would have retired, and if it saw no batch for a window by then, moves its high water
to the wall clock less one window: its dead keys are gone from memory and, through the
snapshot its wake-up causes, from the recovery store. A shard that is busy (draining a
backlog of older SentTimestamps) keeps to its SentTimestamps.

Snapshots (Bytewax takes one per touched key every epoch, and pickles it only with recovery)
are a view of the live window, serialised when pickled: a plain dict of the live periods'
sealed keys and filled slots, so a snapshot writes the fingerprints a shard holds, not its
budget.

No period key is ever written to the recovery store's SQLite (issue 18, finding 2): Bytewax
deletes superseded snapshots without `secure_delete`, so their bytes stay in free pages and
the -wal file, where no retirement can reach them. A snapshot holds each period's key XORed
with a random pad (a one-time pad: the sealed bytes say nothing without it) kept in a file of
its own under `<recovery directory>/dedupe-keys/` (`key_directory`). When the period retires
its pad file is overwritten with zeros, synced and unlinked, so every copy of that sealed key
SQLite still holds, live or free, is noise. A snapshot whose pad is gone restores without that
period (a resend of one of its logins becomes a row: never a loss).
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bytewax.operators import StatefulBatchLogic

from flows.steps.dedupe_window import BUCKET, KEY_BYTES, PERIODS, SLOT_BYTES, Window, WindowState
from logins.core import metrics
from logins.core.records import Event

log = logging.getLogger(__name__)

SHARD_OVERHEAD = 6144  # bytes of a shard beyond its tables (objects, its rng), within budget
BYTES_PER_SLOT = SLOT_BYTES + 1 / BUCKET  # a slot and its share of the bucket fill counts


def shard_of(event: Event, shards: int) -> str:
    """The state key of an event: rejected events spread by message id, valid ones by content."""
    raw = event.fingerprint or event.message.message_id.encode()
    return str(int.from_bytes(raw[:4], "big") % shards)


def slots_per_period(memory_budget_mb: float, shards: int) -> int:
    """Slots of each of a shard's period tables: its share of the budget (MB = 10^6 bytes)
    over the two tables it may hold; whole buckets, at least one."""
    per_shard = int(memory_budget_mb * 1e6) // shards - SHARD_OVERHEAD
    slots = int(per_shard / PERIODS / BYTES_PER_SLOT)
    return max(BUCKET, slots // BUCKET * BUCKET)


class _EarlyEvictions:
    """Counts fingerprints dropped inside their window; logs at most once a minute."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._interval = interval
        self._clock = clock
        self._pending = 0
        self._logged_at = -math.inf

    def add(self, slots: int, count: int = 1) -> None:
        metrics.DEDUPE_EVICTED_EARLY.inc(count)
        with self._lock:
            self._pending += count
            now = self._clock()
            if now - self._logged_at < self._interval:
                return
            pending, self._pending, self._logged_at = self._pending, 0, now
        log.warning(
            "dedupe state full (%d slots per period and shard): %d fingerprints dropped before"
            " their window ended since the last report; a resend of one of those messages"
            " becomes a row. Raise steps[dedupe].memory_budget_mb (docs/operations.md)",
            slots,
            pending,
        )


EARLY = _EarlyEvictions()


KEY_DIR_ENV = "LOGINS_DEDUPE_KEY_DIR"  # overrides <recovery directory>/dedupe-keys
PAD_SUFFIX = ".pad"


@functools.cache
def key_directory() -> Path:
    """Where the period keys' pads live: $LOGINS_DEDUPE_KEY_DIR, else `dedupe-keys` in the
    recovery directory Bytewax runs with (`-r`, or BYTEWAX_RECOVERY_DIRECTORY), so the pads
    go with the partitions they open. Without either (not under `bytewax.run`: a test), a
    private temporary directory: the keys then do not outlive this process."""
    path = os.environ.get(KEY_DIR_ENV)
    if path:
        directory = Path(path)
    elif (recovery := _recovery_directory()) is not None:
        directory = recovery / "dedupe-keys"
    else:
        return Path(tempfile.mkdtemp(prefix="logins-dedupe-keys-"))
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def _recovery_directory() -> Path | None:
    """Bytewax's own `-r` when this process runs `bytewax.run` (as `logins run` does too)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None or spec.name != "bytewax.run":
        return None
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-r", "--recovery-directory", type=Path)
    known, _ = parser.parse_known_args(sys.argv[1:])
    directory = known.recovery_directory or os.environ.get("BYTEWAX_RECOVERY_DIRECTORY")
    return Path(directory) if directory else None


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


class KeyPads:
    """One shard's pads, per live period number: (pad file, pad). `seal` makes one at a
    period's first snapshot; `keep` wipes those of periods no longer live."""

    def __init__(self) -> None:
        self._pads: dict[int, tuple[Path, bytes]] = {}

    def seal(self, number: int, key: bytes) -> tuple[bytes, str]:
        """(key XOR pad, the pad file's name), the pad made and synced to disk if new."""
        if number not in self._pads:
            directory = key_directory()
            path = directory / f"{secrets.token_hex(16)}{PAD_SUFFIX}"
            pad = secrets.token_bytes(KEY_BYTES)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, pad)
                os.fsync(fd)
            finally:
                os.close(fd)
            _sync_directory(directory)
            self._pads[number] = path, pad
        path, pad = self._pads[number]
        return _xor(key, pad), path.name

    def open(self, number: int, sealed: bytes, name: str) -> bytes | None:
        """The key a snapshot sealed, or None if its pad is gone (the period retired)."""
        path = key_directory() / Path(name).name
        try:
            pad = path.read_bytes()
        except FileNotFoundError:
            return None
        if len(pad) != KEY_BYTES or not any(pad):
            return None  # wiped, not yet unlinked
        self._pads[number] = path, pad
        return _xor(sealed, pad)

    def keep(self, live: Iterable[int]) -> None:
        """Wipe the pads of every period not in `live`."""
        for number in self._pads.keys() - set(live):
            path, _ = self._pads.pop(number)
            _wipe(path)


def _wipe(path: Path) -> None:
    """Overwrite the pad with zeros, sync, unlink: the sealed key in any copy of any snapshot
    is then noise (short of the file system's own copies: see docs/operations.md)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        os.write(fd, bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DedupeLogic(StatefulBatchLogic[Event, Event, WindowState]):
    """One shard: marks the resends of a batch `duplicate` (see `Window`)."""

    def __init__(
        self,
        window_seconds: float,
        slots: int,
        state: WindowState | _Snapshot | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pads = KeyPads()
        if isinstance(state, _Snapshot):  # handed over without pickling (in-process)
            state = state.window.state()
        elif state is not None:
            state = self._unseal(state)
        self.window = Window(window_seconds, slots, state)
        self._retire_pads()  # those of a snapshot the window dropped (another window_seconds)
        self._window_seconds = window_seconds
        self._clock = clock
        self._last_batch = clock()

    def on_batch(self, values: list[Event]) -> tuple[list[Event], bool]:
        self._last_batch = self._clock()
        window = self.window
        seen, dropped = window.seen, window.dropped
        for event in values:
            message = event.message
            if event.rejection is None and seen(
                event.fingerprint, message.sent_timestamp_ms, message.receive_count > 1
            ):
                event.duplicate = True
        if window.dropped > dropped:
            EARLY.add(window.slots, window.dropped - dropped)
        self._retire_pads()
        return values, StatefulBatchLogic.RETAIN

    def _retire_pads(self) -> None:
        """Wipe the pads of periods that retired (a dict lookup when none did)."""
        pads = self.pads
        if pads._pads:
            pads.keep(self.window.live_numbers())

    def _unseal(self, state: WindowState) -> WindowState:
        """The snapshot's periods with their keys opened; one whose pad is gone is left out."""
        periods = []
        for number, sealed, slots, name in state["periods"]:
            key = self.pads.open(number, sealed, name)
            if key is None:
                log.info("dedupe period %d: its key's pad is gone (retired): not restored", number)
                continue
            periods.append([number, key, slots])
        return {**state, "periods": periods}

    def notify_at(self) -> datetime | None:
        """A window after the oldest live period would retire (on SentTimestamps), and at
        least a window after the last batch; none while nothing is held."""
        retires = self.window.retires_at_ms()
        if retires is None:
            return None
        at = max(retires / 1000, self._last_batch) + self._window_seconds
        return datetime.fromtimestamp(at, timezone.utc)

    def on_notify(self) -> tuple[list[Event], bool]:
        """Idle for a window: retire on the wall clock what SentTimestamps would have."""
        now = self._clock()
        if now - self._last_batch >= self._window_seconds:
            self.window.expire(int((now - self._window_seconds) * 1000))
            self._retire_pads()
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> WindowState:
        """A view, serialised when pickled (Bytewax drops it unpickled without recovery)."""
        return _Snapshot(self.window, self.pads)  # type: ignore[return-value]


class _Snapshot:
    """What `snapshot` returns: pickles as the window's plain dict, each period's key sealed
    with its pad (`[number, key XOR pad, slots, pad file]`). Bytewax pickles a snapshot right
    after taking it; one pickled later would hold later state, still a correct window."""

    __slots__ = ("pads", "window")

    def __init__(self, window: Window, pads: KeyPads) -> None:
        self.window = window
        self.pads = pads

    def __reduce__(self) -> tuple[Any, ...]:
        state = self.window.state()
        periods = []
        for number, key, slots in state["periods"]:
            sealed, name = self.pads.seal(number, key)
            periods.append([number, sealed, slots, name])
        return (dict, ({**state, "periods": periods},))


def builder(window_seconds: float, slots: int) -> Any:
    """The `stateful_batch` builder: a fresh or recovered logic per shard key."""

    def build(state: WindowState | None) -> DedupeLogic:
        return DedupeLogic(window_seconds, slots, state)

    return build
