"""What SQS refuses in a message body and in a SendMessageBatch call, checked before sending.

SQS (and LocalStack, which enforces the same rules) refuses a body that is empty, longer than
262,144 bytes (256 KiB) of UTF-8, or holds a character outside #x9 | #xA | #xD | #x20-#xD7FF |
#xE000-#xFFFD | #x10000-#x10FFFF; a message's size counts its attributes too, and a batch holds
at most 10 entries and 262,144 bytes in all. The reason given names the rule and a position,
never the body's content. (AWS raised the limit to 1 MiB in 2025; LocalStack 2.x, the
producer team's, still refuses more than 256 KiB, so these rules keep to it.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

MAX_BODY_BYTES = 262_144
MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 262_144
_OUTSIDE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def refusal(body: str) -> str | None:
    """Why SQS would refuse `body`, or None if it accepts it."""
    if not body:
        return "empty (SQS needs at least one character)"
    found = _OUTSIDE.search(body)
    if found:
        return (
            f"character U+{ord(found.group()):04X} at position {found.start()} is outside"
            " SQS's allowed set (#x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF)"
        )
    size = utf8_size(body)
    if size > MAX_BODY_BYTES:
        return f"{size} bytes, over SQS's {MAX_BODY_BYTES} (256 KiB)"
    return None


def utf8_size(body: str) -> int:
    """Bytes of `body` in UTF-8 (a body that passed `refusal` has no lone surrogates)."""
    if body.isascii():
        return len(body)
    return len(body.encode("utf-8", "surrogatepass"))


def entry_size(entry: Mapping[str, Any]) -> int:
    """What SQS counts of a SendMessageBatch entry: its body, and each message attribute's
    name, data type and value."""
    size = utf8_size(entry["MessageBody"])
    for name, attribute in entry.get("MessageAttributes", {}).items():
        value = attribute.get("StringValue") or attribute.get("BinaryValue") or ""
        size += utf8_size(name) + utf8_size(attribute.get("DataType", ""))
        size += len(value) if isinstance(value, bytes) else utf8_size(value)
    return size


def batches(entries: Iterable[Mapping[str, Any]]) -> Iterator[list[Mapping[str, Any]]]:
    """SendMessageBatch entries (without `Id`) in groups of at most 10 and 256 KiB. Raises
    ValueError, with the entry's index and the rule, for a message SQS would refuse."""
    batch: list[Mapping[str, Any]] = []
    size = 0
    for index, entry in enumerate(entries):
        reason = refusal(entry["MessageBody"])
        entry_bytes = entry_size(entry)
        if reason is None and entry_bytes > MAX_BODY_BYTES:
            reason = f"{entry_bytes} bytes with its attributes, over SQS's {MAX_BODY_BYTES}"
        if reason is not None:
            raise ValueError(f"message {index}: SQS would refuse its body: {reason}")
        if batch and (len(batch) == MAX_BATCH_ENTRIES or size + entry_bytes > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry_bytes
    if batch:
        yield batch
