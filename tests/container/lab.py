"""Flow containers on one Docker network with one PostgreSQL and one LocalStack SQS, as a
Kubernetes namespace would hold them: the container-test's cluster checks and the container
throughput figures (tests/container/throughput.py) both run on this.

Needs a Docker engine (../shared/tools/container-lab setup gives one, with the stand-in base
images). Every container runs as the image's non-root user with a read-only root filesystem, no
capabilities and a tmpfs /tmp, as the Kubernetes manifests run it; the key files are mounted one
by one (token.key, vault.pub; never vault.key) and the YAML is the local overlay's ConfigMap.
PostgreSQL and LocalStack publish their ports on 127.0.0.1 only (random ports), for the host's
seeding and ledger checks; the flow containers talk to them, and to each other, by name.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import psycopg
from psycopg import sql

from logins.core.keys import generate_keys
from tests.helpers import REPO

IMAGE = os.environ.get("LOGINS_TEST_IMAGE", "logins-etl:container-test")
POSTGRES_IMAGE = "postgres:16"
LOCALSTACK_IMAGE = "localstack/localstack:3.8"
APP_UID = 10001  # the image's `app` user
BYTEWAX_PORT = 9999
KUBE_CONFIG = REPO / "deploy" / "kubernetes" / "overlays" / "local" / "logins.yaml"
# Over the local overlay's ConfigMap: a short visibility timeout, so what a killed container
# held comes back within the test, and short long-polls, so batch mode ends promptly.
TEST_CONFIG = "extends: kube.yaml\nsource:\n  visibility_timeout: 10\n  wait_time_seconds: 1\n"


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    """Run the docker CLI; its stdout, or an error with its stderr."""
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the legacy builder: no registry needed
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


def build_image(tag: str = IMAGE) -> str:
    """The project's image from its Dockerfile (cached layers make a rebuild quick)."""
    if shutil.which("docker") is None:
        raise RuntimeError("no docker CLI: run ../shared/tools/container-lab setup first")
    docker("build", "-q", "-t", tag, str(REPO), timeout=900)
    return tag


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # the service is still starting
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout}s (last error: {last})")


class Lab:
    """One network, PostgreSQL and LocalStack on it, and the flow containers started on it."""

    def __init__(self, image: str, work: Path) -> None:
        self.image = image
        self.work = work
        self.prefix = f"logins-lab-{os.getpid()}"
        self.network = f"{self.prefix}-net"
        self.password = secrets.token_hex(12)  # a throwaway server's, made per run
        self._containers: list[str] = []
        self._ids: dict[str, str] = {}  # name -> container id, for the cgroup readings
        self.keys = self._key_files()
        self.config = self._config_dir()

    # --- services ---------------------------------------------------------------------------

    def start(self) -> None:
        docker("network", "create", self.network)
        self.run(
            "postgres",
            ["-e", f"POSTGRES_PASSWORD={self.password}", "-p", "127.0.0.1::5432"],
            POSTGRES_IMAGE,
            [],
        )
        self.run(
            "localstack",
            ["-e", "SERVICES=sqs", "-e", "AWS_DEFAULT_REGION=us-east-1", "-p", "127.0.0.1::4566"],
            LOCALSTACK_IMAGE,
            [],
        )
        self.pg_port = self._host_port("postgres", 5432)
        self.sqs_port = self._host_port("localstack", 4566)
        _wait(self._postgres_answers, 90, "PostgreSQL")
        health = f"http://127.0.0.1:{self.sqs_port}/_localstack/health"
        _wait(lambda: b'"sqs"' in urllib.request.urlopen(health, timeout=2).read(), 120, "SQS")

    def _postgres_answers(self) -> bool:
        with psycopg.connect(self.admin_dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def close(self) -> None:
        for name in reversed(self._containers):
            docker("rm", "-f", name, check=False, timeout=60)
        docker("network", "rm", self.network, check=False)

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.pg_port}/postgres"

    def database(self, name: str) -> tuple[str, str]:
        """A fresh database: (DSN from the host, DSN from the containers)."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        host = f"postgresql://postgres:{self.password}@127.0.0.1:{self.pg_port}/{name}"
        inside = f"postgresql://postgres:{self.password}@postgres:5432/{name}"
        return host, inside

    def sqs(self) -> Any:
        return boto3.client(
            "sqs",
            endpoint_url=f"http://127.0.0.1:{self.sqs_port}",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def queue(self, name: str) -> tuple[str, str]:
        """A fresh queue: (its URL for the host's client, its URL from the containers)."""
        url = self.sqs().create_queue(QueueName=name)["QueueUrl"]
        return url, f"http://localstack:4566/000000000000/{name}"

    def in_queue(self, url: str) -> tuple[int, int]:
        """(visible, in flight)."""
        attributes = self.sqs().get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    # --- the flow ---------------------------------------------------------------------------

    def env(self, database: str, queue: str, **extra: str) -> dict[str, str]:
        """The variables the Kubernetes pods get (ConfigMap logins-env + Secrets), for here."""
        return {
            "LOGINS_CONFIG": "/etc/logins/logins.yaml",
            "LOGINS_TOKEN_KEY_FILE": "/keys/token.key",
            "LOGINS_VAULT_PUBLIC_KEY_FILE": "/keys/vault.pub",
            "LOGINS_LOG_FORMAT": "text",
            "BYTEWAX_DATAFLOW_API_ENABLED": "1",
            "BYTEWAX_DATAFLOW_API_CACHE_PATH": "/tmp",
            "SQS_ENDPOINT_URL": "http://localstack:4566",
            "SQS_QUEUE_URL": queue,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",  # LocalStack takes any key
            "AWS_SECRET_ACCESS_KEY": "test",
            "DATABASE_URL": database,
            **extra,
        }

    def migrate(self, env: dict[str, str]) -> None:
        """What the Job logins-migrate runs, in a container of the same image."""
        name = self.run("migrate", self._app_options(env, "logins"), self.image, ["migrate"])
        code = self.wait(name, 120)
        if code != 0:
            raise RuntimeError(f"logins migrate exited {code}: {self.logs(name)[-2000:]}")

    def flow(self, name: str, env: dict[str, str], args: Sequence[str]) -> str:
        """`python -m bytewax.run ARGS` in a container reachable as `name` on the network."""
        return self.run(name, self._app_options(env, None), self.image, list(args))

    def cluster_addresses(self, names: Sequence[str]) -> str:
        return ";".join(f"{name}:{BYTEWAX_PORT}" for name in names)

    def kill(self, name: str) -> None:
        docker("kill", "--signal", "KILL", self.full(name))

    def restart(self, name: str) -> None:
        """The same container again (same args and env), as Kubernetes restarts a pod's."""
        docker("start", self.full(name))

    def running(self, name: str) -> bool:
        return docker("inspect", "-f", "{{.State.Running}}", self.full(name)) == "true"

    def wait(self, name: str, timeout: float) -> int:
        """Its exit code once it stopped by itself."""
        return int(docker("wait", self.full(name), timeout=timeout))

    def logs(self, name: str) -> str:
        result = subprocess.run(
            ["docker", "logs", self.full(name)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.stdout + result.stderr

    def usage(self, name: str) -> tuple[float, int] | None:
        """(CPU seconds, peak memory bytes) of a running container, from its cgroup (v1, the
        cgroupfs driver container-lab sets up); None once it has exited."""
        cid = self._ids.get(name) or docker("inspect", "-f", "{{.Id}}", self.full(name))
        self._ids[name] = cid
        try:
            cpu = int(Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage").read_text())
            peak = Path(f"/sys/fs/cgroup/memory/docker/{cid}/memory.max_usage_in_bytes")
            return cpu / 1e9, int(peak.read_text())
        except (OSError, ValueError):
            return None

    def full(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def _app_options(self, env: dict[str, str], entrypoint: str | None) -> list[str]:
        options = [
            "--read-only",
            "--tmpfs",
            "/tmp:size=64m",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "-v",
            f"{self.keys / 'token.key'}:/keys/token.key:ro",
            "-v",
            f"{self.keys / 'vault.pub'}:/keys/vault.pub:ro",
            "-v",
            f"{self.config}:/etc/logins:ro",
        ]
        if entrypoint:
            options += ["--entrypoint", entrypoint]
        for key, value in env.items():
            options += ["-e", f"{key}={value}"]
        return options

    def run(self, name: str, options: list[str], image: str, args: list[str]) -> str:
        """`docker run -d` on the network, reachable there as `name`; removed by close()."""
        full = self.full(name)
        docker("rm", "-f", full, check=False)
        self._ids.pop(name, None)
        self._containers.append(full)
        docker(
            "run", "-d", "--name", full, "--network", self.network, "--network-alias", name,
            "--hostname", name, *options, image, *args,
        )  # fmt: skip
        return name

    def _host_port(self, name: str, port: int) -> int:
        mapping = json.loads(
            docker("inspect", "-f", "{{json .NetworkSettings.Ports}}", self.full(name))
        )
        return int(mapping[f"{port}/tcp"][0]["HostPort"])

    def _key_files(self) -> Path:
        """token.key and vault.pub, readable by the image's user only (like the Secret's files);
        vault.key, which keygen also writes, is deleted: the containers never see it."""
        directory = self.work / "keys"
        files = generate_keys(directory)
        files["vault.key"].unlink()
        for name in ("token.key", "vault.pub"):
            os.chown(files[name], APP_UID, APP_UID)
            files[name].chmod(0o400)
        directory.chmod(0o755)
        return directory

    def _config_dir(self) -> Path:
        directory = self.work / "config"
        directory.mkdir(parents=True)
        (directory / "kube.yaml").write_text(KUBE_CONFIG.read_text())
        (directory / "logins.yaml").write_text(TEST_CONFIG)
        directory.chmod(0o755)
        return directory


@contextmanager
def lab(work: Path, image: str | None = None) -> Iterator[Lab]:
    """A started Lab, removed afterwards whatever happens (its key files too)."""
    work.mkdir(parents=True, exist_ok=True)
    own = Path(tempfile.mkdtemp(prefix="lab-", dir=work))
    try:
        instance = Lab(image or build_image(), own)
        try:
            instance.start()
            yield instance
        finally:
            instance.close()
    finally:
        shutil.rmtree(own, ignore_errors=True)
