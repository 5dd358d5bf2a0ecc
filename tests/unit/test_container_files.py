"""The container route (Dockerfile, docker-compose.yml), checked without a Docker engine.

No image is built and nothing is started: the files are parsed and held against the project's
own contract (the environment the config reads, the queue name, the key files).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from logins.core.config import load_config
from tests.helpers import REPO

# What the flow container is configured with: exactly the names config/*.yaml reads ...
CONTRACT = {
    "LOGINS_ENV",
    "SQS_ENDPOINT_URL",
    "SQS_QUEUE_URL",
    "AWS_REGION",
    "DATABASE_URL",
    "LOGINS_TOKEN_KEY_FILE",
    "LOGINS_VAULT_PUBLIC_KEY_FILE",
}
# ... plus boto3's standard credential chain (LocalStack's dummy credentials in the dev stack).
AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}

_COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def _compose_interpolate(value: str) -> str:
    """Compose's ${VAR:-default}, resolved to the default (what a fresh checkout gets)."""
    resolved = _COMPOSE_VAR.sub(lambda m: m.group(2) or "", value)
    assert "$" not in resolved, f"unresolved compose variable in {value!r}"
    return resolved


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): _compose_interpolate(str(v)) for k, v in env.items()}


@pytest.fixture(scope="module")
def flow_env(services: dict) -> dict[str, str]:
    return _environment(services["flow"])


# --- docker-compose.yml ---------------------------------------------------------------------------


def test_compose_has_the_services(services: dict) -> None:
    assert {"localstack", "postgres", "keys", "flow"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name


def test_flow_environment_is_the_operator_contract(flow_env: dict[str, str]) -> None:
    names = set(flow_env)
    assert names - AWS_CREDENTIALS == CONTRACT
    assert flow_env["LOGINS_ENV"] == "docker"


def test_every_contract_name_is_read_by_the_config() -> None:
    referenced = {
        match.group(1)
        for name in ("base.yaml", "docker.yaml")
        for match in _COMPOSE_VAR.finditer((REPO / "config" / name).read_text())
    }
    # LOGINS_ENV selects the file itself; the rest must be interpolated somewhere.
    assert CONTRACT - {"LOGINS_ENV"} <= referenced


def test_docker_config_loads_with_the_flow_environment(
    flow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGINS_CONFIG_DIR", str(REPO / "config"))  # as the Dockerfile sets it
    config = load_config(flow_env)
    assert config.source.endpoint_url is not None
    assert urlsplit(config.source.endpoint_url).hostname == "localstack"
    assert urlsplit(config.source.queue_url).hostname == "localstack"
    assert config.source.queue_url == flow_env["SQS_QUEUE_URL"]
    assert config.source.region == flow_env["AWS_REGION"]
    dsn = config.sink.dsn.get_secret_value()
    assert dsn == flow_env["DATABASE_URL"]
    assert urlsplit(dsn).hostname == "postgres"
    assert config.tokens.key_file == Path(flow_env["LOGINS_TOKEN_KEY_FILE"])
    assert config.vault.public_key_file == Path(flow_env["LOGINS_VAULT_PUBLIC_KEY_FILE"])


def test_docker_config_defaults_match_compose(
    flow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker.yaml's own defaults point at the same services as the compose environment."""
    monkeypatch.setenv("LOGINS_CONFIG_DIR", str(REPO / "config"))
    keys_only = {k: v for k, v in flow_env.items() if k.startswith("LOGINS_")}
    config = load_config(keys_only)
    assert config.source.endpoint_url == flow_env["SQS_ENDPOINT_URL"]
    assert config.source.queue_url == flow_env["SQS_QUEUE_URL"]
    assert config.sink.dsn.get_secret_value() == flow_env["DATABASE_URL"]


def test_flow_dependencies_and_keys(services: dict) -> None:
    flow = services["flow"]
    assert flow["depends_on"]["localstack"]["condition"] == "service_healthy"
    assert flow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert flow["depends_on"]["keys"]["condition"] == "service_completed_successfully"
    assert flow["restart"] == "unless-stopped"
    assert "keys:/keys:ro" in flow["volumes"]
    assert "build" in flow
    keys = services["keys"]
    assert keys["entrypoint"][:2] == ["sh", "-c"]
    script = " ".join(keys["command"]) if isinstance(keys["command"], list) else keys["command"]
    assert "-f /keys/token.key" in script and "logins keygen /keys" in script
    assert "keys:/keys" in keys["volumes"]
    assert keys.get("image") == flow.get("image")  # the image the flow runs


def test_infrastructure_services(services: dict) -> None:
    localstack = services["localstack"]
    image, _, tag = localstack["image"].partition(":")
    assert image == "localstack/localstack" and tag and tag != "latest"
    assert _environment(localstack)["SERVICES"] == "sqs"
    assert "_localstack/health" in json.dumps(localstack["healthcheck"]["test"])
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in json.dumps(postgres["healthcheck"]["test"])
    assert any(v.split(":")[0] == "pgdata" for v in postgres["volumes"])
    assert "${POSTGRES_PASSWORD:-postgres}" in str(postgres["environment"]["POSTGRES_PASSWORD"])


def test_ports_are_published_on_loopback_only(services: dict) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_host_ports_are_variables_with_todays_defaults(services: dict) -> None:
    """A machine that already runs a PostgreSQL (or LocalStack) moves the port, not the file."""
    published = {
        name: [str(port) for port in service.get("ports", [])] for name, service in services.items()
    }
    assert published["localstack"] == ["127.0.0.1:${LOGINS_SQS_PORT:-4566}:4566"]
    assert published["postgres"] == ["127.0.0.1:${LOGINS_PG_PORT:-5432}:5432"]
    assert published["flow"] == ["127.0.0.1:${LOGINS_METRICS_PORT:-3030}:3030"]


def test_references_resolve(compose: dict, services: dict) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: {source}"
            else:
                assert source in declared, f"{name}: undeclared volume {source}"
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
            if not service.get("profiles"):
                assert not services[dep].get("profiles"), f"{name} needs profiled {dep}"


def test_seed_is_a_profile(services: dict, flow_env: dict[str, str]) -> None:
    seed = services.get("seed")
    if seed is None:
        pytest.skip("no seed service")
    assert seed["profiles"] == ["seed"]
    argv = [*seed.get("entrypoint", []), *seed["command"]]
    assert argv[:2] == ["logins", "generate"]
    assert flow_env["SQS_QUEUE_URL"] in argv and flow_env["SQS_ENDPOINT_URL"] in argv


# --- LocalStack init hook -------------------------------------------------------------------------


def test_init_script_creates_the_flows_queue(services: dict, flow_env: dict[str, str]) -> None:
    mounts = [v for v in services["localstack"]["volumes"] if "/etc/localstack/init/ready.d/" in v]
    assert len(mounts) == 1
    script = REPO / mounts[0].split(":")[0]
    assert script == REPO / "docker" / "localstack" / "init-queue.sh"
    assert os.access(script, os.X_OK), "LocalStack runs only executable hooks"
    queue = urlsplit(flow_env["SQS_QUEUE_URL"]).path.rstrip("/").rsplit("/", 1)[1]
    text = script.read_text()
    assert text.startswith("#!")
    assert re.search(rf"awslocal sqs create-queue --queue-name {re.escape(queue)}(\s|$)", text)


# --- Dockerfile -----------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continuation"
    return [(i.split(None, 1)[0].upper(), i.split(None, 1)[1]) for i in joined]


def _runtime_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in stage:
        if op == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_dockerfile_needs_no_frontend_image() -> None:
    """`# syntax=` makes BuildKit pull a frontend image from a registry before building."""
    first = (REPO / "Dockerfile").read_text().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first, re.IGNORECASE), first


def test_dockerfile_base_image() -> None:
    instructions = _instructions()
    args = {}
    for op, rest in instructions:
        if op == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    images = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
        for op, rest in instructions
        if op == "FROM"
    ]
    assert images and all(image.startswith("python:3.11-slim") for image in images)


def test_dockerfile_environment() -> None:
    env = _env(_runtime_stage())
    assert env["LOGINS_ENV"] == "docker"
    assert env["LOGINS_CONFIG_DIR"] == "/app/config"
    assert env["PYTHONUNBUFFERED"] == "1"
    secret_like = [k for k in env if re.search(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|DATABASE_URL", k)]
    assert not secret_like


def test_dockerfile_copies_config_into_the_config_dir() -> None:
    stage = _runtime_stage()
    config_dir = _env(stage)["LOGINS_CONFIG_DIR"]
    copies = [shlex.split(args) for op, args in stage if op == "COPY"]
    assert any(c[-2].rstrip("/") == "config" and c[-1].rstrip("/") == config_dir for c in copies), (
        copies
    )


def test_dockerfile_runs_as_non_root() -> None:
    users = [args.split(":")[0] for op, args in _runtime_stage() if op == "USER"]
    assert users, "no USER in the runtime stage"
    assert users[-1] not in {"root", "0"}


def test_dockerfile_entrypoint_and_cmd() -> None:
    stage = _runtime_stage()
    entrypoint = [json.loads(args) for op, args in stage if op == "ENTRYPOINT"]
    cmd = [json.loads(args) for op, args in stage if op == "CMD"]
    assert entrypoint[-1] == ["python", "-m", "bytewax.run"]
    assert cmd[-1] == ["flows.logins", "-w", "2"]


def _ignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(path, p)
        or fnmatch.fnmatch(path, p.removeprefix("**/"))
        or fnmatch.fnmatch(Path(path).name, p.removeprefix("**/"))
        for p in patterns
    )


def test_dockerfile_copies_no_key_and_only_context_files() -> None:
    patterns = _ignore_patterns()
    for op, args in _instructions():
        if op not in {"COPY", "ADD"}:
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        if any(p.startswith("--from") for p in shlex.split(args)):
            continue
        for source in parts[:-1]:
            assert not re.search(r"\.(key|pub|pem)$|(^|/)(keys|\.keys|\.env)(/|$)", source), source
            assert source not in {".", "./"}, "COPY . would bring whatever lies in the checkout"
            if "[" in source or "*" in source:
                continue  # optional glob (README.m[d])
            assert (REPO / source).exists(), source
            assert not _ignored(source.rstrip("/"), patterns), f"{source} is in .dockerignore"


def test_dockerignore_excludes_keys_and_local_state() -> None:
    patterns = _ignore_patterns()
    for path in (
        ".venv",
        ".git",
        ".demo",
        ".env",
        "token.key",
        "vault.key",
        "vault.pub",
        ".keys/token.key",
        "x/vault.pem",
        ".pytest_cache",
        ".hypothesis",
    ):
        assert _ignored(path, patterns), f"{path} is not excluded"
    for needed in ("pyproject.toml", "logins", "flows", "connectors", "config", "README.md"):
        assert not _ignored(needed, patterns), f"{needed} must stay in the build context"
