"""The container route, run for real: the image and the compose stack on a Docker engine.

`make container-test` runs this file; `make test` never collects it (the name is not `test_*`),
so it never needs Docker. It needs a Docker engine and the base images: on these machines
`../shared/tools/container-lab setup` provides both. It uses `docker compose` when that works,
else `docker-compose` (set LOGINS_COMPOSE to choose), with the legacy builder (DOCKER_BUILDKIT=0),
its own project name, image tag and free host ports (LOGINS_PG_PORT, LOGINS_SQS_PORT,
LOGINS_METRICS_PORT), and removes what it started.

In order: build the image; bring up LocalStack + PostgreSQL + keys; seed sample logins; start
the flow and time it to the first commit; check the rows, `logins stats` and an audited `logins
reveal` through `compose exec`; the HEALTHCHECK turns healthy; `compose stop flow` while
messages arrive (exit 0), the rest committed after `start`, nothing lost; keygen into a host
directory as docs/docker.md shows; the image once against an endpoint that speaks only the query
protocol (LocalStack before 3.0). The figures (build time, image size, start to first commit)
are printed at the end; docs/docker.md quotes them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connectors.sqs.protocol import make_client
from logins.dev.embedded import free_port
from logins.dev.generator import generate
from logins.dev.seed import send_bodies
from tests.container.conftest import FIGURES
from tests.faults.sqs_proxy import SqsFaultProxy
from tests.helpers import REPO

RUN = f"ct{os.getpid()}"
QUEUE = "login-queue"
SEEDED = 1000  # the seed service's count (docker-compose.yml)
ARRIVING = 3000  # sent while the flow is stopped and started


@dataclass
class Stack:
    env: dict[str, str]
    compose: list[str]
    image: str
    pg_port: int
    sqs_port: int
    figures: dict[str, Any] = field(default_factory=dict)

    def run(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.compose, *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{shlex.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def container(self, service: str) -> str:
        return self.run("ps", "-q", service).stdout.strip()

    def dsn(self) -> str:
        return f"postgresql://postgres:postgres@127.0.0.1:{self.pg_port}/postgres"

    def sqs(self) -> Any:
        return make_client(
            "auto",
            endpoint_url=f"http://127.0.0.1:{self.sqs_port}",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def queue_url(self, name: str = QUEUE) -> str:
        return str(self.sqs().get_queue_url(QueueName=name)["QueueUrl"])


def compose_command(env: dict[str, str]) -> list[str]:
    chosen = os.environ.get("LOGINS_COMPOSE")
    if chosen:
        return shlex.split(chosen)
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, env=env, check=False
    )
    if probe.returncode == 0:
        return ["docker", "compose"]
    assert shutil.which("docker-compose"), "neither `docker compose` nor docker-compose: no Docker?"
    return ["docker-compose"]


def docker(
    *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    info = docker("info", "--format", "{{.ServerVersion}}")
    assert info.returncode == 0, (
        f"no Docker engine: {info.stderr} (../shared/tools/container-lab setup)"
    )
    pg_port, sqs_port, metrics_port = free_port(), free_port(), free_port()
    image = f"logins-etl:{RUN}"
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": f"logins{RUN}",
        "LOGINS_IMAGE": image,
        "LOGINS_PG_PORT": str(pg_port),
        "LOGINS_SQS_PORT": str(sqs_port),
        "LOGINS_METRICS_PORT": str(metrics_port),
        "DOCKER_BUILDKIT": "0",
        "COMPOSE_DOCKER_CLI_BUILD": "0",
    }
    stack = Stack(
        env, [*compose_command(env), "-f", "docker-compose.yml"], image, pg_port, sqs_port
    )
    request.config.stash[FIGURES] = stack.figures  # printed in the terminal summary
    try:
        yield stack
    finally:
        stack.run("--profile", "seed", "down", "-v", "--remove-orphans", check=False, timeout=180)
        docker("rmi", "-f", image)


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(every)


def ledger(stack: Stack) -> Counter[str]:
    try:
        with psycopg.connect(stack.dsn(), connect_timeout=3) as conn:
            return Counter(
                dict(
                    conn.execute(
                        "SELECT outcome, count(*) FROM logins_ledger GROUP BY outcome"
                    ).fetchall()
                )
            )
    except psycopg.Error:
        return Counter()


def queue_counts(stack: Stack, name: str = QUEUE) -> int:
    attrs = stack.sqs().get_queue_attributes(
        QueueUrl=stack.queue_url(name),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def seed_command(count: int, seed: int) -> list[str]:
    return [
        "run",
        "--rm",
        "seed",
        "generate",
        "-n",
        str(count),
        "--seed",
        str(seed),
        "--queue-url",
        f"http://localstack:4566/000000000000/{QUEUE}",
        "--endpoint-url",
        "http://localstack:4566",
    ]


# --- the route, in order --------------------------------------------------------------------------


@pytest.mark.timeout(1200)
def test_the_image_builds_with_no_registry_but_the_base_images(stack: Stack) -> None:
    started = time.monotonic()
    built = docker("build", "-t", stack.image, ".", timeout=1100, env=stack.env)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    stack.figures["build_s"] = round(time.monotonic() - started, 1)
    # Whether the pip install step came from the builder's cache (nothing changed since a build).
    pip_step = built.stdout.split("RUN pip install", 1)[-1].split("Step ", 1)[0]
    stack.figures["pip_step_cached"] = "Using cache" in pip_step
    size = docker("image", "inspect", stack.image, "--format", "{{.Size}}").stdout.strip()
    stack.figures["image_mb"] = round(int(size) / 1e6)


@pytest.mark.timeout(600)
def test_services_come_up_and_the_flow_commits(stack: Stack) -> None:
    started = time.monotonic()
    stack.run("up", "-d", "--no-build", "localstack", "postgres", "keys", timeout=500)
    wait_for(
        lambda: (
            "healthy"
            in docker(
                "inspect", "-f", "{{.State.Health.Status}}", stack.container("localstack")
            ).stdout
        ),
        300,
        "LocalStack",
    )
    stack.figures["services_up_s"] = round(time.monotonic() - started, 1)
    seeded = stack.run("--profile", "seed", "run", "--rm", "seed", timeout=300)
    assert f"sent {SEEDED} messages" in seeded.stdout, seeded.stdout + seeded.stderr
    started = time.monotonic()
    stack.run("up", "-d", "--no-build", "flow", timeout=300)
    wait_for(lambda: sum(ledger(stack).values()) > 0, 180, "the first commit", every=0.2)
    stack.figures["flow_start_to_first_commit_s"] = round(time.monotonic() - started, 1)
    wait_for(lambda: sum(ledger(stack).values()) == SEEDED, 240, f"{SEEDED} committed")
    kinds = Counter(m.kind for m in generate(SEEDED, seed=0))  # what `logins generate` sent
    assert ledger(stack) == {
        "row": kinds["valid"],
        "rejected": kinds["malformed"],
        "duplicate": kinds["resend"],
    }
    logs = stack.run("logs", "flow").stdout
    assert "start-up check sqs: ok" in logs and "start-up check postgres: ok" in logs


def test_stats_and_an_audited_reveal_through_compose_exec(stack: Stack) -> None:
    stats = json.loads(stack.run("exec", "-T", "flow", "logins", "stats", "--json").stdout)
    counts = ledger(stack)
    assert stats["rows"] == counts["row"] and stats["rejected"] == counts["rejected"]
    assert stats["messages"] == SEEDED
    with psycopg.connect(stack.dsn()) as conn:
        token = conn.execute("SELECT masked_ip FROM user_logins LIMIT 1").fetchone()[0]  # type: ignore[index]
        audited = conn.execute("SELECT count(*) FROM pii_audit").fetchone()[0]  # type: ignore[index]
    shown = stack.run(
        "exec",
        "-T",
        "flow",
        "logins",
        "reveal",
        token,
        "--reason",
        "container test",
        "--private-key-file",
        "/keys/vault.key",
        "--json",
    )
    revealed = json.loads(shown.stdout)
    ips = {json.loads(m.body)["ip"] for m in generate(SEEDED, seed=0) if m.kind == "valid"}
    assert [r["value"] for r in revealed] and all(r["value"] in ips for r in revealed), revealed
    with psycopg.connect(stack.dsn()) as conn:
        row = conn.execute(
            "SELECT actor, reason, action FROM pii_audit ORDER BY id DESC LIMIT 1"
        ).fetchone()
        assert conn.execute("SELECT count(*) FROM pii_audit").fetchone()[0] == audited + 1  # type: ignore[index]
    assert row is not None and row[1:] == ("container test", "reveal") and row[0]


@pytest.mark.timeout(300)
def test_the_healthcheck_turns_healthy(stack: Stack) -> None:
    flow = stack.container("flow")
    status = wait_for(
        lambda: (
            (s := docker("inspect", "-f", "{{.State.Health.Status}}", flow).stdout.strip())
            in ("healthy", "unhealthy")
            and s
        ),
        200,
        "a health verdict",
        every=2,
    )
    assert status == "healthy"


@pytest.mark.timeout(900)
def test_stop_while_messages_arrive_loses_nothing(stack: Stack) -> None:
    before = sum(ledger(stack).values())
    producer = subprocess.Popen(
        [*stack.compose, "--profile", "seed", *seed_command(ARRIVING, 7)],
        cwd=REPO,
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: sum(ledger(stack).values()) >= before + 100, 180, "messages arriving")
        flow = stack.container("flow")
        assert producer.poll() is None, "the producer finished before the stop: send more"
        started = time.monotonic()
        stack.run("stop", "flow", timeout=120)
        stack.figures["stop_s"] = round(time.monotonic() - started, 1)
        state = docker(
            "inspect", "-f", "{{.State.ExitCode}} {{.State.Status}}", flow
        ).stdout.split()
        assert state == ["0", "exited"], docker("logs", "--tail", "50", flow).stderr
        output, _ = producer.communicate(timeout=600)
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()
    assert f"sent {ARRIVING} messages" in output, output
    stack.run("start", "flow", timeout=120)
    total = SEEDED + ARRIVING
    wait_for(lambda: sum(ledger(stack).values()) == total, 300, f"{total} committed")
    wait_for(lambda: queue_counts(stack) == 0, 60, "an empty queue")
    with psycopg.connect(stack.dsn()) as conn:
        tables = conn.execute(
            "SELECT (SELECT count(*) FROM user_logins)"
            " + (SELECT count(*) FROM user_logins_rejected)"
            " + (SELECT count(*) FROM user_logins_duplicates)"
        ).fetchone()
    assert tables == (total,)  # every message in exactly one outcome table, none twice


@pytest.mark.timeout(300)
def test_keygen_into_a_host_directory(stack: Stack, tmp_path: Path) -> None:
    """As docs/docker.md shows: a directory owned by uid 10001, then the pipeline's two files
    mounted read-only; and what a directory it may not write says."""
    keys = tmp_path / "keys"
    keys.mkdir()
    keys.chmod(0o755)  # what `mkdir keys` gives: readable by uid 10001, not writable
    keygen = ("run", "--rm", "-v", f"{keys}:/keys", "--entrypoint", "logins", stack.image,
              "keygen", "/keys")  # fmt: skip
    refused = docker(*keygen)
    assert refused.returncode == 2  # an unusable environment: exit 2, as every command
    assert "cannot write keys into /keys: Permission denied" in refused.stderr
    assert "runs as uid 10001" in refused.stderr and "Traceback" not in refused.stderr
    os.chown(keys, 10001, 10001)
    made = docker(*keygen)
    assert made.returncode == 0, made.stderr
    modes = {p.name: (p.stat().st_uid, oct(p.stat().st_mode & 0o777)) for p in keys.iterdir()}
    assert modes == {
        "token.key": (10001, "0o600"),
        "vault.key": (10001, "0o600"),
        "vault.pub": (10001, "0o644"),
    }
    checked = docker(
        "run",
        "--rm",
        "-v",
        f"{keys}/token.key:/keys/token.key:ro",
        "-v",
        f"{keys}/vault.pub:/keys/vault.pub:ro",
        "-e",
        "LOGINS_TOKEN_KEY_FILE=/keys/token.key",
        "-e",
        "LOGINS_VAULT_PUBLIC_KEY_FILE=/keys/vault.pub",
        "--entrypoint",
        "logins",
        stack.image,
        "check",
    )
    assert checked.returncode == 0, checked.stderr
    assert "# ok: token key id" in checked.stdout


@pytest.mark.timeout(600)
def test_the_image_against_a_query_only_endpoint(stack: Stack) -> None:
    """LocalStack before 3.0 speaks only the query protocol: here a loopback proxy that answers
    JSON calls as LocalStack 2.3.2 does, in front of the stack's LocalStack."""
    client = stack.sqs()
    queue_url = client.create_queue(QueueName="query-only")["QueueUrl"]
    sent = send_bodies(client, queue_url, (m.body for m in generate(200, seed=9)))
    proxy = SqsFaultProxy(f"http://127.0.0.1:{stack.sqs_port}")
    proxy.refuse_json()
    before = sum(ledger(stack).values())
    volume = f"{stack.env['COMPOSE_PROJECT_NAME']}_keys"
    try:
        flow = docker(
            "run",
            "--rm",
            "--network",
            "host",
            "-v",
            f"{volume}:/keys:ro",
            "-e",
            f"SQS_ENDPOINT_URL={proxy.endpoint_url}",
            "-e",
            f"SQS_QUEUE_URL={queue_url}",
            "-e",
            f"DATABASE_URL={stack.dsn()}",
            "-e",
            "AWS_REGION=us-east-1",
            "-e",
            "AWS_ACCESS_KEY_ID=test",
            "-e",
            "AWS_SECRET_ACCESS_KEY=test",
            "-e",
            "LOGINS_TOKEN_KEY_FILE=/keys/token.key",
            "-e",
            "LOGINS_VAULT_PUBLIC_KEY_FILE=/keys/vault.pub",
            "-e",
            "LOGINS_STOP_WHEN_IDLE=3",
            stack.image,
            timeout=500,
        )
    finally:
        proxy.close()
    assert flow.returncode == 0, flow.stderr[-3000:]
    assert flow.stderr.count("refused the JSON protocol") == 1, flow.stderr[-3000:]
    assert sum(ledger(stack).values()) == before + len(sent)
    assert proxy.total("refused_json") == 1
    assert queue_counts(stack, "query-only") == 0
