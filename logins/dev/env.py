"""The operator contract's environment variables for a run against given services: what the
demo, the benchmarks and the tests hand the flow (`python -m bytewax.run flows.logins`)."""

from __future__ import annotations

from pathlib import Path


def service_env(
    keys: dict[str, Path], *, database_url: str, queue_url: str, endpoint_url: str, **extra: str
) -> dict[str, str]:
    """The variables of docs/cli.md for the local configuration against these services, with
    the key files `logins keygen` wrote and throwaway AWS credentials (moto accepts any)."""
    return {
        "LOGINS_ENV": "local",
        "DATABASE_URL": database_url,
        "SQS_QUEUE_URL": queue_url,
        "SQS_ENDPOINT_URL": endpoint_url,
        "LOGINS_TOKEN_KEY_FILE": str(keys["token.key"]),
        "LOGINS_VAULT_PUBLIC_KEY_FILE": str(keys["vault.pub"]),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        **extra,
    }
