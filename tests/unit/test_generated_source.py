"""The benchmarks' in-process source: a dataset file holds exactly the generator's stream, and
the source hands every message out once, over any number of workers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, cluster_main, run_main

from bench.generated import Dataset, GeneratedSource, kinds_of, message_id, write_dataset
from logins.core.records import SqsMessage
from logins.dev.generator import iter_messages


def test_a_dataset_holds_the_generators_stream(tmp_path: Path) -> None:
    path = tmp_path / "d.bin"
    counts = write_dataset(path, 2_345, seed=3, block_size=500)
    expected = list(iter_messages(2_345, seed=3))
    dataset = Dataset(path)
    try:
        assert (dataset.n, dataset.seed, dataset.blocks) == (2_345, 3, 5)
        assert [body for _, body in dataset.iter_bodies()] == [m.body for m in expected]
        assert [body for _, body in dataset.iter_bodies(7)] == [m.body for m in expected[:7]]
    finally:
        dataset.close()
    assert counts == Counter(m.kind for m in expected)
    assert kinds_of(path, 1_001) == Counter(m.kind for m in expected[:1_001])


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.bin"
    write_dataset(path, 100, seed=1)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        Dataset(path)


def _emitted(source: GeneratedSource, workers: int) -> list[SqsMessage]:
    out: list[SqsMessage] = []
    flow = Dataflow("generated")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out


@pytest.mark.parametrize("workers", [1, 3])
def test_every_message_is_emitted_once_over_the_workers(tmp_path: Path, workers: int) -> None:
    path = tmp_path / "d.bin"
    write_dataset(path, 2_500, seed=2, block_size=400)
    emitted = _emitted(GeneratedSource(2_100, dataset=path, batch_size=400), workers)
    by_id = {m.message_id: m for m in emitted}
    assert len(emitted) == len(by_id) == 2_100
    bodies = [m.body for m in iter_messages(2_500, seed=2)][:2_100]
    assert [by_id[message_id(2, i)].body for i in range(2_100)] == bodies
    assert all(m.receive_count == 1 and m.sent_timestamp_ms > 0 for m in emitted)


def test_without_a_dataset_the_source_runs_the_generator() -> None:
    emitted = _emitted(GeneratedSource(1_500, seed=4, batch_size=600), 2)
    assert sorted(m.body for m in emitted) == sorted(m.body for m in iter_messages(1_500, seed=4))
    assert message_id(4, 0) == message_id(4, 0) != message_id(5, 0)
