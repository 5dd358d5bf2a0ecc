"""Fixtures of the integration tests (the flow's are in tests/conftest.py): moto's secret
stores, a vault on this test's queue, and everything a run in this process puts out."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import boto3
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, generate_latest

from logins.core.telemetry import JsonFormatter
from logins.dev.embedded import EmbeddedSqs
from tests.integration.vaultkit import Vault, make_vault

QUIET = ("botocore", "boto3", "urllib3")  # as logins.core.telemetry.setup pins them


@dataclass
class SecretStore:
    """moto's Secrets Manager and SSM Parameter Store, and the variables boto3 reads to reach
    them (AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL_SSM), set for this test."""

    endpoint_url: str

    def client(self, service: Literal["secretsmanager", "ssm", "iam"], **credentials: str) -> Any:
        return boto3.session.Session().client(
            service,
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


@pytest.fixture
def queue_vault(
    tmp_path: Path, database_url: str, sqs: EmbeddedSqs, queue_url: str
) -> Callable[..., Vault]:
    """`make_vault(**extra)` on this test's database and queue; the flow stops after a second
    idle."""

    def make(**extra: str) -> Vault:
        return make_vault(
            tmp_path,
            database_url,
            SQS_QUEUE_URL=queue_url,
            SQS_ENDPOINT_URL=sqs.endpoint_url,
            LOGINS_STOP_WHEN_IDLE="1",
            **extra,
        )

    return make


@dataclass
class Telemetry:
    """What a run in this process put out besides its tables, for the leak searches."""

    spans: InMemorySpanExporter
    logs: pytest.LogCaptureFixture
    capfd: pytest.CaptureFixture[str]

    def places(self) -> dict[str, str]:
        """{place: its text}: every log record (as text and as JSON), stdout, stderr, every span
        and every metric (prometheus_client's registry, as served)."""
        as_json = JsonFormatter().format
        out = self.capfd.readouterr()
        return {
            "logs": self.logs.text + "\n" + "\n".join(as_json(r) for r in self.logs.records),
            "stdout": out.out,
            "stderr": out.err,
            "spans": json.dumps([json.loads(s.to_json()) for s in self.spans.get_finished_spans()]),
            "metrics": generate_latest(REGISTRY).decode(),
        }


@pytest.fixture
def telemetry(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> Iterator[Telemetry]:
    """Every span (without installing a global tracer provider: allowed once per process, and
    tests/integration/test_telemetry.py installs its own) and every log record at DEBUG, but
    for the libraries the flow quietens (QUIET, at WARNING as logins.core.telemetry.setup
    pins them: at DEBUG botocore logs whole HTTP responses, which hold the message bodies)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer", provider.get_tracer)
    caplog.set_level(logging.DEBUG)  # the root logger and the capturing handler
    quiet = {name: logging.getLogger(name).level for name in QUIET}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
    yield Telemetry(exporter, caplog, capfd)
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
    provider.shutdown()
