"""Configuration: `config/<LOGINS_ENV>.yaml` layered over `config/base.yaml`, then validated.

pydantic does the validation (types, ranges, unknown keys) because its errors carry the exact
location; this module only adds the file that key came from, so a bad config fails at start
with "file: key: what is wrong".
"""

from __future__ import annotations

import os
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

from logins import secretrefs
from logins.interpolate import InterpolationError, interpolate
from logins.secretrefs import SecretRef, SecretRefError

DEFAULT_ENV = "local"


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- source -------------------------------------------------------------------------------------


class SqsRetryConfig(_Strict):
    """botocore's own retry modes: exponential backoff with jitter, throttling-aware."""

    mode: Literal["standard", "adaptive", "legacy"] = "standard"
    max_attempts: int = Field(10, ge=1, le=100)


class SqsSourceConfig(_Strict):
    type: Literal["sqs"]
    queue_url: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    wait_time_seconds: int = Field(1, ge=0, le=20, description="long-poll wait in the receiver")
    visibility_timeout: int = Field(60, ge=1, le=43200)
    max_messages: int = Field(10, ge=1, le=10, description="per ReceiveMessage call (SQS max 10)")
    receivers: int = Field(1, ge=1, le=32, description="concurrent receive threads per worker")
    max_batch: int = Field(1000, ge=1, description="most messages handed to the flow per poll")
    prefetch: int = Field(2000, ge=10, description="most received messages buffered per worker")
    stop_when_idle: float | None = Field(
        None, gt=0, description="end the flow once the queue was empty this many seconds"
    )
    queue_metrics_interval_seconds: float = Field(
        15,
        ge=1,
        le=3600,
        description="how often one GetQueueAttributes per process refreshes the"
        " logins_queue_messages gauges",
    )
    retry: SqsRetryConfig = Field(default_factory=SqsRetryConfig)


# --- steps --------------------------------------------------------------------------------------


class FieldSpec(_Strict):
    """One field of the producer's message."""

    type: Literal["string", "version"] = "string"
    required: bool = True
    nullable: bool = False
    max_length: int = Field(256, ge=1)
    format: Literal["ip"] | None = None
    pii: bool = False


class ValidateStep(_Strict):
    type: Literal["validate"]
    name: str = "validate"
    max_body_bytes: int = Field(16384, ge=64, le=262144)
    fields: dict[str, FieldSpec]


class DedupeStep(_Strict):
    type: Literal["dedupe"]
    name: str = "dedupe"
    window_seconds: float = Field(600, gt=0, description="same login within this SentTimestamp gap")
    shards: int = Field(64, ge=1, le=4096, description="state keys; each holds many fingerprints")
    # ~180 bytes per fingerprint: 64 x 2,000 is ~23 MB, the whole window up to ~210 msg/s
    # sustained; above that rate the horizon is the last ~128k logins (docs/operations.md).
    max_entries_per_shard: int = Field(
        2_000, ge=100, description="fingerprints kept per shard (bounds memory)"
    )


class MaskStep(_Strict):
    type: Literal["mask"]
    name: str = "mask"
    algorithm: Literal["blake2b-keyed", "sha256"] = "blake2b-keyed"
    fields: dict[str, str] = Field(description="input field -> output column holding its token")
    # ~175 bytes per token; a token it forgot only costs resending its vault entry, which the
    # vault's insert skips (ON CONFLICT DO NOTHING).
    seal_cache_size: int = Field(
        50_000, ge=0, description="tokens remembered as already in the vault (LRU)"
    )


Step = Annotated[ValidateStep | DedupeStep | MaskStep, Field(discriminator="type")]


# --- sink ---------------------------------------------------------------------------------------


class DatabaseRetryConfig(_Strict):
    """Capped exponential backoff with jitter while the database is away."""

    initial_seconds: float = Field(0.5, gt=0)
    max_seconds: float = Field(10, gt=0)
    give_up_after_seconds: float = Field(300, gt=0)


class PostgresSinkConfig(_Strict):
    type: Literal["postgres"]
    dsn: SecretStr = Field(description="a libpq DSN, or a secretsmanager:/ssm: reference to one")
    table: str = "user_logins"
    rejected_table: str = "user_logins_rejected"
    duplicates_table: str = "user_logins_duplicates"
    ledger_table: str = "logins_ledger"
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
    poison_after_attempts: int = Field(
        3, ge=1, description="deliveries of a row the database refuses before it is parked"
    )
    queued_batches: int = Field(
        2,
        ge=0,
        le=64,
        description="batches waiting for the sink's writer thread (0: write on the worker thread)",
    )
    retry: DatabaseRetryConfig = Field(default_factory=DatabaseRetryConfig)
    connect_timeout_seconds: int = Field(
        10, ge=1, le=300, description="per connection attempt (libpq connect_timeout)"
    )
    # The reference `dsn` was resolved from, if any (shown by describe() instead of the DSN).
    _dsn_ref: SecretRef | None = PrivateAttr(None)

    @property
    def dsn_ref(self) -> SecretRef | None:
        return self._dsn_ref


# --- secrets, vault, telemetry ------------------------------------------------------------------


def _key_source(value: Any) -> Any:
    """`secretsmanager:NAME` / `ssm:/path` become a SecretRef; anything else stays a path."""
    if isinstance(value, str):
        try:
            return secretrefs.parse(value) or value
        except SecretRefError as exc:
            raise ValueError(str(exc)) from None
    return value


# A key file's path, or a reference to a secret that holds the file's text (logins.secretrefs).
KeySource = Annotated[
    Path | SecretRef, BeforeValidator(_key_source), PlainSerializer(str, return_type=str)
]


def _blank_is_none(value: Any) -> Any:
    """`${VAR:-}` of an unset variable, or an empty string: not given."""
    return None if isinstance(value, str) and not value.strip() else value


class VaultConfig(_Strict):
    public_key_file: KeySource
    # The full SHA-256 of vault.pub (`logins keygen` prints it): when set, a vault.pub that is
    # not this key is refused at start, so a swapped public key cannot go unnoticed.
    public_key_fingerprint: str | None = None
    table: str = "pii_vault"
    audit_table: str = "pii_audit"

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

    key_file: KeySource | None = None
    kms_key_id: str | None = None
    kms_endpoint_url: str | None = None
    kms_region: str = "us-east-1"
    # Keys that only verify and find old tokens during a rotation (file <-> KMS included);
    # a key file's own later lines do the same.
    previous_key_file: KeySource | None = None
    previous_kms_key_ids: list[str] = Field(default_factory=list)
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
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    traces: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str | None = None
    service_name: str = "logins-etl"


class AppConfig(_Strict):
    source: SqsSourceConfig
    steps: list[Step] = Field(min_length=1)
    sink: PostgresSinkConfig
    tokens: TokensConfig
    vault: VaultConfig
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    shutdown_timeout_seconds: float = Field(
        30, gt=0, description="SIGTERM/SIGINT: longest time to commit what is held, then exit"
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
    shipped = Path(__file__).resolve().parent.parent / "config"
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
