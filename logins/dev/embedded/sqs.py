"""Embedded SQS: moto's server on a loopback port, spoken to with the project's own client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from logins.dev.embedded.moto import DUMMY_AWS_KEY, REGION, EmbeddedMoto

if TYPE_CHECKING:
    from connectors.sqs.protocol import Protocol, SqsClient

__all__ = ["EmbeddedSqs"]


class EmbeddedSqs(EmbeddedMoto):
    """moto's SQS server (real wire protocol) on a free loopback port.

    moto keeps its queues in process-global state, shared by every server and ``mock_aws`` in
    this process and surviving stop()/start(): give each test its own queue name.
    """

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self._client: SqsClient | None = None

    def client(self, protocol: Protocol = "auto") -> SqsClient:
        """A new SQS client for this server (the project's own, connectors/sqs/protocol.py;
        moto speaks both protocols), with dummy credentials (os.environ untouched)."""
        from connectors.sqs.protocol import make_client

        return make_client(
            protocol,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=DUMMY_AWS_KEY,
            aws_secret_access_key=DUMMY_AWS_KEY,
        )

    def create_queue(self, name: str, **attributes: str) -> str:
        """Create queue ``name`` (attributes as in CreateQueue, e.g. VisibilityTimeout="30")."""
        if self._client is None:
            self._client = self.client()
        queue = self._client.create_queue(QueueName=name, Attributes=attributes)
        return queue["QueueUrl"]
