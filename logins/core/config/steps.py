"""The steps of a stream: validate (the fields of a message), dedupe, mask."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from logins.core.config.models import StrictModel

FieldType = Literal["string", "integer", "number", "boolean", "timestamp", "enum", "version"]

# Which options apply to which types; an option set for another type is a config error.
_OPTIONS_BY_TYPE: dict[str, set[FieldType]] = {
    "max_length": {"string", "version"},
    "pattern": {"string"},
    "format": {"string"},
    "min": {"integer", "number"},
    "max": {"integer", "number"},
    "values": {"enum"},
}


class FieldSpec(StrictModel):
    """One field of a message: its JSON type, its limits, and the column it goes to.

    JSON types are strict: `"12"` is not an integer, `1` is not a boolean, `true` is not an
    integer (`wrong_type`). A value of the right type outside its limits (length aside:
    `too_long`) is `invalid_value`.
    """

    type: FieldType = Field(
        "string",
        description="`string` (text), `integer` (a JSON number without fraction or exponent,"
        " within bigint), `number` (any JSON number), `boolean`, `timestamp` (an ISO 8601"
        " string with an offset or `Z`), `enum` (one of `values`), `version` (a dotted version"
        " string, stored as an integer and as its text)",
    )
    required: bool = Field(True, description="the key must be present (else `missing_field`)")
    nullable: bool = Field(False, description="JSON null is accepted (else `null_field`)")
    pii: bool = Field(
        False, description="personal data: a mask step must mask it (checked at start)"
    )
    column: str | None = Field(
        None,
        description="the output column (default: the field's name; a version also fills"
        " `<column>_text`). Not for masked fields: the mask step names their token column",
    )
    max_length: int = Field(
        256,
        ge=1,
        description="string, version: most characters (else `too_long`); the column is"
        " `varchar(max_length)` for a string",
    )
    pattern: str | None = Field(
        None,
        description="string: a regular expression (Python `re`) the whole value must match"
        " (else `invalid_value`)",
    )
    format: Literal["ip"] | None = Field(
        None, description="string: `ip`, an IPv4 or IPv6 address (else `invalid_value`)"
    )
    min: int | float | None = Field(
        None, description="integer, number: the smallest value accepted (else `invalid_value`)"
    )
    max: int | float | None = Field(
        None, description="integer, number: the largest value accepted (else `invalid_value`)"
    )
    values: list[str] | None = Field(
        None, min_length=1, description="enum: the accepted values (else `invalid_value`)"
    )

    @model_validator(mode="after")
    def _check_options(self) -> FieldSpec:
        for option, types in _OPTIONS_BY_TYPE.items():
            is_set = option in self.model_fields_set and getattr(self, option) is not None
            if is_set and self.type not in types:
                raise ValueError(f"{option!r} does not apply to type {self.type!r}")
        if self.type == "enum" and not self.values:
            raise ValueError("an enum needs 'values'")
        if self.type == "integer":
            for bound in (self.min, self.max):
                if bound is not None and not float(bound).is_integer():
                    raise ValueError(f"an integer's min/max must be whole numbers, got {bound}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return self


_STEP_NAME = (
    "the step's Bytewax step id; renaming a stateful step (dedupe) drops its recovered state"
)


class ValidateStep(StrictModel):
    """The first step: each body becomes checked fields, or a rejection with one reason."""

    type: Literal["validate"] = Field(description="`validate`")
    name: str = Field("validate", description=_STEP_NAME)
    max_body_bytes: int = Field(
        16384, ge=64, le=262144, description="a longer body (in UTF-8 bytes) is `too_large`"
    )
    fields: dict[str, FieldSpec] = Field(
        description="the message's fields, checked in this order; unknown keys are ignored"
    )


class DedupeStep(StrictModel):
    """Recognises a record sent twice: the same declared fields within a window."""

    type: Literal["dedupe"] = Field(description="`dedupe`")
    name: str = Field("dedupe", description=_STEP_NAME)
    window_seconds: float = Field(
        600, gt=0, description="the same record within this SentTimestamp gap is a resend"
    )
    shards: int = Field(64, ge=1, le=4096, description="state keys; each holds many fingerprints")
    # two period tables of 8-byte slots per shard, preallocated: 150 MB holds a 10-minute
    # window up to ~15,000 msg/s sustained (the table in docs/operations.md); above that,
    # fingerprints are dropped before their window ends and counted
    # (logins_dedupe_evicted_early).
    memory_budget_mb: float = Field(
        150, gt=0, description="dedupe state of all shards together, in MB (10^6 bytes)"
    )


class MaskStep(StrictModel):
    """Replaces PII with keyed tokens and seals each distinct value once into the vault."""

    type: Literal["mask"] = Field(description="`mask`")
    name: str = Field("mask", description=_STEP_NAME)
    algorithm: Literal["hmac-sha256", "sha256"] = Field(
        "hmac-sha256",
        description="the token function: HMAC-SHA256 under the token key; `sha256` (unkeyed)"
        " is refused at start, since an unkeyed hash of an IPv4 address is reversed by trying"
        " all 2^32",
    )
    fields: dict[str, str] = Field(
        description="input field -> the column holding its token (`varchar(256)`)"
    )
    # A token it forgot only costs resending its vault entry, which the vault's insert skips
    # (ON CONFLICT DO NOTHING); logins/core/sealcache.py.
    seal_cache_size: int = Field(
        50_000,
        ge=0,
        description="tokens remembered as already in the vault (LRU, about 175 bytes each;"
        " 0: no cache)",
    )
    seal_cache_overflow_tokens: int = Field(
        2_000_000,
        ge=0,
        le=1_000_000_000,
        description="tokens remembered beyond `seal_cache_size`, those it evicted, as 8-byte"
        " hashes in a table allocated at start (16 MB at the default; 0: none)",
    )


Step = Annotated[ValidateStep | DedupeStep | MaskStep, Field(discriminator="type")]
