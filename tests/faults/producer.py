"""A producer thread that feeds a queue while the flow drains it, as in production.

moto's SQS server scans the whole queue on every call, so a few thousand messages seeded
up front make every call slow; keeping the queue short keeps a run of thousands fast.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from logins.dev.seed import send_bodies


class PacedProducer(threading.Thread):
    """Sends `bodies` in batches of ten whenever fewer than `max_depth` are visible."""

    def __init__(self, client: Any, queue_url: str, bodies: Sequence[str], max_depth: int = 60):
        super().__init__(name="paced-producer", daemon=True)
        self._client = client
        self._queue_url = queue_url
        self._bodies = list(bodies)
        self._max_depth = max_depth
        self.sent_ids: list[str] = []
        self.error: BaseException | None = None

    def depth(self) -> int:
        attrs = self._client.get_queue_attributes(
            QueueUrl=self._queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"])

    def run(self) -> None:
        try:
            position = 0
            while position < len(self._bodies):
                room = self._max_depth - self.depth()
                if room < 10:
                    time.sleep(0.05)
                    continue
                chunk = self._bodies[position : position + room]
                self.sent_ids += send_bodies(self._client, self._queue_url, chunk)
                position += len(chunk)
        except BaseException as exc:  # surfaced by finish(), never swallowed
            self.error = exc

    def finish(self, timeout: float = 300) -> list[str]:
        self.join(timeout)
        assert not self.is_alive(), "producer did not finish in time"
        if self.error is not None:
            raise self.error
        return self.sent_ids
