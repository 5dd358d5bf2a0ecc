"""Helpers shared by the tests: keys, a config for given services, running the flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from logins.config import AppConfig, load_config
from logins.keys import generate_keys


def make_keys(directory: Path) -> dict[str, Path]:
    return generate_keys(directory)


def service_env(
    keys: dict[str, Path], *, database_url: str, queue_url: str, endpoint_url: str, **extra: str
) -> dict[str, str]:
    """The operator contract's environment variables for a run against the given services."""
    return {
        "LOGINS_ENV": "local",
        "DATABASE_URL": database_url,
        "SQS_QUEUE_URL": queue_url,
        "SQS_ENDPOINT_URL": endpoint_url,
        "LOGINS_TOKEN_KEY_FILE": str(keys["token.key"]),
        "LOGINS_VAULT_PUBLIC_KEY_FILE": str(keys["vault.pub"]),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        **extra,
    }


def config_for(env: dict[str, str], tmp_path: Path | None = None, yaml_text: str = "") -> AppConfig:
    """The local config, or a file that extends base.yaml with `yaml_text`."""
    if yaml_text:
        assert tmp_path is not None
        from logins.config import config_dir

        path = tmp_path / "custom.yaml"
        path.write_text(f"extends: {config_dir() / 'local.yaml'}\n{yaml_text}")
        env = {**env, "LOGINS_CONFIG": str(path)}
    return load_config(env)


def fetch(conn: Any, query: str, *params: Any) -> list[tuple[Any, ...]]:
    return list(conn.execute(query, params).fetchall())
