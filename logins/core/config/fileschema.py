"""The JSON Schema of a configuration file, from the same models as docs/configuration.md.

pydantic's schema describes the validated whole; a file differs in two ways, both loosened
here: it may be one layer of an `extends:` chain (so a section's keys may come from another
file: only a step and a field, which are never merged, keep their required keys), and any
value may be a `${VAR}` / `${VAR:-default}` reference, which is a string until interpolated.
`logins schema` prints it; config/*.yaml name the committed copy for the YAML language server.
"""

from __future__ import annotations

import copy
from typing import Any

from logins.core.config.app import AppConfig
from logins.core.config.steps import DedupeStep, FieldSpec, MaskStep, ValidateStep

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# A value that is (or holds) an environment reference: a string until it is interpolated.
REFERENCE = {
    "type": "string",
    "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
    "description": "an environment reference: ${VAR} or ${VAR:-default}",
}
_WHOLE = {m.__name__ for m in (ValidateStep, DedupeStep, MaskStep, FieldSpec)}
_NOT_A_STRING = {"integer", "number", "boolean", "array", "null"}
_HOVER = ("title", "description", "default")


def file_schema() -> dict[str, Any]:
    """The schema every file of config/ (and of a project `logins init` wrote) validates
    against; tests/unit/test_schema_command.py checks that they all do."""
    schema = copy.deepcopy(AppConfig.model_json_schema(mode="validation"))
    for name, definition in schema.get("$defs", {}).items():
        if name not in _WHOLE:
            definition.pop("required", None)
        schema["$defs"][name] = _allow_references(definition)
    schema.pop("required", None)
    schema = _allow_references(schema)
    schema["properties"]["extends"] = {
        "type": "string",
        "description": "the file this one is layered over (relative to this file, or"
        " `logins:base.yaml` for the shipped base): mappings merge key by key, lists and"
        " scalars replace",
    }
    return {"$schema": DRAFT, **schema, "title": "logins-etl configuration file"}


def _allow_references(node: dict[str, Any]) -> dict[str, Any]:
    """Every value that is not a string may also be an environment reference."""
    for name, sub in node.get("properties", {}).items():
        if name != "type":  # a step's and a field's kind: never a reference
            node["properties"][name] = _allow_references(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _allow_references(node[key])
    for key in ("anyOf", "oneOf"):
        if key in node:
            node[key] = [_allow_references(s) for s in node[key]]
    is_other_value = node.get("type") in _NOT_A_STRING or "enum" in node or "const" in node
    if not is_other_value:
        return node
    hover = {k: node.pop(k) for k in _HOVER if k in node}
    return {**hover, "anyOf": [node, REFERENCE]}
