"""The platforms pyproject.toml promises: CPython 3.11 and 3.12 only (Bytewax 0.21.1 has no
3.13 wheel; 3.10 is past its end of life), so pip refuses the others before installing
anything; the linters check the same floor."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())


def test_requires_python_admits_311_and_312_only() -> None:
    allowed = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert [v for v in ("3.10.19", "3.11.7", "3.12.8", "3.13.1") if v in allowed] == [
        "3.11.7",
        "3.12.8",
    ]


def test_the_linters_target_the_same_floor() -> None:
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == "3.11"
