"""Configuration: `config/<LOGINS_ENV>.yaml` layered over `config/base.yaml`, then validated.

pydantic does the validation (types, ranges, unknown keys) because its errors carry the exact
location; this package adds the file and line that key came from and says what is wrong in
words, so a bad config fails at start with `file:line: key: what is wrong; did you mean ...`.

    models.py   the sections: source, sink, tokens, vault, telemetry
    steps.py    the steps: validate (and its fields), dedupe, mask
    app.py      the whole (AppConfig) and the policy across sections
    files.py    which files, `extends:`, YAML read with the line of every key
    loading.py  layering, interpolation, validation; describe() for `logins check`
    errors.py   ConfigError and pydantic's errors in words, with the nearest valid key
    fileschema.py  the JSON Schema of a config file (`logins schema`, editors)
"""

from logins.core.config.app import AppConfig
from logins.core.config.errors import ConfigError
from logins.core.config.files import DEFAULT_ENV, config_dir, selected_files, shipped_dir
from logins.core.config.loading import describe, load_config
from logins.core.config.models import (
    LEDGER_NAME_MAX_BYTES,
    SQS_MAX_RETENTION_DAYS,
    DatabaseRetryConfig,
    KeySource,
    PostgresSinkConfig,
    SecurityConfig,
    SqsRetryConfig,
    SqsSourceConfig,
    StrictModel,
    TelemetryConfig,
    TokensConfig,
    VaultConfig,
)
from logins.core.config.steps import (
    DedupeStep,
    FieldSpec,
    FieldType,
    MaskStep,
    Step,
    ValidateStep,
)

__all__ = [
    "DEFAULT_ENV",
    "LEDGER_NAME_MAX_BYTES",
    "SQS_MAX_RETENTION_DAYS",
    "AppConfig",
    "ConfigError",
    "DatabaseRetryConfig",
    "DedupeStep",
    "FieldSpec",
    "FieldType",
    "KeySource",
    "MaskStep",
    "PostgresSinkConfig",
    "SecurityConfig",
    "SqsRetryConfig",
    "SqsSourceConfig",
    "Step",
    "StrictModel",
    "TelemetryConfig",
    "TokensConfig",
    "ValidateStep",
    "VaultConfig",
    "config_dir",
    "describe",
    "load_config",
    "selected_files",
    "shipped_dir",
]
