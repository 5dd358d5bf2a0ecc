"""What the source's modules share about calling SQS: the client they make, where a failure
happened, and what a failure means for the flow."""

from __future__ import annotations

from botocore.config import Config

from connectors.errors import Failure, sqs_failure, sqs_where
from connectors.sqs.protocol import SqsClient, make_client
from logins.core.config import SqsSourceConfig
from logins.core.stop import Stop

__all__ = ["failed", "sqs_client", "where"]


def sqs_client(config: SqsSourceConfig, max_attempts: int | None = None) -> SqsClient:
    """An SQS client in the configured protocol, with botocore's retry mode and a read timeout
    above the long poll; its pool holds a connection for every call this process may have in
    flight (receivers and acker calls of two workers, the heartbeat's)."""
    attempts = max_attempts or config.retry.max_attempts
    return make_client(
        config.protocol,
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        config=Config(
            retries={"mode": config.retry.mode, "max_attempts": attempts},
            connect_timeout=5,
            read_timeout=config.wait_time_seconds + 10,
            max_pool_connections=max(10, config.max_receivers * 2 + config.ack_concurrency * 2),
        ),
    )


def where(config: SqsSourceConfig) -> str:
    """The queue (and endpoint) as error messages name it."""
    return sqs_where(config.queue_url, config.endpoint_url)


def failed(exc: BaseException, config: SqsSourceConfig, stop: Stop) -> Failure:
    """Describe a failed call; a permanent failure stops the flow (`stop`: after what it
    holds)."""
    failure = sqs_failure(exc, where(config))
    if failure.permanent:
        stop.fail(str(failure))
    return failure
