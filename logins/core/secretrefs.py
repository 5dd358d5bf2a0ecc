"""References to secrets kept in AWS, where the config takes a key file or the DSN.

    secretsmanager:NAME     AWS Secrets Manager: the secret's SecretString (NAME or its ARN)
    ssm:/path/name          SSM Parameter Store: the parameter's value, decrypted if SecureString

A reference is fetched once, at start, through boto3's credential chain (environment, profile,
ECS/EKS/Lambda role). The region is the ARN's, else AWS_REGION / AWS_DEFAULT_REGION / the
profile's. boto3 itself honours endpoint overrides (AWS_ENDPOINT_URL_SECRETS_MANAGER,
AWS_ENDPOINT_URL_SSM, AWS_ENDPOINT_URL), which is how a local store or the tests are reached.

Errors name the reference and the service's own error code (ResourceNotFoundException,
ParameterNotFound, AccessDeniedException, ...) and never a value. This module imports nothing
of the project, so the key loaders and the config can both use it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Service = Literal["secretsmanager", "ssm"]
SERVICES: dict[str, str] = {"secretsmanager": "Secrets Manager", "ssm": "SSM Parameter Store"}

# At start, a store that does not answer must fail within seconds, not minutes.
_CONNECT_TIMEOUT_S = 3
_READ_TIMEOUT_S = 10
_MAX_ATTEMPTS = 3


class SecretRefError(ValueError):
    """A reference that cannot be resolved; the message names it, never the secret."""


@dataclass(frozen=True)
class SecretRef:
    service: Service
    name: str

    def __str__(self) -> str:
        return f"{self.service}:{self.name}"


def parse(text: str) -> SecretRef | None:
    """The reference `text` spells, or None if it is not one (a path, a DSN)."""
    scheme, colon, name = text.partition(":")
    if not colon or scheme not in SERVICES:
        return None
    if not name.strip():
        raise SecretRefError(f"{text!r}: a reference needs a name after '{scheme}:'")
    return SecretRef("secretsmanager" if scheme == "secretsmanager" else "ssm", name)


def fetch(ref: SecretRef) -> str:
    """The secret's text, fetched from its service now."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    service = SERVICES[ref.service]
    client = _client(ref)
    try:
        with _no_debug_from_botocore():
            if ref.service == "secretsmanager":
                answer = client.get_secret_value(SecretId=ref.name)
            else:
                answer = client.get_parameter(Name=ref.name, WithDecryption=True)
        if ref.service == "secretsmanager":
            if "SecretString" not in answer:
                raise SecretRefError(f"{ref}: the secret holds binary data, not text")
            value: str = answer["SecretString"]
        else:
            value = answer["Parameter"]["Value"]
    except ClientError as exc:
        code, message = _error_of(exc.response)
        raise SecretRefError(f"{ref}: {service} answered {code}: {message}".rstrip(": ")) from None
    except NoCredentialsError:
        raise SecretRefError(
            f"{ref}: no AWS credentials (boto3's chain: environment, profile, role)"
        ) from None
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as exc:
        raise SecretRefError(
            f"{ref}: cannot reach {service} at {client.meta.endpoint_url} ({type(exc).__name__})"
        ) from None
    except BotoCoreError as exc:
        raise SecretRefError(f"{ref}: {service}: {type(exc).__name__}") from None
    if not value.strip():
        raise SecretRefError(f"{ref}: the value is empty")
    return value


@contextlib.contextmanager
def _no_debug_from_botocore() -> Iterator[None]:
    """botocore logs every response body at DEBUG, so a secret's value too: not while
    fetching one, whatever level the logging was configured with."""
    logger = logging.getLogger("botocore")
    level = logger.level
    logger.setLevel(max(logging.INFO, level))
    try:
        yield
    finally:
        logger.setLevel(level)


def _error_of(response: Any) -> tuple[str, str]:
    """The service's error code and message. Some stand-ins (moto's IAM check) answer a JSON
    service with a query-protocol XML error, which botocore leaves unparsed as the HTTP status
    and the raw body: take the code and message out of the XML then."""
    error = response.get("Error", {})
    code, message = str(error.get("Code") or "unknown error"), str(error.get("Message") or "")
    if code.isdigit() and message.lstrip().startswith("<"):
        found = {k: re.search(f"<{k}>([^<]*)</{k}>", message) for k in ("Code", "Message")}
        if found["Code"]:
            code = f"{found['Code'][1]} (HTTP {code})"
            message = found["Message"][1] if found["Message"] else ""
    return code, message


def _region(ref: SecretRef) -> str | None:
    if ref.name.startswith("arn:"):
        parts = ref.name.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    return os.environ.get("AWS_REGION") or None


def _client(ref: SecretRef) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    region = _region(ref) or session.region_name
    if not region:
        raise SecretRefError(f"{ref}: no AWS region (set AWS_REGION or use the ARN)")
    return session.client(
        ref.service,
        region_name=region,
        config=Config(
            connect_timeout=_CONNECT_TIMEOUT_S,
            read_timeout=_READ_TIMEOUT_S,
            retries={"mode": "standard", "max_attempts": _MAX_ATTEMPTS},
        ),
    )
