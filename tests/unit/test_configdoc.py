"""docs/configuration.md is generated from the configuration models: a stale copy fails."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel

from logins.core.config import AppConfig
from logins.dev.configdoc import SECTIONS, render
from tests.helpers import REPO

DOC = REPO / "docs" / "configuration.md"


def test_the_committed_configuration_doc_is_what_the_models_generate() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run `make docs` (python -m logins.dev.configdoc)"
    )


def test_every_key_of_every_model_has_a_description_in_the_doc() -> None:
    text = render()
    for _, model in SECTIONS:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            assert f"| `{name}` |" in text
    assert {model for _, model in SECTIONS} == _models(AppConfig)


def _models(model: type[BaseModel]) -> set[type[BaseModel]]:
    """`model` and every model a key of it holds, however nested (lists, unions, mappings)."""
    found = {model}
    for field in model.model_fields.values():
        for kind in _leaves(field.annotation):
            if isinstance(kind, type) and issubclass(kind, BaseModel) and kind not in found:
                found |= _models(kind)
    return found


def _leaves(annotation: Any) -> list[Any]:
    args = get_args(annotation)
    return [leaf for arg in args for leaf in _leaves(arg)] if args else [annotation]
