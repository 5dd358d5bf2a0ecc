"""`make container-test`: the flow as several containers on one LocalStack queue and one
PostgreSQL, run the way the Kubernetes manifests run it (tests/kube_contract.py checks those):
non-root, read-only root filesystem, key files mounted one by one, the local overlay's YAML,
migrations by a `logins migrate` container first (the Job).

* three containers as one Bytewax cluster (`-i`, `-a` with the containers' host names, port
  9999: the StatefulSet's arrangement);
* three independent consumers (the Deployment's).

In each, one container is killed with SIGKILL mid-run and started again; the ledger then holds
every message exactly once and the queue is empty. Not part of `make test` (no Docker there):
the file name is not `test_*`, so only `make container-test` collects it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from logins.dev.generator import GeneratedMessage, generate
from logins.dev.seed import send_bodies
from tests.container.lab import Lab, lab
from tests.helpers import ledger_from_dsn, wait_for

# Enough that the kill lands mid-run: with the SQS path's hot calls over awscrt (issue 19)
# three containers drained 3,000 messages before a kill at a quarter could land.
MESSAGES = 20_000
NAMES = ("flow-0", "flow-1", "flow-2")


@pytest.fixture(scope="module")
def the_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with lab(tmp_path_factory.mktemp("lab")) as instance:
        yield instance


def committed(dsn: str) -> int:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        row = conn.execute("SELECT count(*) FROM logins_ledger").fetchone()
    return int(row[0]) if row else 0


class Run:
    """A fresh database and queue with MESSAGES sample logins in it, migrated."""

    def __init__(self, the_lab: Lab, name: str, seed: int) -> None:
        self.lab = the_lab
        self.dsn, inside = the_lab.database(name)
        self.queue, queue_inside = the_lab.queue(name)
        self.messages: list[GeneratedMessage] = generate(MESSAGES, seed=seed)
        self.sent = send_bodies(the_lab.sqs(), self.queue, (m.body for m in self.messages))
        self.env = the_lab.env(inside, queue_inside, LOGINS_STOP_WHEN_IDLE="5")
        the_lab.migrate(self.env)

    def output(self) -> str:
        return "\n".join(f"--- {n}\n{self.lab.logs(n)[-3000:]}" for n in NAMES)

    def assert_exact(self) -> None:
        outcome = ledger_from_dsn(self.dsn, self.sent)
        assert len(outcome["rejected"]) == sum(m.kind == "malformed" for m in self.messages)
        assert self.lab.in_queue(self.queue) == (0, 0)


def test_a_cluster_of_three_containers_survives_a_kill_9(the_lab: Lab) -> None:
    run = Run(the_lab, "cluster", seed=71)
    addresses = the_lab.cluster_addresses(NAMES)
    for i, name in enumerate(NAMES):
        the_lab.flow(name, run.env, ["flows.logins", "-w", "1", "-i", str(i), "-a", addresses])
    wait_for(lambda: committed(run.dsn) >= MESSAGES // 4, 240, "a quarter committed", every=0.5)

    the_lab.kill("flow-1")
    # Bytewax's processes stop together: the others lose their peer and exit non-zero.
    for name in ("flow-0", "flow-2"):
        assert the_lab.wait(name, 90) != 0, run.output()
    assert committed(run.dsn) < MESSAGES, "the kill came too late to test anything"

    for name in NAMES:  # Kubernetes restarts every pod of the StatefulSet
        the_lab.restart(name)
    for name in NAMES:
        assert the_lab.wait(name, 300) == 0, run.output()
    run.assert_exact()


def test_three_independent_consumers_survive_a_kill_9(the_lab: Lab) -> None:
    run = Run(the_lab, "consumers", seed=72)
    for name in NAMES:
        the_lab.flow(name, run.env, ["flows.logins", "-w", "1"])
    wait_for(lambda: committed(run.dsn) >= MESSAGES // 4, 240, "a quarter committed", every=0.5)

    the_lab.kill("flow-1")
    time.sleep(2)
    assert the_lab.running("flow-0") and the_lab.running("flow-2"), run.output()
    assert committed(run.dsn) < MESSAGES, "the kill came too late to test anything"
    the_lab.restart("flow-1")  # the Deployment's ReplicaSet replaces the pod

    for name in NAMES:
        assert the_lab.wait(name, 300) == 0, run.output()
    run.assert_exact()
