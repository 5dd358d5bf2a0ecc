"""In-process source of generated logins: a Bytewax `DynamicSource` that emits the same
`SqsMessage` items the SQS source emits, without a queue (benchmarks, load tests).

The bodies are `logins.dev.generator.iter_messages(n, seed=...)`: realistic repeats, ~3 %
malformed, ~2 % resends. Message `i` gets a synthetic, deterministic message id and receipt
handle, receive count 1, and a `SentTimestamp` stamped when it is emitted (as if the producer
had just sent it), so SentTimestamp-to-commit is the pipeline's latency.

Messages go out in blocks of `batch_size`; with W workers, worker w emits blocks w, w+W, ...
The bodies come either from the generator itself (each worker runs it and skips the others'
blocks) or from a *dataset*: the same stream written once to a file by `write_dataset`, so
that a measurement does not pay for generating it and every run reads the same bytes.

`rate` (messages/s over all workers) paces the source for a steady offered load; without it
the source emits as fast as the flow takes batches.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import pickle
import struct
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Self

import orjson
from bytewax.inputs import DynamicSource, StatelessSourcePartition

from logins.core.records import SqsMessage
from logins.core.stop import Stop
from logins.dev.generator import KINDS, iter_messages

DEFAULT_BATCH = 1000
_MAGIC = b"LOGINS-DATASET-2\n"
_TRAILER = struct.Struct("<Q16s")  # index length, magic (padded)
_PACED_TICK = timedelta(milliseconds=5)


def message_id(seed: int, index: int) -> str:
    """A random-looking UUID like SQS's, but deterministic: message `index` of a seed always
    gets the same id (so a replay is a redelivery), and ids are spread like real ones are."""
    h = _seed_hash(seed).copy()  # the keyed state, copied: no key setup per id
    h.update(index.to_bytes(8, "little"))
    x = h.hexdigest()
    return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-a{x[17:20]}-{x[20:]}"


@functools.lru_cache(maxsize=8)
def _seed_key(seed: int) -> bytes:
    return hashlib.blake2b(str(seed).encode(), digest_size=16, person=b"logins-gen-id").digest()


@functools.lru_cache(maxsize=8)
def _seed_hash(seed: int) -> hashlib.blake2b:
    return hashlib.blake2b(key=_seed_key(seed), digest_size=16)


# --- datasets --------------------------------------------------------------------------------


def write_dataset(
    path: Path, n: int, *, seed: int = 0, block_size: int = DEFAULT_BATCH
) -> dict[str, int]:
    """Write `iter_messages(n, seed=seed)` to `path`; returns the count of each kind. Each block
    is pickled (its bodies, each one's kind as an index into KINDS); an index of the blocks'
    offsets follows them, then its length."""
    code = {k: i for i, k in enumerate(KINDS)}
    counts = dict.fromkeys(KINDS, 0)
    offsets: list[int] = []
    stream = iter_messages(n, seed=seed)
    with path.open("wb") as out:
        out.write(_MAGIC)
        while block := list(itertools.islice(stream, block_size)):
            offsets.append(out.tell())
            pickle.dump(([m.body for m in block], bytes(code[m.kind] for m in block)), out)
            for m in block:
                counts[m.kind] += 1
        index = orjson.dumps(
            {"n": n, "seed": seed, "block_size": block_size, "offsets": offsets, "kinds": counts}
        )
        out.write(index)
        out.write(_TRAILER.pack(len(index), _MAGIC[:16]))
    return counts


class Dataset:
    """A dataset file opened for reading blocks (one open file per reader; `with` closes it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("rb")
        if self._file.read(len(_MAGIC)) != _MAGIC:
            raise ValueError(f"{path}: not a logins dataset")
        self._file.seek(-_TRAILER.size, 2)
        index_length, magic = _TRAILER.unpack(self._file.read(_TRAILER.size))
        if magic != _MAGIC[:16]:
            raise ValueError(f"{path}: truncated dataset (no index)")
        self._file.seek(-_TRAILER.size - index_length, 2)
        index = orjson.loads(self._file.read(index_length))
        self.n: int = index["n"]
        self.seed: int = index["seed"]
        self.block_size: int = index["block_size"]
        self.kinds: dict[str, int] = index["kinds"]
        self._offsets: list[int] = index["offsets"]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def blocks(self) -> int:
        return len(self._offsets)

    def block(self, number: int) -> tuple[list[str], bytes]:
        """The bodies of block `number` and their kind codes (indices into KINDS)."""
        self._file.seek(self._offsets[number])
        return pickle.load(self._file)  # noqa: S301 (our own file)

    def messages(self, limit: int | None = None) -> Iterator[tuple[int, str, str]]:
        """(index, body, kind) of the first `limit` messages (all by default), in order."""
        limit = self.n if limit is None else min(limit, self.n)
        for number in range(self.blocks):
            start = number * self.block_size
            if start >= limit:
                return
            bodies, kinds = self.block(number)
            for i, (body, kind) in enumerate(zip(bodies, kinds, strict=True), start):
                if i >= limit:
                    return
                yield i, body, KINDS[kind]

    def iter_bodies(self, limit: int | None = None) -> Iterator[tuple[int, str]]:
        """(index, body) of the first `limit` messages (all by default), in order."""
        return ((i, body) for i, body, _ in self.messages(limit))

    def close(self) -> None:
        self._file.close()


# --- the source ------------------------------------------------------------------------------


class _GeneratedPartition(StatelessSourcePartition[SqsMessage]):
    """One worker's share: blocks `worker_index`, `worker_index + worker_count`, ..."""

    def __init__(
        self,
        blocks: Iterator[tuple[int, list[str]]],
        seed: int,
        rate: float | None,
        stop: Stop,
    ) -> None:
        self._blocks = blocks
        self._stop = stop
        self._seed = seed
        self._rate = rate
        self._pending: list[tuple[int, str]] = []  # a paced block not yet emitted in full
        self._started: float | None = None
        self._emitted = 0
        self._awake: datetime | None = None

    def next_batch(self) -> list[SqsMessage]:
        if self._stop.is_set():
            raise StopIteration
        if self._rate is None:
            start, bodies = next(self._blocks)  # StopIteration ends the partition
            return self._stamp(enumerate(bodies, start))
        return self._paced()

    def _paced(self) -> list[SqsMessage]:
        now = time.monotonic()
        if self._started is None:
            self._started = now
        assert self._rate is not None
        due = int((now - self._started) * self._rate) - self._emitted
        out: list[SqsMessage] = []
        while due > 0:
            if not self._pending:
                try:
                    start, bodies = next(self._blocks)
                except StopIteration:
                    if out:
                        break
                    raise
                self._pending = [(start + i, b) for i, b in enumerate(bodies)]
            take, self._pending = self._pending[:due], self._pending[due:]
            due -= len(take)
            out += self._stamp(take)
        self._emitted += len(out)
        self._awake = datetime.now(timezone.utc) + _PACED_TICK
        return out

    def _stamp(self, pairs: Iterable[tuple[int, str]]) -> list[SqsMessage]:
        """Messages `index: body`, sent (SentTimestamp) and received now."""
        now = time.time()
        sent = int(now * 1000)
        seed = self._seed
        return [
            SqsMessage(message_id(seed, i), f"AQEB-generated-{seed}-{i}", body, sent, 1, now)
            for i, body in pairs
        ]

    def next_awake(self) -> datetime | None:
        return self._awake


class GeneratedSource(DynamicSource[SqsMessage]):
    """`n` generated logins (or all of `dataset`), split by block across the workers; its
    partitions end once `stop` (the flow's: `build_flow(..., stop=source.stop)`) is requested."""

    def __init__(
        self,
        n: int | None = None,
        *,
        seed: int = 0,
        dataset: Path | None = None,
        batch_size: int = DEFAULT_BATCH,
        rate: float | None = None,
        stop: Stop | None = None,
    ) -> None:
        if dataset is None and n is None:
            raise ValueError("GeneratedSource needs n or a dataset")
        if batch_size < 1 or (rate is not None and rate <= 0):
            raise ValueError("batch_size and rate must be positive")
        self._n = n
        self._seed = seed
        self._dataset = dataset
        self._batch_size = batch_size
        self._rate = rate
        self.stop = stop or Stop()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _GeneratedPartition:
        rate = None if self._rate is None else self._rate / worker_count
        if self._dataset is not None:
            blocks = _dataset_blocks(self._dataset, self._n, worker_index, worker_count)
            seed = Dataset(self._dataset).seed
        else:
            assert self._n is not None
            blocks = _generated_blocks(
                self._n, self._seed, self._batch_size, worker_index, worker_count
            )
            seed = self._seed
        return _GeneratedPartition(blocks, seed, rate, self.stop)


def _generated_blocks(
    n: int, seed: int, size: int, worker: int, workers: int
) -> Iterator[tuple[int, list[str]]]:
    bodies: list[str] = []
    start = 0
    for index, generated in enumerate(iter_messages(n, seed=seed)):
        if (index // size) % workers == worker:
            if not bodies:
                start = index
            bodies.append(generated.body)
            if len(bodies) == size:
                yield start, bodies
                bodies = []
    if bodies:
        yield start, bodies


def _dataset_blocks(
    path: Path, n: int | None, worker: int, workers: int
) -> Iterator[tuple[int, list[str]]]:
    with Dataset(path) as dataset:
        limit = dataset.n if n is None else min(n, dataset.n)
        for number in range(worker, dataset.blocks, workers):
            start = number * dataset.block_size
            if start >= limit:
                break
            bodies, _ = dataset.block(number)
            yield start, bodies[: limit - start]


def kinds_of(path: Path, n: int | None = None) -> dict[str, int]:
    """How many of the first `n` messages of a dataset are valid, resends and malformed."""
    with Dataset(path) as dataset:
        if n is None or n >= dataset.n:
            return dict(dataset.kinds)
        counts = dict.fromkeys(KINDS, 0)
        for _, _, kind in dataset.messages(n):
            counts[kind] += 1
        return counts
