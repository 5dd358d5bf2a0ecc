"""Profiles of the flow process by py-spy (sampling, no code changes), summarised as
(a) the functions with the most own CPU time over all threads, and (b) where the dataflow
worker thread spends its wall-clock time, step by step (with idle time: waits on PostgreSQL
or on the seal threads show up)."""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# A frame in py-spy's raw output: "function (path/to/file.py:123)".
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")
# The outermost frame that names a step decides a sample's step; the step's wait markers
# anywhere in the stack mean the worker was waiting (idle) inside it.
_STEPS: tuple[tuple[str, tuple[str, ...], tuple[str, ...], str], ...] = (
    ("source", ("_GeneratedPartition.", "GeneratedPartition.", "_dataset_blocks",
                "SqsPartition.", "_SqsPartition."), (), ""),
    ("validate", ("Validator.",), (), ""),
    ("dedupe", ("_dedupe.", "_unkeyed", "DedupeLogic.", "shard_of"), (), ""),
    ("mask", ("Masker.",), (), ""),
    ("sink", ("_PostgresPartition.", "PostgresPartition.", "WriterPool.", "BatchCommitter.",
              "PostgresWriter."),
     ("Connection.wait", "Queue.put", "Thread.join"),
     "sink: waiting for PostgreSQL"),
)  # fmt: skip


def find_py_spy(explicit: str | None) -> str | None:
    """py-spy: the one named, else next to this Python (the bench extra), else on PATH."""
    if explicit:
        return explicit if Path(explicit).exists() else None
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", match["file"])
    path = path.replace(str(Path.cwd()) + "/", "")
    return f"{match['func']} ({path})"


def _samples(raw: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


@dataclass
class Profile:
    samples: int
    top_own: list[tuple[str, float]]  # function -> share of all CPU samples
    by_thread: list[tuple[str, float]]
    worker_wall: list[tuple[str, float]] = field(default_factory=list)  # step -> share


def summarise_cpu(raw: Path, top: int = 15) -> Profile:
    """Own time per function (line numbers merged) and CPU per thread, from `--threads` output
    (or plain output, where every sample counts for one unnamed thread); samples of threads
    blocked in a wait are left out."""
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for frames, count in _samples(raw):
        if frames and _is_waiting(frames[-1]):
            continue  # blocked, though py-spy sampled it as active
        total += count
        thread = "all threads"
        if frames[0].startswith("thread ("):
            thread = _thread_name(frames[0])
            frames = frames[1:]
        threads[thread] += count
        own[_frame_name(frames[-1]) if frames else "(native)"] += count
    return Profile(
        total,
        [(name, n / total) for name, n in own.most_common(top)],
        [(name, n / total) for name, n in threads.most_common()],
    )


def summarise_worker_wall(raw: Path) -> list[tuple[str, float]]:
    """From `--threads --idle` output: the dataflow worker thread's samples, by step."""
    steps: Counter[str] = Counter()
    total = 0
    for frames, count in _samples(raw):
        if not frames[0].startswith("thread (") or _thread_name(frames[0]) != "MainThread":
            continue  # the profiled flow runs one worker, on the main thread
        total += count
        steps[_step_of(frames[1:])] += count
    return [(name, n / total) for name, n in steps.most_common()] if total else []


def _is_waiting(leaf: str) -> bool:
    """A thread blocked in Python-level waiting (py-spy's idle detection misses some): an idle
    pool thread waiting for work, or a Condition/Event wait."""
    name = _frame_name(leaf)
    return name.startswith(("Condition.wait (", "Event.wait (")) or name == (
        "_worker (concurrent/futures/thread.py)"
    )


def _thread_name(frame: str) -> str:
    if ":" not in frame:
        return "unnamed (Rust/native)"
    name = frame.split(":", 1)[1].strip()
    name = re.sub(r"[-_]\d+$", "", name)
    return re.sub(r"(ThreadPoolExecutor)[-_\w]*", r"\1", name)


def _step_of(frames: list[str]) -> str:
    names = [_frame_name(f) for f in frames]
    for name in names:
        for step, markers, waits, waiting in _STEPS:
            if name.startswith(markers):
                if waits and any(n.startswith(waits) for n in names):
                    return waiting
                return step
    return "Bytewax and the rest"
