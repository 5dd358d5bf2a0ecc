"""Helpers shared by the tests: the repository root, keys, a config for given services,
running the flow (in process or as `python -m` subprocesses), polling."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from bytewax.testing import cluster_main, run_main

from flows.builder import build_flow
from flows.steps.mask import Masker
from flows.steps.validate import Validator
from logins.core.config import AppConfig, MaskStep, ValidateStep, load_config
from logins.core.keys import generate_keys
from logins.core.pipeline_keys import load_secrets
from logins.core.records import Event, SqsMessage
from logins.core.sealcache import SealCache
from logins.dev.env import service_env as service_env  # the tests import it from here

REPO = Path(__file__).resolve().parents[1]
"""The repository root: the working directory of every subprocess the tests start."""

T = TypeVar("T")

# A login body's fields that the logins schema accepts as they are.
GOOD_LOGIN = {
    "user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae",
    "app_version": "2.3.0",
    "device_type": "android",
    "ip": "199.172.111.135",
    "locale": "RU",
    "device_id": "593-47-5928",
}

# The tables a migrated database of the logins stream holds (among others).
PIPELINE_TABLES = frozenset(
    {
        "user_logins",
        "user_logins_rejected",
        "user_logins_duplicates",
        "logins_ledger",
        "pii_vault",
        "pii_audit",
    }
)


def make_keys(directory: Path) -> dict[str, Path]:
    return generate_keys(directory)


def config_for(env: dict[str, str], tmp_path: Path | None = None, yaml_text: str = "") -> AppConfig:
    """The local config, or a file that extends base.yaml with `yaml_text`."""
    if yaml_text:
        assert tmp_path is not None
        from logins.core.config import config_dir

        path = tmp_path / "custom.yaml"
        path.write_text(f"extends: {config_dir() / 'local.yaml'}\n{yaml_text}")
        env = {**env, "LOGINS_CONFIG": str(path)}
    return load_config(env)


def masked_batches(config: AppConfig, batches: list[list[SqsMessage]]) -> list[list[Event]]:
    """The batches validated and masked as the flow's steps do, with one fresh seal cache
    for all of them (nothing committed yet: every new token is staged for the vault)."""
    secrets = load_secrets(config)
    validate = next(s for s in config.steps if isinstance(s, ValidateStep))
    mask = next(s for s in config.steps if isinstance(s, MaskStep))
    validator = Validator(validate, secrets.tokenizer)
    masker = Masker(mask, secrets.tokenizer, secrets.sealer, SealCache(1000))
    return [masker.batch(validator.batch(batch)) for batch in batches]


def fetch(conn: Any, query: str, *params: Any) -> list[tuple[Any, ...]]:
    return list(conn.execute(query, params).fetchall())


def one(conn: Any, query: str, *params: Any) -> Any:
    """The first column of the one row `query` returns (asserted there: mypy knows no row)."""
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


def ledger(conn: Any, config: AppConfig) -> dict[str, set[str]]:
    sink = config.sink
    return {
        "row": {r[0] for r in fetch(conn, f"SELECT message_id FROM {sink.table}")},
        "rejected": {r[0] for r in fetch(conn, f"SELECT message_id FROM {sink.rejected_table}")},
        "duplicate": {r[0] for r in fetch(conn, f"SELECT message_id FROM {sink.duplicates_table}")},
    }


def assert_exact_ledger(conn: Any, config: AppConfig, sent_ids: list[str]) -> dict[str, set[str]]:
    outcome = ledger(conn, config)
    everything = outcome["row"] | outcome["rejected"] | outcome["duplicate"]
    assert sum(len(s) for s in outcome.values()) == len(everything), "an id is in two tables"
    missing, unknown = set(sent_ids) - everything, everything - set(sent_ids)
    assert not missing and not unknown, (
        f"{len(missing)} missing message ids (e.g. {sorted(missing)[:3]}),"
        f" {len(unknown)} unknown (e.g. {sorted(unknown)[:3]})"
    )
    in_ledger = dict(
        fetch(conn, f"SELECT outcome, count(*) FROM {config.sink.ledger_table} GROUP BY outcome")
    )
    assert in_ledger == {k: len(v) for k, v in outcome.items() if v}
    return outcome


def ledger_from_dsn(database_url: str, sent_ids: list[str]) -> dict[str, set[str]]:
    """The exact-ledger check for a run of the default (local) config."""
    import psycopg

    config = load_config(
        {"SQS_QUEUE_URL": "q", "LOGINS_TOKEN_KEY_FILE": "k", "LOGINS_VAULT_PUBLIC_KEY_FILE": "v"}
    )
    with psycopg.connect(database_url) as conn:
        return assert_exact_ledger(conn, config, sent_ids)


def run(config: AppConfig, workers: int = 1, **kwargs: Any) -> None:
    flow = build_flow(config, **kwargs)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)


def run_module(
    command: list[str], env: dict[str, str] | None = None, timeout: float = 180, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """`python -m <command>` from the repository root, as an operator runs it: `env` over this
    process's environment, the output captured as text, a non-zero exit returned (not raised).
    `kwargs` go to subprocess.run (input=, pass_fds=)."""
    return subprocess.run(
        [sys.executable, "-m", *command],
        env={**os.environ, **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def start_module(command: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[Any]:
    """`python -m <command>` started from the repository root with `env` over this process's
    environment, its output in text pipes unless `kwargs` (for subprocess.Popen) say else."""
    options: dict[str, Any] = {
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "text": True,
        **kwargs,
    }
    return subprocess.Popen(
        [sys.executable, "-m", *command], env={**os.environ, **env}, cwd=REPO, **options
    )


@contextlib.contextmanager
def module_logging_to(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m <command>` with its output in the file `log` (no pipe to fill), killed on
    leaving the block if it is still running."""
    with log.open("wb") as out:
        process = start_module(command, env, stdout=out, stderr=subprocess.STDOUT, text=False)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for(
    check: Callable[[], T],
    timeout: float,
    what: str,
    *,
    every: float = 0.2,
    tolerate: tuple[type[Exception], ...] = (),
) -> T:
    """Poll `check` until it returns something truthy (returned), for at most `timeout` seconds;
    the exceptions in `tolerate` (a server not listening yet) count as not yet."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except tolerate as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(every)


def queue_total(client: Any, queue_url: str) -> int:
    """Messages in the queue, visible or in flight (SQS's approximate counts)."""
    attrs = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


@contextlib.contextmanager
def private_data_dir() -> Iterator[Path]:
    """A data folder outside pytest's basetemp: every new pytest session as root resets
    /tmp/pytest-of-root to 0700, which locks the server's unprivileged account out of a
    running server's files (a PANIC in a concurrent session). Removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="logins-test-pg-"))
    try:
        yield path / "data"
    finally:
        shutil.rmtree(path, ignore_errors=True)


def require_binary(name: str, package: str) -> str:
    """The path of a program a test needs. Missing: a failure under CI=true (.ci/run installs
    it), else a skip that names the Debian package to install."""
    import pytest

    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (Debian: apt-get install {package}; .ci/run installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def seal_raw(public_key: Any, data: bytes, padded: bool = True) -> bytes:
    """A vault entry in the sealed format around arbitrary `data`, built from PyNaCl's
    primitives (not logins.core.vault), padded unless told not to: for tests that plant
    malformed entries."""
    from nacl.bindings import crypto_secretbox
    from nacl.public import SealedBox

    key = os.urandom(32)
    nonce = (1).to_bytes(24, "big")
    if padded:
        size = max(128, 1 << len(data).bit_length())
        data = data + b"\x80" + bytes(size - len(data) - 1)
    return (
        b"LV1\x00"
        + bytes(SealedBox(public_key).encrypt(key))
        + nonce
        + crypto_secretbox(data, nonce, key)
    )
