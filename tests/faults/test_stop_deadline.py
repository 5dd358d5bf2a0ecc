"""A graceful stop that cannot finish: past `shutdown_timeout_seconds` the flow exits 3, and a
second signal exits 130 at once. Either way nothing is lost or doubled: what it held returns to
the queue after its visibility timeout and the next run takes it (docs/operations.md#exit-codes)."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest

from tests.faults.conftest import Rig, ledger_size
from tests.helpers import wait_for


@pytest.mark.parametrize(
    ("shutdown_timeout", "signals", "code", "said"),
    [
        ("2", 1, 3, "graceful stop took over 2.0s: exiting"),
        ("30", 2, 130, "second SIGTERM: exiting now"),
    ],
    ids=["past-the-deadline-exits-3", "second-signal-exits-130"],
)
def test_a_stop_that_cannot_commit_exits_early_and_loses_nothing(
    rig: Rig, database_url: str, shutdown_timeout: str, signals: int, code: int, said: str
) -> None:
    _, producer = rig.produce(600, seed=91)
    env = rig.env(database_url, LOGINS_SHUTDOWN_TIMEOUT=shutdown_timeout)
    flow = rig.start_flow(env, "-w", "2")
    wait_for(lambda: ledger_size(database_url) >= 100, 120, "100 committed messages")

    # The ledger is locked, so no write can commit: the flow holds messages it cannot finish.
    with psycopg.connect(database_url) as lock:
        lock.execute("LOCK TABLE logins_ledger IN ACCESS EXCLUSIVE MODE")
        time.sleep(1.0)  # the next batches reach the sink and wait on the lock
        stopped_at = time.monotonic()
        for _ in range(signals):
            flow.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
        assert flow.wait(30) == code, flow.output()[-3000:]
        elapsed = time.monotonic() - stopped_at
        assert said in flow.output()
        if code == 130:
            assert elapsed < 10  # at once, not after the 30 s deadline
        else:
            assert 2 <= elapsed < 15
        lock.rollback()

    rig.drain_and_check(database_url, env, producer)
