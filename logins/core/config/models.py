"""The configuration's sections other than the steps: the SQS source, the PostgreSQL sink, the
token key, the vault and telemetry (logins.core.config.steps has the steps, .app the whole).

pydantic validates them (types, ranges, unknown keys); each field's description is the text
of docs/configuration.md and of `logins schema`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from logins.core import secretrefs
from logins.core.secretrefs import SecretRef, SecretRefError


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo must not be silently ignored); a config is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- source -------------------------------------------------------------------------------------


class SqsRetryConfig(StrictModel):
    """botocore's own retry modes: exponential backoff with jitter, throttling-aware."""

    mode: Literal["standard", "adaptive", "legacy"] = Field(
        "standard",
        description="botocore's retry mode; `adaptive` also rate-limits the client when SQS"
        " throttles",
    )
    max_attempts: int = Field(
        10, ge=1, le=100, description="attempts per SQS call, the first one included"
    )


class SqsSourceConfig(StrictModel):
    """The SQS source: every worker polls the queue; SQS hands each message to one of them."""

    type: Literal["sqs"] = Field(description="the source's kind (the only one: `sqs`)")
    queue_url: str = Field(description="the queue's URL")
    endpoint_url: str | None = Field(
        None, description="an SQS endpoint other than AWS's (LocalStack, moto); unset: AWS"
    )
    region: str = Field("us-east-1", description="the AWS region of the queue")
    protocol: Literal["auto", "json", "query"] = Field(
        "auto",
        description="SQS's wire protocol: `json`, `query` (XML: LocalStack before 3.0 speaks"
        " only this), or `auto`: JSON until the server refuses it, then query for good",
    )
    wait_time_seconds: int = Field(
        1, ge=0, le=20, description="long-poll wait of a ReceiveMessage call, in the receiver"
    )
    visibility_timeout: int = Field(
        60,
        ge=1,
        le=43200,
        description="seconds a received message stays hidden; the flow extends it while it"
        " holds the message, and an uncommitted message reappears after it",
    )
    max_messages: int = Field(10, ge=1, le=10, description="per ReceiveMessage call (SQS max 10)")
    receivers: int = Field(2, ge=1, le=32, description="concurrent receive threads per worker")
    max_receivers: int = Field(
        8,
        ge=1,
        le=64,
        description="most receive calls in flight per worker: while the flow finds its buffer"
        " dry and receives come back full, a worker adds receivers up to this (a distant"
        " server answers in 10-30 ms a call); the added ones end when the queue runs empty",
    )
    ack_concurrency: int = Field(
        4,
        ge=1,
        le=32,
        description="DeleteMessageBatch / ChangeMessageVisibilityBatch calls in flight at once"
        " per worker (ten messages each): the deletes of a committed batch go out in parallel,"
        " so the sink does not wait for them one after the other",
    )
    max_batch: int = Field(
        1000,
        ge=1,
        description="most messages handed to the flow per poll; every step and the sink's"
        " transaction work per batch",
    )
    prefetch: int = Field(2000, ge=10, description="most received messages buffered per worker")
    stop_when_idle: float | None = Field(
        None,
        gt=0,
        description="end the flow once the queue was empty this many seconds (batch mode);"
        " `LOGINS_STOP_WHEN_IDLE` sets it for any config file",
    )
    queue_metrics_interval_seconds: float = Field(
        15,
        ge=1,
        le=3600,
        description="how often one GetQueueAttributes per process refreshes the"
        " logins_queue_messages gauges",
    )
    retry: SqsRetryConfig = Field(
        default_factory=SqsRetryConfig, description="retries of SQS calls"
    )


# --- sink ---------------------------------------------------------------------------------------


class DatabaseRetryConfig(StrictModel):
    """Capped exponential backoff with full jitter while the database is away."""

    initial_seconds: float = Field(0.5, gt=0, description="the first wait's scale")
    max_seconds: float = Field(10, gt=0, description="the longest wait between two attempts")
    give_up_after_seconds: float = Field(
        300,
        gt=0,
        description="then the flow exits non-zero; nothing uncommitted was deleted from the queue",
    )


SQS_MAX_RETENTION_DAYS = 14  # MessageRetentionPeriod's maximum: no delivery comes later
PG_NAME_MAX_BYTES = 63  # PostgreSQL truncates a longer name: an index could silently not be made
LEDGER_NAME_MAX_BYTES = 53  # + "_pYYYYMMDD" (the ledger's day partitions) <= 63 bytes
# The longest suffix the schema adds to each configured name (connectors/postgres/ddl.py, the
# vault's and audit's functions): `<vault>_token_aliases_new_token_idx`, `<audit>_prev_hash_key`,
# `<rejected>_rejected_at_idx`, `<sink>_unified`. tests/unit/test_schema.py checks every name
# the schema builds for names at these limits.
LONGEST_SUFFIX = {
    "sink.table": "_unified",
    "sink.rejected_table": "_rejected_at_idx",
    "sink.duplicates_table": "",
    "vault.table": "_token_aliases_new_token_idx",
    "vault.audit_table": "_prev_hash_key",
}


def check_name_fits(key: str, name: str) -> None:
    """Refuse a configured name whose longest derived name PostgreSQL would truncate."""
    most = PG_NAME_MAX_BYTES - len(LONGEST_SUFFIX[key])
    if len(name.encode()) > most:
        raise ValueError(
            f"{key.split('.')[1]}: {name!r} is longer than {most} bytes (the schema names"
            f" {name}{LONGEST_SUFFIX[key]} after it, within PostgreSQL's"
            f" {PG_NAME_MAX_BYTES}-byte names)"
        )


# sink.<key> -> the suffix of its default name after sink.table
_DERIVED_TABLES = {
    "rejected_table": "_rejected",
    "duplicates_table": "_duplicates",
    "ledger_table": "_ledger",
}


class PostgresSinkConfig(StrictModel):
    """The PostgreSQL sink: the table of rows and its companions, written in one transaction
    per batch."""

    type: Literal["postgres"] = Field(description="the sink's kind (the only one: `postgres`)")
    dsn: SecretStr = Field(
        description="a libpq connection URL, or a `secretsmanager:`/`ssm:` reference to one; it"
        " holds the password, so it comes from the environment (`${DATABASE_URL}`) or a secret"
        " store, never from a file in the repository"
    )
    table: str = Field(
        description="the table of rows (no default: a second stream must never write into"
        " another's table); created from the declared fields if missing, upgraded in place"
        " (columns are only added) if it exists"
    )
    published_columns: list[str] = Field(
        default_factory=list,
        description="columns a new table starts with, in this order: a published DDL that"
        " readers rely on. Types come from the declared fields; a listed column of a field"
        " that is masked later stays (NULL in new rows)",
    )
    rejected_table: str = Field(
        description="rejected messages: reason, detail (field names, never values), sealed body",
        json_schema_extra={"derived_default": "<table>_rejected"},
    )
    duplicates_table: str = Field(
        description="resends recognised by the dedupe step (not naming the message they repeat)",
        json_schema_extra={"derived_default": "<table>_duplicates"},
    )
    ledger_table: str = Field(
        description="every message id the pipeline committed, once, with its outcome",
        json_schema_extra={"derived_default": "<table>_ledger"},
    )
    migrate: bool = Field(
        True,
        description="apply the migrations at start when the schema is older than this version"
        " (false in prod: the flow's role cannot run DDL; it checks the version and stops)",
    )
    rejected_retention_days: int | None = Field(
        30,
        ge=1,
        description="days a rejected message's sealed body is kept (`logins purge`); null: forever",
    )
    ledger_retention_days: int = Field(
        21,
        gt=SQS_MAX_RETENTION_DAYS,
        le=3650,
        description="days the ledger keeps a message id (its day's partition is dropped"
        " after them): more than SQS's 14-day maximum retention, so no redelivery outlives"
        " its ledger row",
    )
    poison_after_attempts: int = Field(
        3, ge=1, description="deliveries of a row the database refuses before it is parked"
    )
    queued_batches: int = Field(
        2,
        ge=0,
        le=64,
        description="batches waiting for the sink's writer thread (0: write on the worker thread)",
    )
    writers: int = Field(
        2,
        ge=1,
        le=8,
        description="connections each worker's sink commits on, at most, each on a writer"
        " thread of its own: a batch goes to the next writer only while the first writer's"
        " queue is full, batches then commit side by side, and each is deleted from the queue"
        " after its own commit (1: one batch at a time); more than 1 needs `queued_batches` >= 1",
    )
    retry: DatabaseRetryConfig = Field(
        default_factory=DatabaseRetryConfig, description="while the database is away"
    )
    connect_timeout_seconds: int = Field(
        10, ge=1, le=300, description="per connection attempt (libpq connect_timeout)"
    )
    # The reference `dsn` was resolved from, if any (shown by describe() instead of the DSN).
    _dsn_ref: SecretRef | None = PrivateAttr(None)

    @property
    def dsn_ref(self) -> SecretRef | None:
        return self._dsn_ref

    @model_validator(mode="before")
    @classmethod
    def _derive_table_names(cls, data: Any) -> Any:
        """`<table>_rejected`, `<table>_duplicates`, `<table>_ledger` unless named."""
        if isinstance(data, dict) and isinstance(data.get("table"), str):
            table = data["table"]
            data = {
                **{key: f"{table}{suffix}" for key, suffix in _DERIVED_TABLES.items()},
                **data,
            }
        return data

    @model_validator(mode="after")
    def _check_names(self) -> PostgresSinkConfig:
        tables = [self.table, self.rejected_table, self.duplicates_table, self.ledger_table]
        if len(set(tables)) != len(tables):
            raise ValueError(f"the sink's tables must differ, got {tables}")
        check_name_fits("sink.table", self.table)
        check_name_fits("sink.rejected_table", self.rejected_table)
        check_name_fits("sink.duplicates_table", self.duplicates_table)
        if len(self.ledger_table.encode()) > LEDGER_NAME_MAX_BYTES:
            raise ValueError(
                f"ledger_table: {self.ledger_table!r} is longer than {LEDGER_NAME_MAX_BYTES}"
                " bytes (its day partitions are named <ledger_table>_pYYYYMMDD, within"
                " PostgreSQL's 63-byte names)"
            )
        repeated = sorted(
            {c for c in self.published_columns if self.published_columns.count(c) > 1}
        )
        if repeated:
            raise ValueError(f"published_columns: {repeated} listed more than once")
        if self.writers > 1 and self.queued_batches == 0:
            raise ValueError(
                f"writers: {self.writers} writer threads need queued_batches >= 1 (0 writes on"
                " the worker thread, one batch at a time)"
            )
        return self


# --- secrets, vault, telemetry ------------------------------------------------------------------


def _key_source(value: Any) -> Any:
    """`secretsmanager:NAME` / `ssm:/path` become a SecretRef; anything else stays a path."""
    if isinstance(value, str):
        try:
            return secretrefs.parse(value) or value
        except SecretRefError as exc:
            raise ValueError(str(exc)) from None
    return value


# A key file's path, or a reference to a secret that holds the file's text (logins.core.secretrefs).
KeySource = Annotated[
    Path | SecretRef, BeforeValidator(_key_source), PlainSerializer(str, return_type=str)
]


def _blank_is_none(value: Any) -> Any:
    """`${VAR:-}` of an unset variable, or an empty string: not given."""
    return None if isinstance(value, str) and not value.strip() else value


class VaultConfig(StrictModel):
    """The sealed originals of masked values: the pipeline holds only the public key."""

    public_key_file: KeySource = Field(
        description="the vault's public key file (`logins keygen`), or a `secretsmanager:`/`ssm:`"
        " reference to its text; the private key never goes here"
    )
    public_key_fingerprint: str | None = Field(
        None,
        description="the full SHA-256 of vault.pub (`sha256:` + 64 hex, as `logins keygen`"
        " prints it): when set, a vault.pub that is not this key is refused at start",
    )
    table: str = Field(
        "pii_vault",
        description="sealed values, one per token; its erasure and alias tables are named"
        " after it (`pii_erasures`, `pii_token_aliases`; `X_vault` gives `X_erasures`, ...)",
    )
    audit_table: str = Field(
        "pii_audit",
        description="the append-only, hash-chained trail of reveal, forget, rotate, rekey",
    )

    @field_validator("public_key_fingerprint", mode="before")
    @classmethod
    def _fingerprint(cls, value: Any) -> Any:
        value = _blank_is_none(value)
        if value is None:
            return None
        text = str(value).strip().lower().removeprefix("sha256:").replace(":", "")
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise ValueError("must be 'sha256:' and 64 hex digits, as `logins keygen` prints it")
        return f"sha256:{text}"

    @model_validator(mode="after")
    def _check_names(self) -> VaultConfig:
        check_name_fits("vault.table", self.table)
        check_name_fits("vault.audit_table", self.audit_table)
        return self


class TokensConfig(StrictModel):
    """Where the token key is: a key file (development: whoever holds the file can compute
    every token, so can enumerate low-entropy values offline; a path or a secretsmanager:/ssm:
    reference to the file's text) or an AWS KMS HMAC_256 key (GenerateMac: the secret never
    leaves KMS). Exactly one of `key_file` and `kms_key_id`."""

    key_file: KeySource | None = Field(
        None,
        description="the token key file (`logins keygen`; its first line is the active key), or"
        " a `secretsmanager:`/`ssm:` reference to its text; whoever holds it can enumerate"
        " low-entropy values offline (development)",
    )
    kms_key_id: str | None = Field(
        None, description="an AWS KMS HMAC_256 key (id, ARN or alias): tokens by GenerateMac"
    )
    kms_endpoint_url: str | None = Field(
        None, description="KMS endpoint override (LocalStack, moto); else AWS's"
    )
    kms_region: str = Field("us-east-1", description="the KMS key's region")
    # Keys that only verify and find old tokens during a rotation (file <-> KMS included);
    # a key file's own later lines do the same.
    previous_key_file: KeySource | None = Field(
        None, description="during a rotation: an old key file that still verifies old tokens"
    )
    previous_kms_key_ids: list[str] = Field(
        default_factory=list,
        description="during a rotation: old KMS keys (comma-separated in the environment)",
    )
    # ~200 bytes per value; only a KMS key uses it (a file key computes a token in ~1 us).
    cache_size: int = Field(50_000, ge=0, description="recent value -> token (LRU), KMS key")
    kms_concurrency: int = Field(8, ge=1, le=64, description="GenerateMac calls at once")
    kms_give_up_after_seconds: float = Field(
        300, gt=0, description="retry throttling/outages of KMS this long, then fail the batch"
    )

    @field_validator(
        "key_file", "kms_key_id", "kms_endpoint_url", "previous_key_file", mode="before"
    )
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_is_none(value)

    @field_validator("previous_kms_key_ids", mode="before")
    @classmethod
    def _id_list(cls, value: Any) -> Any:
        value = _blank_is_none(value)
        if value is None:
            return []
        if isinstance(value, str):  # from one environment variable: comma-separated
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _one_custody(self) -> TokensConfig:
        if (self.key_file is None) == (self.kms_key_id is None):
            given = "both are set" if self.key_file is not None else "neither is set"
            raise ValueError(
                "give exactly one of tokens.key_file (LOGINS_TOKEN_KEY_FILE) and"
                f" tokens.kms_key_id (LOGINS_TOKEN_KMS_KEY_ID): {given}"
            )
        return self


class SecurityConfig(StrictModel):
    """What a production start (LOGINS_ENV=prod) refuses unless accepted here by name
    (logins/core/posture.py)."""

    allow_token_key_file: bool = Field(
        False,
        description="production: start with a token key file (a copy enumerates values"
        " offline) instead of a KMS key",
    )
    allow_unpinned_vault_key: bool = Field(
        False,
        description="production: start without vault.public_key_fingerprint (a swapped"
        " vault.pub would be used)",
    )


class TelemetryConfig(StrictModel):
    """Logs, traces; metrics need no settings (Bytewax serves them)."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="the root logger's level"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="`json`: one JSON object per line"
    )
    traces: Literal["none", "console", "otlp"] = Field(
        "none",
        description="OpenTelemetry spans, one per committed batch (`otlp` needs the `otlp` extra)",
    )
    otlp_endpoint: str | None = Field(None, description="the OTLP/HTTP endpoint, for `otlp`")
    service_name: str = Field("logins-etl", description="the spans' service.name")
