"""The container tests' figures (build time, image size, start to first commit), printed in
pytest's terminal summary: docs/docker.md quotes them."""

from __future__ import annotations

import json
from typing import Any

import pytest

FIGURES = pytest.StashKey[dict[str, Any]]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES, None)
    if figures:
        terminalreporter.write_line(f"container figures: {json.dumps(figures)}")
