"""Configuration: `config/<LOGINS_ENV>.yaml` layered over `config/base.yaml`, then validated.

pydantic does the validation (types, ranges, unknown keys) because its errors carry the exact
location; this module only adds the file that key came from, so a bad config fails at start
with "file: key: what is wrong".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from logins.core import secretrefs
from logins.core.interpolate import InterpolationError, interpolate
from logins.core.secretrefs import SecretRef, SecretRefError

DEFAULT_ENV = "local"


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- source -------------------------------------------------------------------------------------


class SqsRetryConfig(_Strict):
    """botocore's own retry modes: exponential backoff with jitter, throttling-aware."""

    mode: Literal["standard", "adaptive", "legacy"] = Field(
        "standard",
        description="botocore's retry mode; `adaptive` also rate-limits the client when SQS"
        " throttles",
    )
    max_attempts: int = Field(
        10, ge=1, le=100, description="attempts per SQS call, the first one included"
    )


class SqsSourceConfig(_Strict):
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


# --- steps --------------------------------------------------------------------------------------


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


class FieldSpec(_Strict):
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


class ValidateStep(_Strict):
    """The first step: each body becomes checked fields, or a rejection with one reason."""

    type: Literal["validate"] = Field(description="`validate`")
    name: str = Field("validate", description=_STEP_NAME)
    max_body_bytes: int = Field(
        16384, ge=64, le=262144, description="a longer body (in UTF-8 bytes) is `too_large`"
    )
    fields: dict[str, FieldSpec] = Field(
        description="the message's fields, checked in this order; unknown keys are ignored"
    )


class DedupeStep(_Strict):
    """Recognises a record sent twice: the same declared fields within a window."""

    type: Literal["dedupe"] = Field(description="`dedupe`")
    name: str = Field("dedupe", description=_STEP_NAME)
    window_seconds: float = Field(
        600, gt=0, description="the same record within this SentTimestamp gap is a resend"
    )
    shards: int = Field(64, ge=1, le=4096, description="state keys; each holds many fingerprints")
    # 24 bytes per slot, preallocated: 150 MB holds a 10-minute window up to ~10,000 msg/s
    # sustained (the table in docs/operations.md); above that, fingerprints are dropped
    # before their window ends and counted (logins_dedupe_evicted_early).
    memory_budget_mb: float = Field(
        150, gt=0, description="dedupe state of all shards together, in MB (10^6 bytes)"
    )
    max_entries_per_shard: int | None = Field(
        None,
        ge=100,
        description="deprecated (use memory_budget_mb): if set, slots per shard instead of"
        " the budget's share",
    )


class MaskStep(_Strict):
    """Replaces PII with keyed tokens and seals each distinct value once into the vault."""

    type: Literal["mask"] = Field(description="`mask`")
    name: str = Field("mask", description=_STEP_NAME)
    algorithm: Literal["blake2b-keyed", "sha256"] = Field(
        "blake2b-keyed",
        description="the token function; `sha256` (unkeyed) is refused at start, since an"
        " unkeyed hash of an IPv4 address is reversed by trying all 2^32",
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


# --- sink ---------------------------------------------------------------------------------------


class DatabaseRetryConfig(_Strict):
    """Capped exponential backoff with full jitter while the database is away."""

    initial_seconds: float = Field(0.5, gt=0, description="the first wait's scale")
    max_seconds: float = Field(10, gt=0, description="the longest wait between two attempts")
    give_up_after_seconds: float = Field(
        300,
        gt=0,
        description="then the flow exits non-zero; nothing uncommitted was deleted from the queue",
    )


SQS_MAX_RETENTION_DAYS = 14  # MessageRetentionPeriod's maximum: no delivery comes later
LEDGER_NAME_MAX_BYTES = 53  # + "_pYYYYMMDD" (the ledger's day partitions) <= 63 bytes

# sink.<key> -> the suffix of its default name after sink.table
_DERIVED_TABLES = {
    "rejected_table": "_rejected",
    "duplicates_table": "_duplicates",
    "ledger_table": "_ledger",
}


class PostgresSinkConfig(_Strict):
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
        description="resends recognised by the dedupe step, each pointing at the first",
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


class VaultConfig(_Strict):
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


class TokensConfig(_Strict):
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


class TelemetryConfig(_Strict):
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


class AppConfig(_Strict):
    """A stream: its source, its steps in order, its sink, and the keys it holds."""

    source: SqsSourceConfig = Field(description="where the messages come from")
    steps: list[Step] = Field(
        min_length=1,
        description="the steps in order; the first is `validate`, every PII field is masked",
    )
    sink: PostgresSinkConfig = Field(description="where the outcomes go")
    tokens: TokensConfig = Field(description="the token key")
    vault: VaultConfig = Field(description="the vault's public key and tables")
    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig, description="logs and traces"
    )
    shutdown_timeout_seconds: float = Field(
        30, gt=0, description="SIGTERM/SIGINT: longest time to commit what is held, then exit"
    )
    startup_timeout_seconds: float = Field(
        20, ge=0, description="start-up checks: how long a transient error is retried, then exit 2"
    )

    @model_validator(mode="after")
    def _check_pipeline(self) -> AppConfig:
        """Policy: validate first, every PII field masked, no unkeyed hash, unique step names."""
        if self.steps[0].type != "validate":
            raise ValueError("steps: the first step must be 'validate'")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"steps: step names must be unique, got {names}")
        validate = self.validate_step
        masked: set[str] = set()
        for step in self.steps:
            if isinstance(step, MaskStep):
                if step.algorithm != "blake2b-keyed":
                    raise ValueError(
                        f"steps.{step.name}.algorithm: {step.algorithm!r} is an unkeyed hash; "
                        "an attacker enumerates every IPv4 address in minutes. Use 'blake2b-keyed'"
                    )
                unknown = set(step.fields) - set(validate.fields)
                if unknown:
                    raise ValueError(
                        f"steps.{step.name}.fields: {sorted(unknown)} not in the validate schema"
                    )
                for name in step.fields:
                    spec = validate.fields[name]
                    if spec.type != "string":
                        raise ValueError(
                            f"steps.{step.name}.fields.{name}: a {spec.type} cannot be masked;"
                            " only strings are tokenised"
                        )
                    if spec.column is not None:
                        raise ValueError(
                            f"steps.{validate.name}.fields.{name}.column: a masked field's"
                            f" column is its token column, named by steps.{step.name}.fields"
                        )
                masked |= set(step.fields)
        unmasked = [n for n, f in validate.fields.items() if f.pii and n not in masked]
        if unmasked:
            raise ValueError(f"PII fields {unmasked} are not masked by any mask step")
        return self

    @property
    def validate_step(self) -> ValidateStep:
        step = self.steps[0]
        assert isinstance(step, ValidateStep)
        return step


# --- loading ------------------------------------------------------------------------------------


def config_dir() -> Path:
    """Where the shipped YAML lives: LOGINS_CONFIG_DIR, else the repo's config/, else ./config."""
    if "LOGINS_CONFIG_DIR" in os.environ:
        return Path(os.environ["LOGINS_CONFIG_DIR"])
    shipped = Path(__file__).resolve().parents[2] / "config"
    return shipped if shipped.is_dir() else Path.cwd() / "config"


def selected_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """The files that make the config, lowest priority first.

    LOGINS_CONFIG names a file, LOGINS_ENV a file `<env>.yaml` in the config directory; a
    file may say `extends: other.yaml` (relative to itself) to be layered over that one.
    """
    env = os.environ if env is None else env
    if env.get("LOGINS_CONFIG"):
        return _with_extends(Path(env["LOGINS_CONFIG"]))
    name = env.get("LOGINS_ENV") or DEFAULT_ENV
    directory = config_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "base")
        raise ConfigError(f"LOGINS_ENV={name!r}: no {path} (known environments: {known})")
    return _with_extends(path)


def _with_extends(path: Path) -> list[Path]:
    raw = _read_yaml(path)
    parent = raw.get("extends")
    if parent is None:
        return [path]
    return [*_with_extends(path.parent / str(parent)), path]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; a list or scalar in `over` replaces the one in `base`."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _defines(raw: Any, path: tuple[str | int, ...]) -> bool:
    for part in path:
        in_dict = isinstance(raw, dict) and part in raw
        in_list = isinstance(raw, list) and isinstance(part, int) and part < len(raw)
        if not (in_dict or in_list):
            return False
        raw = raw[part]
    return True


def _origin(layers: list[tuple[Path, dict[str, Any]]], path: tuple[str | int, ...]) -> str:
    """The file that set `path` (the highest layer defining it, or a parent of it)."""
    for depth in range(len(path), -1, -1):
        for file, raw in reversed(layers):
            if _defines(raw, path[:depth]) and depth > 0:
                return str(file)
    return " + ".join(str(f) for f, _ in layers)


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def load_config(env: Mapping[str, str] | None = None) -> AppConfig:
    """Load, layer, interpolate and validate the selected configuration."""
    env = os.environ if env is None else env
    files = selected_files(env)
    layers = [(f, {k: v for k, v in _read_yaml(f).items() if k != "extends"}) for f in files]
    merged: dict[str, Any] = {}
    for _, raw in layers:
        merged = _merge(merged, raw)
    try:
        resolved = interpolate(merged, env)
    except InterpolationError as exc:
        raise ConfigError(f"{_origin(layers, exc.path)}: {_dotted(exc.path)}: {exc}") from None
    _apply_operator_overrides(resolved, env)
    try:
        config = AppConfig.model_validate(resolved)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = _strip_union_tags(tuple(error["loc"]))
            problems.append(f"{_origin(layers, loc)}: {_dotted(loc)}: {error['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
    try:
        return _resolve_dsn(config)
    except SecretRefError as exc:
        raise ConfigError(f"{_origin(layers, ('sink', 'dsn'))}: sink.dsn: {exc}") from None


def _resolve_dsn(config: AppConfig) -> AppConfig:
    """A DSN given as a reference is fetched now, at start (the key files are read later, by
    the key loaders, which take the same references)."""
    ref = secretrefs.parse(config.sink.dsn.get_secret_value())
    if ref is None:
        return config
    sink = config.sink.model_copy(update={"dsn": SecretStr(secretrefs.fetch(ref).strip())})
    sink._dsn_ref = ref
    return config.model_copy(update={"sink": sink})


def _strip_union_tags(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """pydantic puts the discriminator value ('dedupe') in step locations; drop it."""
    steps = ("validate", "dedupe", "mask")
    return tuple(p for i, p in enumerate(loc) if not (i > 0 and loc[0] == "steps" and p in steps))


def _apply_operator_overrides(resolved: dict[str, Any], env: Mapping[str, str]) -> None:
    """LOGINS_STOP_WHEN_IDLE works with every config file, so it is applied here, not in YAML."""
    idle = env.get("LOGINS_STOP_WHEN_IDLE")
    if idle and isinstance(resolved.get("source"), dict):
        resolved["source"]["stop_when_idle"] = idle


def describe(config: AppConfig) -> dict[str, Any]:
    """The resolved configuration as plain data with secrets hidden (for `logins check`)."""
    data = config.model_dump(mode="json")
    ref = config.sink.dsn_ref
    data["sink"]["dsn"] = str(ref) if ref else _redact_dsn(config.sink.dsn.get_secret_value())
    return data


def _redact_dsn(dsn: str) -> str:
    """Hide the password of a postgresql:// URL, keep the rest (host, db) for debugging."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn if "password" not in dsn else "***"
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
