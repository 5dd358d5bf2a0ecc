"""The whole configuration of a stream, and the policy that spans its sections."""

from __future__ import annotations

from pydantic import Field, model_validator

from logins.core.config.models import (
    PostgresSinkConfig,
    SecurityConfig,
    SqsSourceConfig,
    StrictModel,
    TelemetryConfig,
    TokensConfig,
    VaultConfig,
)
from logins.core.config.steps import MaskStep, Step, ValidateStep


class AppConfig(StrictModel):
    """A stream: its source, its steps in order, its sink, and the keys it holds."""

    source: SqsSourceConfig = Field(description="where the messages come from")
    steps: list[Step] = Field(
        min_length=1,
        description="the steps in order; the first is `validate`, every PII field is masked",
    )
    sink: PostgresSinkConfig = Field(description="where the outcomes go")
    tokens: TokensConfig = Field(description="the token key")
    vault: VaultConfig = Field(description="the vault's public key and tables")
    security: SecurityConfig = Field(
        default_factory=SecurityConfig, description="what production accepts by name"
    )
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
                if step.algorithm != "hmac-sha256":
                    raise ValueError(
                        f"steps.{step.name}.algorithm: {step.algorithm!r} is an unkeyed hash; "
                        "an attacker enumerates every IPv4 address in minutes. Use 'hmac-sha256'"
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
