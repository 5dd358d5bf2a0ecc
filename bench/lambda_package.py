"""`python -m bench.lambda_package`: the Lambda function's package and its invocations, measured.

Builds the package the way `sam build --build-in-source` does (`make build-LoginsFunction`),
reports its size (unzipped, against Lambda's 250 MB limit, and zipped), then runs the handler
from that package alone (a fresh `python3.11 -I`, sys.path = the package) against an embedded
PostgreSQL, with the DSN and the keys read from moto's Secrets Manager and SSM: the first
(cold) invocation, which imports, fetches the secrets, connects and commits, then warm ones.
The figures are this machine's (2 shared cores), not Lambda's: read them as relative costs.

    python -m bench.lambda_package [--batch 500] [--warm 5]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import psycopg

from bench.common import ROOT, parser
from connectors.postgres.migrations import migrate
from logins.core.config import load_config
from logins.core.keys import generate_keys
from logins.dev.embedded import EmbeddedPostgres, EmbeddedSqs
from logins.dev.generator import generate

_CHILD = """
import json, sys, time
started = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from flows.lambda_handler import handler
imported = time.perf_counter() - started
timings, failures = [], 0
for line in sys.stdin:
    t = time.perf_counter()
    failures += len(handler(json.loads(line), None)["batchItemFailures"])
    timings.append(time.perf_counter() - t)
print(json.dumps({"import": imported, "invocations": timings, "failures": failures}))
"""


def _event(bodies: list[str]) -> dict[str, Any]:
    now = str(int(time.time() * 1000))
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "AQEB",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": now},
                "eventSource": "aws:sqs",
            }
            for body in bodies
        ]
    }


def _build(package: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["make", "--no-print-directory", "build-LoginsFunction", f"ARTIFACTS_DIR={package}"],
        cwd=ROOT,
        check=True,
    )
    return time.perf_counter() - started


def _size_mb(package: Path) -> tuple[float, float]:
    unzipped = sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
    archive = shutil.make_archive(str(package) + "-zip", "zip", package)
    return unzipped / 1e6, Path(archive).stat().st_size / 1e6


def _store(endpoint: str, dsn: str, keys: dict[str, Path]) -> dict[str, str]:
    """The secrets in moto's stores; the function's environment that names them."""
    creds = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    sm = boto3.client("secretsmanager", endpoint_url=endpoint, **creds)  # type: ignore[call-overload]
    ssm = boto3.client("ssm", endpoint_url=endpoint, **creds)  # type: ignore[call-overload]
    sm.create_secret(Name="logins/database-url", SecretString=dsn)
    sm.create_secret(Name="logins/token-key", SecretString=keys["token.key"].read_text())
    ssm.put_parameter(Name="/logins/vault.pub", Value=keys["vault.pub"].read_text(), Type="String")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LOGINS_ENV": "lambda",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint,
        "AWS_ENDPOINT_URL_SSM": endpoint,
        "SQS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/000000000000/logins",
        "DATABASE_URL": "secretsmanager:logins/database-url",
        "LOGINS_TOKEN_KEY_FILE": "secretsmanager:logins/token-key",
        "LOGINS_VAULT_PUBLIC_KEY_FILE": "ssm:/logins/vault.pub",
    }


def main() -> None:
    args = parser("python -m bench.lambda_package", __doc__,
                  batch=(500, "records per invocation"),
                  warm=(5, "warm invocations after the cold one")).parse_args()  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="logins-lambda-bench-"))
    try:
        package = work / "package"
        build_s = _build(package)
        unzipped, zipped = _size_mb(package)
        keys = generate_keys(work / "keys")
        messages = generate(args.batch * (1 + args.warm), seed=11)
        bodies = [m.body for m in messages]
        with EmbeddedPostgres(work / "pg") as pg, EmbeddedSqs() as aws:
            env = _store(aws.endpoint_url, pg.dsn, keys)
            config = load_config({**env, "DATABASE_URL": pg.dsn, "LOGINS_TOKEN_KEY_FILE": "k"})
            with psycopg.connect(pg.dsn) as conn:
                migrate(conn, config)  # what `logins migrate` does before a deploy
            events = "".join(
                json.dumps(_event(bodies[i : i + args.batch])) + "\n"
                for i in range(0, len(bodies), args.batch)
            )
            child = subprocess.run(
                ["python3.11", "-I", "-c", _CHILD, str(package)],
                input=events,
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=work,
            )
            with psycopg.connect(pg.dsn) as conn:
                committed = conn.execute("SELECT count(*) FROM logins_ledger").fetchone()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = json.loads(child.stdout)
    cold, *warm = result["invocations"]
    warm_s = statistics.median(warm) if warm else float("nan")
    print(f"package: {unzipped:.0f} MB unzipped (limit 250), {zipped:.0f} MB zipped")
    print(f"built in {build_s:.0f} s")
    print(f"import of flows.lambda_handler from the package: {result['import']:.2f} s")
    print(f"cold invocation ({args.batch} records; secrets, connect, commit): {cold:.2f} s")
    print(
        f"warm invocation ({args.batch} records), median of {len(warm)}: {warm_s:.3f} s"
        f" = {args.batch / warm_s:,.0f} records/s"
    )
    print(f"records committed: {committed[0] if committed else 0} of {len(bodies)};"
          f" reported failed: {result['failures']}")  # fmt: skip


if __name__ == "__main__":
    main()
