"""Fixtures of the integration tests: moto's secret stores (the flow's are in tests/conftest.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from logins.dev.embedded import EmbeddedSqs


@dataclass
class SecretStore:
    """moto's Secrets Manager and SSM Parameter Store, and the variables boto3 reads to reach
    them (AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL_SSM), set for this test."""

    endpoint_url: str

    def client(self, service: str, **credentials: str) -> Any:
        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=credentials.get("key", "testing"),
            aws_secret_access_key=credentials.get("secret", "testing"),
        )

    def put_secret(self, text: str) -> str:
        """A new secret holding `text`; returns its reference (names are unique: moto's state
        is process-wide)."""
        name = f"logins-test/{secrets.token_hex(6)}"
        self.client("secretsmanager").create_secret(Name=name, SecretString=text)
        return f"secretsmanager:{name}"

    def put_parameter(self, text: str) -> str:
        """A new SecureString parameter holding `text`; returns its reference."""
        name = f"/logins-test/{secrets.token_hex(6)}"
        self.client("ssm").put_parameter(Name=name, Value=text, Type="SecureString")
        return f"ssm:{name}"


@pytest.fixture(scope="session")
def _aws_server() -> Iterator[str]:
    """A moto server of its own for the secret stores (moto serves every AWS API on one port)."""
    with EmbeddedSqs() as server:
        yield server.endpoint_url


@pytest.fixture
def secret_store(_aws_server: str, monkeypatch: pytest.MonkeyPatch) -> SecretStore:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", _aws_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", _aws_server)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return SecretStore(_aws_server)
