"""Configuration errors in words: pydantic's error for a key becomes what is wrong and, for a
misspelt key, step type or choice, the nearest valid one (difflib, as Python's own "did you
mean" does). Values are not repeated, except a mistyped word: a value may be a secret.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the file, the line and the key."""


Location = tuple[str | int, ...]

# pydantic error type -> the words for it ({name} from the error's context)
_WORDS = {
    "missing": "required key is missing",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "list_type": "must be a list",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
}


def explain(error: ErrorDetails, root: type[BaseModel]) -> tuple[Location, str]:
    """The key an error is about (without pydantic's union tags) and what is wrong, in words."""
    raw = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx", {})
    at = strip_union_tags(raw)
    if kind == "extra_forbidden":
        return at, "unknown key" + _nearest(str(raw[-1]), _keys_of(_model_at(root, raw[:-1])))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        known = f" (the types: {', '.join(tags)})"
        if kind == "union_tag_not_found":
            return (*at, "type"), "a step needs `type:`" + known
        tag = str(ctx.get("tag", ""))
        return (*at, "type"), f"unknown step type {tag!r}" + _nearest(tag, tags) + known
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        given = error.get("input")
        shown = repr(given) if isinstance(given, str) and len(given) <= 40 else "this value"
        hint = _nearest(given, choices) if isinstance(given, str) else ""
        return at, f"{shown} is not one of {', '.join(choices)}" + hint
    if kind in ("value_error", "assertion_error"):
        return at, re.sub(r"^(Value|Assertion) error, ", "", error["msg"])
    words = _WORDS.get(kind)
    if words is None:
        return at, error["msg"]
    return at, words.format(**{k: _plain(v) for k, v in ctx.items()})


def strip_union_tags(loc: tuple[Any, ...]) -> Location:
    """pydantic puts the discriminator value ('dedupe') in a step's location; drop it."""
    steps = ("validate", "dedupe", "mask")
    return tuple(p for i, p in enumerate(loc) if not (i > 0 and loc[0] == "steps" and p in steps))


def _nearest(word: str, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _keys_of(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    """The type at `loc` inside `root`: a model's field, a list's item, a dict's value, the
    member of a tagged union that a step's tag names."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is list:
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif _is_union(current):
            current = next((m for m in get_args(current) if _tag_of(m) == part), None)
        else:
            return None
    return _unwrap(current)


def _unwrap(annotation: Any) -> Any:
    """Annotated[X, ...] -> X; X | None -> X (a union of several models stays a union)."""
    while True:
        if get_origin(annotation) is typing.Annotated:
            annotation = get_args(annotation)[0]
        elif _is_union(annotation):
            members = [m for m in get_args(annotation) if m is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (typing.Union, types.UnionType)


def _tag_of(model: Any) -> Any:
    """A step model's `type` value (its Literal), for matching pydantic's union tag."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    field = model.model_fields.get("type")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    values = get_args(field.annotation)
    return values[0] if len(values) == 1 else None
