"""A database migrated by the superuser, with one login user per logins role, for tests that
act as each role the way that role's holder would: through its own DSN, with its own keys.

Login users are cluster-wide: each gets a random name, a password (used when the server is
not the embedded one, which trusts loopback), and is dropped at the end.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from click.testing import CliRunner, Result
from psycopg import sql

from connectors.postgres import roles
from connectors.postgres.migrations import migrate
from logins.cli import main
from logins.core.config import AppConfig
from logins.dev.embedded import dsn_with_database
from tests.helpers import config_for, make_keys, service_env

PASSWORD = "logins-test-password"  # a throwaway login on a throwaway server


@dataclass
class RoleDatabase:
    admin_dsn: str  # the superuser, on this database
    keys: dict[str, Path]
    env: dict[str, str]  # the operator's environment, with the superuser's DSN
    logins: dict[str, str] = field(default_factory=dict)  # role -> login user name

    @property
    def config(self) -> AppConfig:
        return config_for(self.env)

    def dsn(self, role: str) -> str:
        """The DSN of the login user granted `role` ("superuser" for the admin)."""
        if role == "superuser":
            return self.admin_dsn
        return psycopg.conninfo.make_conninfo(
            self.admin_dsn, user=self.logins[role], password=PASSWORD
        )

    def env_as(self, role: str, **extra: str) -> dict[str, str]:
        return {**self.env, "DATABASE_URL": self.dsn(role), **extra}

    def config_as(self, role: str, **extra: str) -> AppConfig:
        return config_for(self.env_as(role, **extra))

    @contextmanager
    def connect(self, role: str, autocommit: bool = True) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(self.dsn(role), autocommit=autocommit) as conn:
            yield conn

    def query(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect("superuser") as conn:
            return list(conn.execute(statement, params or None).fetchall())

    def cli(self, role: str, *args: str, input: str | None = None, **env: str) -> Result:
        return CliRunner().invoke(main, list(args), input=input, env=self.env_as(role, **env))


@contextmanager
def role_database(
    admin_dsn: str, directory: Path, before_migrate: str = "", **env: str
) -> Iterator[RoleDatabase]:
    """A fresh database: `before_migrate` SQL run as the superuser first (an existing table),
    then the migrations as the superuser, then a login user per role."""
    name = f"t_roles_{secrets.token_hex(6)}"
    suffix = secrets.token_hex(4)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = dsn_with_database(admin_dsn, name)
    keys = make_keys(directory / "keys")
    base_env = service_env(
        keys,
        database_url=dsn,
        queue_url="http://127.0.0.1:9/000000000000/unused",
        endpoint_url="http://127.0.0.1:9",
        **env,
    )
    db = RoleDatabase(dsn, keys, base_env)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            if before_migrate:
                conn.execute(before_migrate)  # test fixture SQL
            migrate(conn, db.config)
            for role in roles.ROLES:
                login = f"{role}_{suffix}"
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                        sql.Identifier(login), sql.Literal(PASSWORD), sql.Identifier(role)
                    )
                )
                db.logins[role] = login
        yield db
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            for login in db.logins.values():
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login)))
