"""Loading a configuration: the files layered, `${VAR}` interpolated, the models validated,
and every error reported as `file:line: key: what is wrong` (logins.core.config.errors)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr, ValidationError

from logins.core import secretrefs
from logins.core.config.app import AppConfig
from logins.core.config.errors import ConfigError, Location, explain
from logins.core.config.files import locate, read_layers
from logins.core.interpolate import InterpolationError, interpolate
from logins.core.secretrefs import SecretRefError


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; a list or scalar in `over` replaces the one in `base`."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dotted(at: Location) -> str:
    return ".".join(str(p) for p in at) or "(top level)"


def load_config(env: Mapping[str, str] | None = None) -> AppConfig:
    """Load, layer, interpolate and validate the selected configuration."""
    env = os.environ if env is None else env
    layers = read_layers(env)
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, layer.data)
    try:
        resolved = interpolate(merged, env)
    except InterpolationError as exc:
        raise ConfigError(f"{locate(layers, exc.path)}: {dotted(exc.path)}: {exc}") from None
    _apply_operator_overrides(resolved, env)
    try:
        config = AppConfig.model_validate(resolved)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            at, words = explain(error, AppConfig)
            problems.append(f"{locate(layers, at)}: {dotted(at)}: {words}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
    from logins.core import posture  # it reads AppConfig: imported here, not at the top

    refused = posture.refusals(config, posture.is_production(env, [la.path for la in layers]))
    if refused:
        raise ConfigError(
            "\n  ".join(f"{locate(layers, key)}: {dotted(key)}: {why}" for key, why in refused)
        )
    try:
        return _resolve_dsn(config)
    except SecretRefError as exc:
        raise ConfigError(f"{locate(layers, ('sink', 'dsn'))}: sink.dsn: {exc}") from None


def _resolve_dsn(config: AppConfig) -> AppConfig:
    """A DSN given as a reference is fetched now, at start (the key files are read later, by
    the key loaders, which take the same references)."""
    ref = secretrefs.parse(config.sink.dsn.get_secret_value())
    if ref is None:
        return config
    sink = config.sink.model_copy(update={"dsn": SecretStr(secretrefs.fetch(ref).strip())})
    sink._dsn_ref = ref
    return config.model_copy(update={"sink": sink})


def _apply_operator_overrides(resolved: dict[str, Any], env: Mapping[str, str]) -> None:
    """LOGINS_STOP_WHEN_IDLE works with every config file, so it is applied here, not in YAML."""
    idle = env.get("LOGINS_STOP_WHEN_IDLE")
    if idle and isinstance(resolved.get("source"), dict):
        resolved["source"]["stop_when_idle"] = idle


def describe(config: AppConfig) -> dict[str, Any]:
    """The resolved configuration as plain data with secrets hidden (for `logins check`)."""
    data = config.model_dump(mode="json")
    ref = config.sink.dsn_ref
    data["sink"]["dsn"] = str(ref) if ref else _redact_dsn(config.sink.dsn.get_secret_value())
    return data


def _redact_dsn(dsn: str) -> str:
    """Hide the password of a postgresql:// URL, keep the rest (host, db) for debugging."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn if "password" not in dsn else "***"
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
