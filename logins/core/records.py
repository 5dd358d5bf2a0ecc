"""What travels through the dataflow: one `Event` per SQS delivery, from receive to commit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

# Why a message cannot become a row: the validator's codes in the order it checks them (size,
# JSON, object, then per field: missing -> null -> type -> length -> value), and `poison`, a
# row the database kept refusing (the sink parks it).
ValidationReason = Literal[
    "too_large",
    "not_json",
    "not_object",
    "missing_field",
    "null_field",
    "wrong_type",
    "too_long",
    "invalid_value",
]
RejectionReason = Literal[ValidationReason, "poison"]
REASONS: tuple[ValidationReason, ...] = get_args(ValidationReason)


@dataclass(slots=True)
class SqsMessage:
    """One delivery of an SQS message, as the source hands it to the flow."""

    message_id: str
    receipt_handle: str
    body: str
    sent_timestamp_ms: int  # set by SQS when the producer sent it: the event's time
    receive_count: int  # ApproximateReceiveCount: >1 means a redelivery
    received_at: float = 0.0  # time.time() when this delivery was received (visibility clock)
    # the producer's trace: a W3C `traceparent` message attribute, else the `AWSTraceHeader`
    # system attribute (X-Ray); only the header string, parsed when a span links to it
    trace_header: str | None = None
    # False: the delivery had no SentTimestamp (only a server that is not SQS omits it), so
    # `sent_timestamp_ms` is the receive time, which a redelivery would not repeat; the
    # ledger keys such a message at the epoch instead (connectors/postgres/writer.py)
    sent_timestamp_known: bool = True


@dataclass(slots=True)
class Rejection:
    """Why a message cannot become a row. `detail` names fields and limits, never values."""

    reason: RejectionReason
    detail: str


class VaultEntry(NamedTuple):
    """A sealed original value, written once per token. A tuple in the vault's column order:
    the sink COPYs it as it is (no object per row beyond this one)."""

    token: str
    field: str
    sealed: bytes
    vault_key_id: str


@dataclass(slots=True)
class Event:
    """A delivery and what the steps decided about it.

    Exactly one outcome: `rejection` set (a rejected row), `duplicate` set (a recognised
    resend; which message it repeats is not kept anywhere) or neither (a row). `fields` holds
    raw values until the mask step replaces the PII with tokens; `masked` is how the sink
    knows that happened.
    """

    message: SqsMessage
    fields: dict[str, Any] | None = None
    rejection: Rejection | None = None
    duplicate: bool = False
    fingerprint: bytes = b""
    sealed_body: bytes | None = None
    vault_key_id: str | None = None  # the key `sealed_body` is sealed to
    vault_entries: list[VaultEntry] = field(default_factory=list)
    masked: bool = False

    @property
    def outcome(self) -> str:
        if self.rejection is not None:
            return "rejected"
        if self.duplicate:
            return "duplicate"
        return "row"
