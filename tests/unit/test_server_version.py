"""PostgreSQL 13 or later: the version libpq reports, read and refused in words (the wiring
into the start-up checks and `logins migrate`: tests/integration/test_server_version.py; a
real 11.13: `make compat-test`)."""

from __future__ import annotations

import pytest

from connectors.postgres.serverversion import refusal, version_text


@pytest.mark.parametrize(
    ("number", "text"),
    [(110013, "11.13"), (120022, "12.22"), (90624, "9.6.24"), (130004, "13.4"), (180006, "18.6")],
)
def test_server_version_num_reads_as_the_release(number: int, text: str) -> None:
    assert version_text(number) == text


def test_a_server_older_than_13_is_refused_in_words() -> None:
    assert refusal(110013) == "PostgreSQL 13 or later is required (this server is 11.13)"
    assert refusal(129999) == "PostgreSQL 13 or later is required (this server is 12.9999)"
    assert refusal(90624) == "PostgreSQL 13 or later is required (this server is 9.6.24)"


@pytest.mark.parametrize("number", [130000, 130004, 140023, 160004, 170011, 180006])
def test_13_to_18_are_accepted(number: int) -> None:
    assert refusal(number) is None
