"""Fixtures for runs of the flow against the session's real PostgreSQL and SQS server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from logins.dev.embedded import EmbeddedSqs
from tests.helpers import make_keys, service_env


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_keys(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture
def flow_env(
    keys: dict[str, Path], database_url: str, queue_url: str, sqs: EmbeddedSqs
) -> dict[str, str]:
    """The operator contract's variables pointing at this test's database and queue."""
    return service_env(
        keys,
        database_url=database_url,
        queue_url=queue_url,
        endpoint_url=sqs.endpoint_url,
        LOGINS_STOP_WHEN_IDLE="1",
    )


@pytest.fixture
def queue_counts(sqs: EmbeddedSqs, queue_url: str) -> Callable[[], int]:
    def count() -> int:
        attrs = sqs.client().get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())

    return count
