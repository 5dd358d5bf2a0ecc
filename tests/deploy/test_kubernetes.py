"""deploy/kubernetes, checked offline (no cluster): every overlay renders; every resource
validates against the published schemas (Kubernetes through kubernetes-validate; KEDA's and the
Prometheus Operator's CRDs, vendored); the manifests keep the promises of docs/kubernetes.md
(tests/kube_contract.py); and the configuration the pods would start with loads."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from logins.core.config import load_config
from logins.core.pipeline_keys import load_secrets
from tests import kube_contract as contract
from tests.helpers import make_keys
from tests.kube import KUBE, OVERLAYS, REPO, RenderError, render, validate

Resource = dict[str, Any]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Resource]]:
    return {overlay: render(KUBE / "overlays" / overlay) for overlay in OVERLAYS}


def kinds(resources: list[Resource]) -> set[str]:
    return {r["kind"] for r in resources}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_resource_validates(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    resources = rendered[overlay]
    assert [p for r in resources for p in validate(r)] == []
    assert {"ServiceAccount", "ConfigMap", "PodDisruptionBudget", "Job"} <= kinds(resources)


def test_each_overlay_runs_the_route_it_names(rendered: dict[str, list[Resource]]) -> None:
    keda = {"Deployment", "ScaledObject", "TriggerAuthentication"}
    assert keda | {"PodMonitor"} <= kinds(rendered["prod"])
    assert "StatefulSet" not in kinds(rendered["prod"])
    assert keda <= kinds(rendered["local"])
    cluster = rendered["prod-cluster"]
    assert {"StatefulSet", "Service", "PodMonitor"} <= kinds(cluster)
    assert not keda & kinds(cluster), "the cluster route still has the consumers"
    assert [w["kind"] for w in contract.flow_workloads(cluster)] == ["StatefulSet"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_manifests_keep_their_promises(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    assert contract.problems(rendered[overlay]) == []


# --- the same checks catch broken manifests ------------------------------------------------------


def _one(resources: list[Resource], kind: str) -> Resource:
    (resource,) = contract.by_kind(resources, kind)
    return resource


def _pod(resources: list[Resource]) -> Resource:
    return contract.flow_workloads(resources)[0]["spec"]["template"]["spec"]


def _container(resources: list[Resource]) -> Resource:
    return contract.flow_container(contract.flow_workloads(resources)[0])


def _trigger(resources: list[Resource]) -> Resource:
    return _one(resources, "ScaledObject")["spec"]["triggers"][0]


SCHEMA_BREAKS: dict[str, tuple[str, Callable[[list[Resource]], Any], str]] = {
    "misspelt pod field": (
        "prod",
        lambda rs: _pod(rs).update(terminationGracePeriod=75),
        "Additional properties are not allowed ('terminationGracePeriod'",
    ),
    "replicas not a number": (
        "prod-cluster",
        lambda rs: _one(rs, "StatefulSet")["spec"].update(replicas="three"),
        "'three' is not of type 'integer'",
    ),
    "ScaledObject unknown field": (
        "prod",
        lambda rs: _one(rs, "ScaledObject")["spec"].update(maxReplicas=8),
        "Additional properties are not allowed ('maxReplicas'",
    ),
    "ScaledObject wrong type": (
        "prod",
        lambda rs: _one(rs, "ScaledObject")["spec"].update(minReplicaCount="one"),
        "'one' is not of type 'integer'",
    ),
    "aws-sqs-queue metadata typo": (
        "prod",
        lambda rs: _trigger(rs)["metadata"].update(queueLenght="5"),
        "queueLenght: not a key of the aws-sqs-queue scaler",
    ),
    "TriggerAuthentication unknown provider": (
        "prod",
        lambda rs: _one(rs, "TriggerAuthentication")["spec"]["podIdentity"].update(
            provider="aws-iam"
        ),
        "'aws-iam' is not one of",
    ),
    "PodMonitor unknown field": (
        "prod",
        lambda rs: _one(rs, "PodMonitor")["spec"]["podMetricsEndpoints"][0].update(every="30s"),
        "Additional properties are not allowed ('every'",
    ),
    "a kind with no schema": (
        "prod",
        lambda rs: rs.append({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {}}),
        "no schema to validate it",
    ),
}


@pytest.mark.parametrize("case", SCHEMA_BREAKS)
def test_a_broken_resource_is_rejected(rendered: dict[str, list[Resource]], case: str) -> None:
    overlay, breaks, expected = SCHEMA_BREAKS[case]
    resources = copy.deepcopy(rendered[overlay])
    breaks(resources)
    found = [p for r in resources for p in validate(r)]
    assert any(expected in p for p in found), found


def _literal_dsn(rs: list[Resource]) -> None:
    env = _container(rs)["env"]
    env[:] = [v for v in env if v["name"] != "DATABASE_URL"]
    env.append({"name": "DATABASE_URL", "value": "postgresql://logins:hunter2@db:5432/logins"})


PROMISE_BREAKS: dict[str, tuple[str, Callable[[list[Resource]], Any], str]] = {
    "writable root filesystem": (
        "prod",
        lambda rs: _container(rs)["securityContext"].update(readOnlyRootFilesystem=False),
        "readOnlyRootFilesystem must be true",
    ),
    "root allowed": (
        "prod-cluster",
        lambda rs: _pod(rs)["securityContext"].pop("runAsNonRoot"),
        "must run as a non-root user",
    ),
    "probe on another port": (
        "prod",
        lambda rs: _container(rs)["livenessProbe"]["httpGet"].update(port=8080),
        "livenessProbe must be an httpGet on the API port",
    ),
    "memory below the measured peak": (
        "prod",
        lambda rs: _container(rs)["resources"]["requests"].update(memory="64Mi"),
        f"is below the measured peak {contract.measured_peak_rss_mb(2):.0f} MB",
    ),
    "the vault's private key mounted": (
        "prod",
        lambda rs: _pod(rs)["volumes"][1]["secret"]["items"].append(
            {"key": "vault.key", "path": "vault.key"}
        ),
        "projects more than",
    ),
    "a password in a manifest": ("prod", _literal_dsn, "DATABASE_URL has a literal value"),
    "a Secret with values": (
        "local",
        lambda rs: rs.append(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "data": {}}
        ),
        "a Secret with its values is in the manifests",
    ),
    "replicas and -a disagree": (
        "prod-cluster",
        lambda rs: _one(rs, "StatefulSet")["spec"].update(replicas=4),
        "BYTEWAX_ADDRESSES must be",
    ),
    "peers cannot find each other before ready": (
        "prod-cluster",
        lambda rs: contract.named(rs, "Service", "logins-cluster")["spec"].update(  # type: ignore[index]
            publishNotReadyAddresses=False
        ),
        "must publish not-ready addresses",
    ),
    "ordered start-up": (
        "prod-cluster",
        lambda rs: _one(rs, "StatefulSet")["spec"].update(podManagementPolicy="OrderedReady"),
        "podManagementPolicy must be Parallel",
    ),
    "KEDA reads another region": (
        "prod",
        lambda rs: _trigger(rs)["metadata"].update(awsRegion="us-west-2"),
        "awsRegion us-west-2 != the pods' AWS_REGION",
    ),
    "no PodDisruptionBudget": (
        "prod",
        lambda rs: rs.remove(_one(rs, "PodDisruptionBudget")),
        "no PodDisruptionBudget selects its pods",
    ),
    "migrations as the pipeline": (
        "prod",
        lambda rs: _one(rs, "Job")["spec"]["template"]["spec"]["containers"][0]["env"][0][
            "valueFrom"
        ]["secretKeyRef"].update(name="logins-database"),
        "must come from the owner's own Secret",
    ),
}


@pytest.mark.parametrize("case", PROMISE_BREAKS)
def test_a_broken_promise_is_caught(rendered: dict[str, list[Resource]], case: str) -> None:
    overlay, breaks, expected = PROMISE_BREAKS[case]
    resources = copy.deepcopy(rendered[overlay])
    breaks(resources)
    found = contract.problems(resources)
    assert any(expected in p for p in found), found


def test_a_secrets_manager_reference_is_not_a_secret_value(
    rendered: dict[str, list[Resource]],
) -> None:
    """DATABASE_URL may name a secret the flow resolves at start (docs/kubernetes.md)."""
    resources = copy.deepcopy(rendered["prod"])
    env = _container(resources)["env"]
    env[:] = [v for v in env if v["name"] != "DATABASE_URL"]
    env.append({"name": "DATABASE_URL", "value": "secretsmanager:logins/database-url"})
    assert contract.problems(resources) == []


def test_a_broken_kustomization_does_not_render(tmp_path: Path) -> None:
    prod = os.path.relpath(KUBE / "overlays" / "prod", tmp_path)  # kustomize wants it relative
    (tmp_path / "kustomization.yaml").write_text(f"resources:\n  - {prod}\n  - missing.yaml\n")
    with pytest.raises(RenderError, match=r"missing\.yaml"):
        render(tmp_path)


# --- the configuration the pods start with -------------------------------------------------------


def runtime_env(
    resources: list[Resource], pod: Resource, container: Resource, root: Path, **secrets: str
) -> dict[str, str]:
    """The container's environment as the flow would see it, with each volume the container
    mounts laid out under `root` (ConfigMap files, freshly generated key files for the key
    Secret) and the paths rewritten to there. The image's /app/config is the repo's config/."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    moved: dict[str, str] = {}
    for mount in container.get("volumeMounts", []):
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True)
        moved[mount["mountPath"]] = str(target)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = contract.named(resources, "ConfigMap", volume["configMap"]["name"])
            for key, text in (data or {}).get("data", {}).items():
                text = text.replace("extends: /app/config/", f"extends: {REPO / 'config'}/")
                (target / key).write_text(text)
        elif "secret" in volume:
            keys = make_keys(root / "generated")
            for item in volume["secret"]["items"]:
                (target / item["path"]).write_bytes(keys[item["key"]].read_bytes())
                # as the kubelet does: the volume's defaultMode (0440 with fsGroup)
                (target / item["path"]).chmod(volume["secret"].get("defaultMode", 0o644))
    env: dict[str, str] = {}
    for name, value in contract.env_of(resources, container).items():
        if isinstance(value, str):
            for mount_path, there in moved.items():
                if value.startswith(mount_path + "/"):
                    value = there + value[len(mount_path) :]
                    break
            env[name] = value
        elif isinstance(value, dict) and "secretKeyRef" in value:
            env[name] = secrets[value["secretKeyRef"]["name"]]
        elif isinstance(value, dict) and "fieldRef" in value:
            env[name] = "logins-cluster-1"
    return env


def test_the_image_ships_the_config_the_configmaps_extend() -> None:
    assert "COPY config/ /app/config/" in (REPO / "Dockerfile").read_text()
    for overlay in ("base", "overlays/local"):
        text = (KUBE / overlay / "logins.yaml").read_text()
        (extends,) = [line for line in text.splitlines() if line.startswith("extends:")]
        assert extends.startswith("extends: /app/config/")
        assert (REPO / "config" / extends.removeprefix("extends: /app/config/")).is_file()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pods_config_loads_and_their_grace_outlasts_the_shutdown(
    rendered: dict[str, list[Resource]], overlay: str, tmp_path: Path
) -> None:
    resources = rendered[overlay]
    for i, workload in enumerate(contract.flow_workloads(resources)):
        pod = workload["spec"]["template"]["spec"]
        env = runtime_env(
            resources,
            pod,
            contract.flow_container(workload),
            tmp_path / str(i),
            **{"logins-database": "postgresql://pipeline@db.invalid:5432/logins"},
        )
        config = load_config(env)
        load_secrets(config)  # the mounted token.key and vault.pub are what the flow reads
        assert config.sink.migrate is False, "the Job migrates; the pipeline's role cannot"
        stop = config.shutdown_timeout_seconds + config.source.wait_time_seconds
        assert pod["terminationGracePeriodSeconds"] > stop
        if overlay == "local":
            assert config.source.endpoint_url == "http://localstack:4566"
        else:
            assert config.source.endpoint_url is None
            assert config.shutdown_timeout_seconds == 45


@pytest.mark.integration
def test_the_migrate_job_migrates_with_its_own_env(
    rendered: dict[str, list[Resource]], database_url: str, tmp_path: Path
) -> None:
    """The Job's command, env and ConfigMap as written, against a real PostgreSQL: it needs
    no key file (none is mounted) and no queue."""
    resources = rendered["prod"]
    job = contract.by_kind(resources, "Job")[0]["spec"]["template"]["spec"]
    (container,) = job["containers"]
    env = runtime_env(
        resources, job, container, tmp_path, **{"logins-database-owner": database_url}
    )
    assert not Path(env["LOGINS_TOKEN_KEY_FILE"]).exists()
    program, *args = container["command"]
    command = [str(Path(sys.executable).parent / program), *args]
    result = subprocess.run(
        command,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with psycopg.connect(database_url) as conn:
        query = "SELECT to_regclass('logins_ledger')::text, to_regclass('user_logins')::text"
        row = conn.execute(query).fetchone()
    assert row == ("logins_ledger", "user_logins")


def test_the_local_queue_hook_is_the_compose_one() -> None:
    """overlays/local carries a copy (kustomize reads files below its root only)."""
    copy_ = (KUBE / "overlays" / "local" / "init-queue.sh").read_text()
    assert copy_ == (REPO / "docker" / "localstack" / "init-queue.sh").read_text()
