"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest


class Clock:
    """A clock the test moves by hand (`clock.now += 60`); a test file's own `clock` fixture
    puts it where the code under test reads the time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
