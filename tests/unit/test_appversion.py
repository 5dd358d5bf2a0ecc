from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logins.core.appversion import MAX_MAJOR, encode_app_version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.3.0", 20300),
        ("0.96", 9600),
        ("3.7", 30700),
        ("3", 30000),
        ("10.2.15", 100215),
        ("0.0.1", 1),
        ("02.3", 20300),
        (f"{MAX_MAJOR}.99.99", 2_147_479_999),
        (f"{MAX_MAJOR + 1}", None),
        ("1.100", None),
        ("1.2.100", None),
        ("1.2.3.4", None),
        ("", None),
        ("2.3.0-beta", None),
        (" 2.3", None),
        ("v2", None),
        ("1..2", None),
        ("١.٢", None),  # noqa: RUF001 - Arabic-Indic digits are digits to str.isdigit, not to us
    ],
)
def test_encoding(text: str, expected: int | None) -> None:
    assert encode_app_version(text) == expected


@given(
    st.tuples(st.integers(0, MAX_MAJOR), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.integers(0, MAX_MAJOR), st.integers(0, 99), st.integers(0, 99)),
)
def test_integer_order_is_version_order(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    ea = encode_app_version(".".join(map(str, a)))
    eb = encode_app_version(".".join(map(str, b)))
    assert ea is not None and eb is not None
    assert ea < 2**31
    assert (ea < eb) == (a < b)
