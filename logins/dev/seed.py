"""Sending bodies to a queue, ten per SendMessageBatch call (the SQS maximum)."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any


def send_bodies(client: Any, queue_url: str, bodies: Iterable[str]) -> list[str]:
    """Send every body; returns the message ids SQS assigned, in order."""
    sent: list[str] = []
    iterator = iter(bodies)
    while chunk := list(islice(iterator, 10)):
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)]
        response = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        failed = response.get("Failed", [])
        if failed:
            codes = sorted({f.get("Code", "?") for f in failed})
            raise RuntimeError(f"SQS refused {len(failed)} of {len(chunk)} messages: {codes}")
        by_id = {int(s["Id"]): s["MessageId"] for s in response["Successful"]}
        sent += [by_id[i] for i in range(len(chunk))]
    return sent
