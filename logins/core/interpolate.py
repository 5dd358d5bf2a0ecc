"""`${VAR}` / `${VAR:-default}` interpolation of configuration values from the environment.

Kept separate from the YAML loading so that the rules (what is an error, what becomes null)
are in one small place that the tests can pin down.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_PATTERN = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\$\$")


class InterpolationError(ValueError):
    """A `${VAR}` without a default whose variable is not set."""

    def __init__(self, path: tuple[str | int, ...], variable: str) -> None:
        self.path = path
        self.variable = variable
        super().__init__(f"environment variable {variable} is not set (and has no default)")


def interpolate(value: Any, env: Mapping[str, str], path: tuple[str | int, ...] = ()) -> Any:
    """Return `value` with every string interpolated; dicts and lists are walked.

    A string that is exactly one reference and expands to "" becomes None, so that
    `${LOGINS_STOP_WHEN_IDLE:-}` means "not set" rather than an invalid empty number.
    `$$` is a literal `$`.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, (*path, i)) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group("name"), match.group("default")
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise InterpolationError(path, name)

    result = _PATTERN.sub(substitute, value)
    whole_reference = _PATTERN.fullmatch(value) is not None and value != "$$"
    return None if whole_reference and result == "" else result
