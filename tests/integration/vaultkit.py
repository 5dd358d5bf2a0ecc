"""A vault to test against: this test's own keys (rotation rewrites the token key file), a
fresh database with the schema, rows and vault entries written the way the pipeline writes
them, and the `logins` CLI run in-process with the operator's environment."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from connectors.postgres.migrations import migrate
from logins.cli import main
from logins.core.config import AppConfig
from logins.core.keys import load_token_keys, load_vault_private_key, load_vault_public_key
from logins.core.tokens import Tokenizer
from logins.core.vault import Opener, Sealer
from tests.helpers import config_for, make_keys, service_env


@dataclass
class Vault:
    env: dict[str, str]
    keys: dict[str, Path]
    dsn: str
    config: AppConfig = field(init=False)

    def __post_init__(self) -> None:
        self.config = config_for(self.env)
        with self.connect() as conn:
            migrate(conn, self.config)

    # -- keys (re-read each time: rotation changes the token key file) -----------------------

    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(load_token_keys(self.keys["token.key"]))

    @property
    def sealer(self) -> Sealer:
        return Sealer(load_vault_public_key(self.keys["vault.pub"]))

    @property
    def opener(self) -> Opener:
        return Opener(load_vault_private_key(self.keys["vault.key"]))

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True)

    def query(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return list(conn.execute(statement, params or None).fetchall())

    # -- writing as the pipeline does ----------------------------------------------------------

    def add_login(self, user_id: str, ip: str, device_id: str, **extra: Any) -> dict[str, str]:
        """One row in user_logins with tokens, and each value sealed once in the vault."""
        tokenizer, sealer = self.tokenizer, self.sealer
        tokens = {
            "ip": tokenizer.token("ip", ip),
            "device_id": tokenizer.token("device_id", device_id),
        }
        now = datetime.now(timezone.utc)
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO user_logins (user_id, device_type, masked_ip, masked_device_id,"
                " locale, app_version, app_version_text, message_id, sent_at, create_date)"
                " VALUES (%s, 'ios', %s, %s, 'US', 20300, '2.3.0', %s, %s, %s)",
                (
                    user_id,
                    tokens["ip"],
                    tokens["device_id"],
                    extra.get("message_id", str(uuid.uuid4())),
                    now,
                    date.today(),
                ),
            )
            for name, value in (("ip", ip), ("device_id", device_id)):
                conn.execute(
                    "INSERT INTO pii_vault (token, field, sealed, vault_key_id)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (token) DO NOTHING",
                    (tokens[name], name, sealer.seal(name, tokens[name], value), sealer.key_id),
                )
        return tokens

    def add_rejected(self, body: str, reason: str = "missing_field") -> str:
        message_id = str(uuid.uuid4())
        sealer = self.sealer
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO user_logins_rejected (message_id, reason, detail, sealed_body,"
                " vault_key_id) VALUES (%s, %s, 'user_id', %s, %s)",
                (message_id, reason, sealer.seal_rejected(message_id, body), sealer.key_id),
            )
        return message_id

    # -- the CLI ---------------------------------------------------------------------------------

    def cli(self, *args: str, input: str | None = None, **env: str) -> Result:
        runner = CliRunner()
        return runner.invoke(main, list(args), input=input, env={**self.env, **env})

    def reveal_json(self, *args: str, input: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        result = self.cli(
            "reveal",
            *args,
            "--private-key-file",
            str(self.keys["vault.key"]),
            "--reason",
            "test",
            "--actor",
            "tester",
            "--json",
            input=input,
        )
        assert result.exit_code in (0, 1), result.output
        return result.exit_code, json.loads(result.stdout)


def make_vault(tmp_path: Path, database_url: str, **extra: str) -> Vault:
    keys = make_keys(tmp_path / "keys")
    env = service_env(
        keys,
        database_url=database_url,
        queue_url="http://127.0.0.1:9/000000000000/unused",
        endpoint_url="http://127.0.0.1:9",
        **extra,
    )
    return Vault(env, keys, database_url)


@pytest.fixture
def vault(tmp_path: Path, database_url: str) -> Vault:
    return make_vault(tmp_path, database_url)
