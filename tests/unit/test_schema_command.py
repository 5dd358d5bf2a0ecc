"""`logins schema`: the JSON Schema of a configuration file, which every shipped file
validates against and a misspelt key fails; the committed copy editors use is current."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from logins.cli import main
from tests.helpers import REPO

# every configuration file (`*.test.yaml` are `logins test` cases, not configurations)
SHIPPED = sorted(
    p for p in (REPO / "config").glob("**/*.yaml") if not p.name.endswith(".test.yaml")
)


@pytest.fixture(scope="module")
def printed() -> dict[str, Any]:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _errors(schema: dict[str, Any], data: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_validates_against_the_printed_schema(
    printed: dict[str, Any], path: Path
) -> None:
    assert _errors(printed, yaml.safe_load(path.read_text())) == []


def test_every_shipped_config_names_the_schema_for_editors() -> None:
    for path in SHIPPED:
        first = path.read_text().splitlines()[0]
        target = first.removeprefix("# yaml-language-server: $schema=")
        assert target != first, path
        assert (path.parent / target).resolve() == REPO / "config" / "logins.schema.json"


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda d: d["sink"].update(tabel="x"), "'tabel' was unexpected"),
        (lambda d: d["source"].update(receivers=0), "0 is not valid under any"),
        (lambda d: d["steps"].__setitem__(1, {"type": "dedup"}), "dedup"),
        (lambda d: d.update(tokenz={}), "'tokenz' was unexpected"),
    ],
)
def test_a_bad_key_or_value_fails_the_schema(
    printed: dict[str, Any], change: Any, complaint: str
) -> None:
    data = yaml.safe_load((REPO / "config/base.yaml").read_text())
    change(data)
    errors = _errors(printed, data)
    assert errors
    assert any(complaint in e for e in errors), errors


def test_the_committed_schema_is_what_logins_schema_prints(printed: dict[str, Any]) -> None:
    committed = json.loads((REPO / "config/logins.schema.json").read_text())
    assert committed == printed, "stale: run `make docs`"
