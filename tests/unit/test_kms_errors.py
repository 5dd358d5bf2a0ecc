"""Which KMS errors are retried (pure classification; the retries themselves are tested
against moto's server in tests/integration/test_token_custody.py)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from logins.core.kms import _transient


def error(code: str, status: int) -> ClientError:
    """A ClientError with the whole ResponseMetadata botocore gives it (and its stubs require)."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": "m"},
            "ResponseMetadata": {
                "RequestId": "r",
                "HostId": "",
                "HTTPStatusCode": status,
                "HTTPHeaders": {},
                "RetryAttempts": 0,
            },
        },
        "GenerateMac",
    )


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (error("ThrottlingException", 400), True),
        (error("KMSInternalException", 500), True),
        (error("DependencyTimeoutException", 503), True),
        (error("AnythingElse", 502), True),  # a 5xx from a proxy in between
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ReadTimeoutError(endpoint_url="http://x"), True),
        (error("AccessDeniedException", 400), False),
        (error("NotFoundException", 400), False),
        (error("DisabledException", 400), False),
        (error("KMSInvalidStateException", 400), False),
        (error("InvalidKeyUsageException", 400), False),
        (ValueError("not from botocore"), False),
    ],
)
def test_only_what_another_attempt_can_cure_is_retried(exc: BaseException, retried: bool) -> None:
    assert _transient(exc) is retried
