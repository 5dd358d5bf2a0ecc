"""Fixtures of the end-to-end tests, which run the flow and the CLI as subprocesses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_keys


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Keys of the test's own: these tests rotate the token key and chmod its file."""
    return make_keys(tmp_path / "keys")


@pytest.fixture
def env(flow_env: dict[str, str], keys: dict[str, Path]) -> dict[str, str]:
    """The operator contract's variables (tests/conftest.py's flow_env), and PRIVATE_KEY: the
    vault's private key file, for the commands that reveal."""
    return {**flow_env, "PRIVATE_KEY": str(keys["vault.key"])}
