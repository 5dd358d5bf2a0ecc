"""The flow against a real LocalStack 2.3.2: the generation of the producer team's image, which
speaks only SQS's query protocol. Run by `make localstack2-test`; `make test` never collects it
(the name is not `test_*`). It needs `../shared/tools/localstack2-sqs` (installs LocalStack
2.3.2 once, about 2 minutes), or LOCALSTACK2_ENDPOINT pointing at a running one. A server this
test starts is stopped afterwards; one that was already running is left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from connectors.sqs.protocol import make_client
from logins.dev.generator import generate
from logins.dev.seed import send_bodies
from tests.helpers import REPO, make_keys, service_env

PORT = os.environ.get("LOCALSTACK2_PORT", "4589")


def _tool() -> Path:
    named = os.environ.get("LOCALSTACK2_SQS")
    candidates = [Path(named)] if named else []
    candidates += [p / "shared/tools/localstack2-sqs" for p in (REPO.parent, REPO.parent.parent)]
    for path in candidates:
        if path.is_file():
            return path
    raise AssertionError(f"no localstack2-sqs tool in {candidates}; set LOCALSTACK2_SQS")


def _up(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=2) as answer:
            return "sqs" in json.loads(answer.read()).get("services", {})
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    given = os.environ.get("LOCALSTACK2_ENDPOINT")
    if given:
        assert _up(given), f"LOCALSTACK2_ENDPOINT={given} does not answer"
        yield given
        return
    url = f"http://127.0.0.1:{PORT}"
    started = not _up(url)
    if started:
        tool = _tool()
        done = subprocess.run(
            [str(tool), "start", PORT], capture_output=True, text=True, timeout=900, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
    try:
        yield url
    finally:
        if started:
            subprocess.run([str(_tool()), "stop"], timeout=60, check=False)


def test_it_is_a_query_only_server(endpoint: str) -> None:
    """botocore's own JSON client gets the HTTP 500 the project must recognise."""
    plain = boto3.session.Session().client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as caught:
        plain.list_queues()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "Missing Action in request for query-protocol service" in str(caught.value)


def test_generate_check_and_the_flow(endpoint: str, database_url: str, tmp_path: Path) -> None:
    client = make_client(
        "auto",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    queue_url = client.create_queue(QueueName=f"logins-{int(time.time() * 1000)}")["QueueUrl"]
    assert client.protocol == "query"
    env = {
        **os.environ,
        **service_env(
            make_keys(tmp_path / "keys"),
            database_url=database_url,
            queue_url=queue_url,
            endpoint_url=endpoint,
            LOGINS_STOP_WHEN_IDLE="3",
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
        ),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    sent = send_bodies(client, queue_url, (m.body for m in generate(400, seed=3)))
    generated = run(
        "logins",
        "generate",
        "-n",
        "100",
        "--seed",
        "4",
        "--queue-url",
        queue_url,
        "--endpoint-url",
        endpoint,
    )
    assert generated.returncode == 0, generated.stderr
    assert generated.stderr.count("refused the JSON protocol") == 1
    checked = run("logins", "check", "--connect")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "500 visible" in checked.stdout and "(query protocol)" in checked.stdout
    started = time.monotonic()
    flow = run("bytewax.run", "flows.logins", "-w", "2")
    seconds = time.monotonic() - started
    assert flow.returncode == 0, flow.stderr[-3000:]
    assert flow.stderr.count("refused the JSON protocol") == 1
    with psycopg.connect(database_url) as conn:
        ids = {row[0] for row in conn.execute("SELECT message_id FROM logins_ledger")}
        outcome: dict[str, int] = dict(
            conn.execute("SELECT outcome, count(*) FROM logins_ledger GROUP BY 1")
        )
    assert set(sent) <= ids and len(ids) == 500, outcome  # every message once, none lost
    attrs = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    print(f"\nLocalStack 2.3.2: 500 messages drained by the flow in {seconds:.1f}s: {outcome}")
