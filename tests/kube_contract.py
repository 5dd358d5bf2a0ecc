"""What the rendered Kubernetes manifests promise beyond their schemas, as checks that return
problems (so a test can show each check catching a broken manifest).

The promises are those of docs/kubernetes.md: flow pods non-root with a read-only root
filesystem, probed on Bytewax's API port, sized from the benchmark's measured memory, the key
files mounted without the vault's private key, no secret value in any manifest, a cluster whose
`-a` list matches its replicas, a ScaledObject that reads the queue the pods read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from tests.helpers import REPO

FLOW_COMPONENTS = {"consumer", "cluster"}
API_PORT = 3030
BYTEWAX_PORT = 9999
KEY_FILES = {"token.key", "vault.pub"}
# env names that would hold a credential if given a literal value (paths to files are fine)
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|DATABASE_URL|TOKEN|_KEY$|CREDENTIAL", re.I)
_CREDENTIALS_IN_URL = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
# a reference the flow resolves at start through AWS (the secrets-from-AWS configuration)
_SECRET_REFERENCE = re.compile(r"^(secretsmanager:|ssm:/)")
_MIB = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}

Resource = dict[str, Any]


def by_kind(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def named(resources: list[Resource], kind: str, name: str) -> Resource | None:
    for resource in by_kind(resources, kind):
        if resource["metadata"]["name"] == name:
            return resource
    return None


def flow_workloads(resources: list[Resource]) -> list[Resource]:
    """The Deployments and StatefulSets that run the flow."""
    return [
        r
        for r in resources
        if r["kind"] in ("Deployment", "StatefulSet")
        and r["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        in FLOW_COMPONENTS
    ]


def flow_container(workload: Resource) -> Resource:
    (container,) = [c for c in workload["spec"]["template"]["spec"]["containers"]]
    return container


def env_of(resources: list[Resource], container: Resource) -> dict[str, Any]:
    """The container's environment: ConfigMap values resolved, other references kept as they
    are written (a secretKeyRef stays a dict, so nothing here ever holds a secret)."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config_map = named(resources, "ConfigMap", source["configMapRef"]["name"])
            env.update((config_map or {}).get("data", {}))
        elif "secretRef" in source:
            env[f"<secret {source['secretRef']['name']}>"] = source
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", var.get("valueFrom"))
    return env


def measured_peak_rss_mb(workers: int) -> float:
    """docs/benchmarks.md's peak RSS over the 1,000,000-message run with this many workers."""
    text = (REPO / "docs" / "benchmarks.md").read_text()
    pattern = (
        r"\| peak RSS of the flow process at [\d,]+ messages \(1 worker\) \| ([\d,]+) MB"
        if workers == 1
        else rf"\| peak RSS at [\d,]+ messages, {workers} workers \| ([\d,]+) MB"
    )
    match = re.search(pattern, text)
    if not match:
        raise LookupError(f"docs/benchmarks.md has no peak RSS for {workers} workers")
    return float(match.group(1).replace(",", ""))


def _mib(quantity: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i)", quantity)
    assert match is not None, quantity
    number, unit = match.groups()
    return float(number) * _MIB[unit]


def _workers(container: Resource) -> int:
    args = container.get("args", [])
    return int(args[args.index("-w") + 1]) if "-w" in args else 1


def _pod_problems(resources: list[Resource], workload: Resource) -> Iterator[str]:
    name = f"{workload['kind']}/{workload['metadata']['name']}"
    pod = workload["spec"]["template"]["spec"]
    container = flow_container(workload)
    security = pod.get("securityContext", {})
    if security.get("runAsNonRoot") is not True or not security.get("runAsUser"):
        yield f"{name}: the pod must run as a non-root user (runAsNonRoot, runAsUser)"
    own = container.get("securityContext", {})
    if own.get("readOnlyRootFilesystem") is not True:
        yield f"{name}: readOnlyRootFilesystem must be true"
    if own.get("allowPrivilegeEscalation") is not False:
        yield f"{name}: allowPrivilegeEscalation must be false"
    if "ALL" not in own.get("capabilities", {}).get("drop", []):
        yield f"{name}: capabilities must drop ALL"

    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if ports.get("api") != API_PORT:
        yield f"{name}: the container port `api` must be Bytewax's API port {API_PORT}"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        port = container.get(probe, {}).get("httpGet", {}).get("port")
        if port not in ("api", API_PORT):
            yield f"{name}: {probe} must be an httpGet on the API port"
    env = env_of(resources, container)
    if env.get("BYTEWAX_DATAFLOW_API_ENABLED") != "1":
        yield f"{name}: BYTEWAX_DATAFLOW_API_ENABLED=1 is needed for the probes and metrics"

    workers = _workers(container)
    peak = measured_peak_rss_mb(workers)
    memory = container.get("resources", {})
    request = memory.get("requests", {}).get("memory")
    limit = memory.get("limits", {}).get("memory")
    if not request or _mib(request) * 1.048576 < peak:
        yield f"{name}: memory request {request} is below the measured peak {peak:.0f} MB"
    if not limit or _mib(limit) * 1.048576 < 2 * peak:
        yield f"{name}: memory limit {limit} leaves less than 2x the measured {peak:.0f} MB"
    if not memory.get("requests", {}).get("cpu"):
        yield f"{name}: no CPU request"

    yield from _key_problems(name, pod, container, env)


def _key_problems(
    name: str, pod: Resource, container: Resource, env: dict[str, Any]
) -> Iterator[str]:
    """The key files are the Secret's token.key and vault.pub, where the config looks (or
    references to Secrets Manager / SSM)."""
    secret_volumes = {v["name"]: v["secret"] for v in pod.get("volumes", []) if "secret" in v}
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    files: set[str] = set()
    for volume, secret in secret_volumes.items():
        items = {i["path"]: i["key"] for i in secret.get("items", [])}
        if not items:
            yield f"{name}: Secret volume {volume} must list its items (only {KEY_FILES})"
        if set(items.values()) - KEY_FILES or set(items) - KEY_FILES:
            yield f"{name}: Secret volume {volume} projects more than {sorted(KEY_FILES)}"
        if volume in mounts:
            files |= {f"{mounts[volume]}/{path}" for path in items}
    for var in ("LOGINS_TOKEN_KEY_FILE", "LOGINS_VAULT_PUBLIC_KEY_FILE"):
        if _SECRET_REFERENCE.match(str(env.get(var))):
            continue  # fetched from AWS at start instead of a file
        if env.get(var) not in files:
            yield f"{name}: {var}={env.get(var)} is not a mounted Secret file ({sorted(files)})"


def _secret_hygiene(resources: list[Resource]) -> Iterator[str]:
    """Secrets are referenced by name; no value of one is in a manifest."""
    for resource in resources:
        name = f"{resource['kind']}/{resource['metadata']['name']}"
        if resource["kind"] == "Secret":
            yield f"{name}: a Secret with its values is in the manifests; reference it by name"
        if resource["kind"] == "ConfigMap":
            for key, value in resource.get("data", {}).items():
                if _SECRET_NAME.search(key) and not key.endswith("_FILE"):
                    yield f"{name}: {key} looks like a secret in a ConfigMap"
                if _CREDENTIALS_IN_URL.search(str(value)):
                    yield f"{name}: {key} holds a URL with a password"
        spec = resource.get("spec", {})
        pod = spec.get("template", {}).get("spec", {}) if isinstance(spec, dict) else {}
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for var in container.get("env", []):
                literal = "value" in var and not _SECRET_REFERENCE.match(str(var["value"]))
                secret_name = _SECRET_NAME.search(var["name"]) and not var["name"].endswith("_FILE")
                if literal and secret_name:
                    yield f"{name}: {var['name']} has a literal value; use a secretKeyRef"
                if literal and _CREDENTIALS_IN_URL.search(str(var["value"])):
                    yield f"{name}: {var['name']} holds a URL with a password"
        if "vault.key" in str(resource):
            yield f"{name}: mentions vault.key, the vault's private key"


def _selects(selector: Resource, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        if expression["operator"] != "In" or labels.get(expression["key"]) not in set(
            expression["values"]
        ):
            return False
    return True


def _coverage(resources: list[Resource], workload: Resource) -> Iterator[str]:
    name = f"{workload['kind']}/{workload['metadata']['name']}"
    labels = workload["spec"]["template"]["metadata"]["labels"]
    budgets = by_kind(resources, "PodDisruptionBudget")
    if not any(_selects(p["spec"]["selector"], labels) for p in budgets):
        yield f"{name}: no PodDisruptionBudget selects its pods"
    monitors = by_kind(resources, "PodMonitor")
    if monitors and not any(
        _selects(m["spec"]["selector"], labels)
        and any(e.get("port") == "api" for e in m["spec"]["podMetricsEndpoints"])
        for m in monitors
    ):
        yield f"{name}: no PodMonitor scrapes its pods on the port `api`"


def _cluster_problems(resources: list[Resource], sts: Resource) -> Iterator[str]:
    """`-i` from the ordinal and `-a` from the headless Service, one address per replica."""
    name = f"StatefulSet/{sts['metadata']['name']}"
    spec = sts["spec"]
    env = env_of(resources, flow_container(sts))
    if spec.get("podManagementPolicy") != "Parallel":
        yield f"{name}: podManagementPolicy must be Parallel (a process waits for its peers)"
    if env.get("BYTEWAX_STATEFULSET_NAME") != sts["metadata"]["name"]:
        yield f"{name}: BYTEWAX_STATEFULSET_NAME must be the StatefulSet's name (for -i)"
    if env.get("BYTEWAX_POD_NAME") != {"fieldRef": {"fieldPath": "metadata.name"}}:
        yield f"{name}: BYTEWAX_POD_NAME must come from metadata.name (for -i)"
    service = named(resources, "Service", spec["serviceName"])
    if service is None or service["spec"].get("clusterIP") != "None":
        yield f"{name}: serviceName must be a headless Service in the manifests"
    elif not service["spec"].get("publishNotReadyAddresses"):
        yield f"{name}: its Service must publish not-ready addresses (peers meet before ready)"
    elif not any(p["port"] == BYTEWAX_PORT for p in service["spec"]["ports"]):
        yield f"{name}: its Service has no port {BYTEWAX_PORT}"
    expected = [
        f"{sts['metadata']['name']}-{i}.{spec['serviceName']}:{BYTEWAX_PORT}"
        for i in range(spec.get("replicas", 1))
    ]
    if str(env.get("BYTEWAX_ADDRESSES", "")).split(";") != expected:
        yield f"{name}: BYTEWAX_ADDRESSES must be {';'.join(expected)} (one per replica)"
    ports = {p["containerPort"] for p in flow_container(sts).get("ports", [])}
    if BYTEWAX_PORT not in ports:
        yield f"{name}: the container does not expose {BYTEWAX_PORT}"


def _scaler_problems(resources: list[Resource], scaled: Resource) -> Iterator[str]:
    name = f"ScaledObject/{scaled['metadata']['name']}"
    spec = scaled["spec"]
    target = named(resources, "Deployment", spec["scaleTargetRef"]["name"])
    if target is None:
        yield f"{name}: scaleTargetRef names no Deployment in the manifests"
        return
    if not 0 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100):
        yield f"{name}: minReplicaCount must be between 0 and maxReplicaCount"
    env = env_of(resources, flow_container(target))
    for trigger in spec["triggers"]:
        if trigger["type"] != "aws-sqs-queue":
            continue
        meta = trigger["metadata"]
        auth = trigger.get("authenticationRef", {}).get("name")
        if named(resources, "TriggerAuthentication", auth or "") is None:
            yield f"{name}: authenticationRef {auth} is not in the manifests"
        if meta.get("queueURLFromEnv") not in env:
            yield f"{name}: queueURLFromEnv {meta.get('queueURLFromEnv')} is not in the pods' env"
        if meta.get("awsRegion") != env.get("AWS_REGION"):
            yield f"{name}: awsRegion {meta.get('awsRegion')} != the pods' AWS_REGION"
        for key in ("queueLength", "activationQueueLength"):
            if not str(meta.get(key, "")).isdigit():
                yield f"{name}: {key} must be set (a number)"


def _dsn_secret(env: dict[str, Any]) -> str | None:
    """The name of the Secret DATABASE_URL comes from, if it comes from one."""
    value = env.get("DATABASE_URL")
    return value.get("secretKeyRef", {}).get("name") if isinstance(value, dict) else None


def _migrate_problems(resources: list[Resource]) -> Iterator[str]:
    jobs = [j for j in by_kind(resources, "Job") if j["metadata"]["name"] == "logins-migrate"]
    if not jobs:
        yield "Job/logins-migrate is missing"
        return
    (container,) = jobs[0]["spec"]["template"]["spec"]["containers"]
    if container.get("command") != ["logins", "migrate"]:
        yield "Job/logins-migrate: must run `logins migrate`"
    owner = _dsn_secret(env_of(resources, container))
    workloads = flow_workloads(resources)
    pipeline = {_dsn_secret(env_of(resources, flow_container(w))) for w in workloads}
    if not owner or owner in pipeline:
        yield "Job/logins-migrate: DATABASE_URL must come from the owner's own Secret"


def problems(resources: list[Resource]) -> list[str]:
    """Every broken promise in one rendered overlay."""
    found: list[str] = []
    workloads = flow_workloads(resources)
    if not workloads:
        found.append("no flow workload (Deployment or StatefulSet)")
    for workload in workloads:
        found += _pod_problems(resources, workload)
        found += _coverage(resources, workload)
    for sts in by_kind(resources, "StatefulSet"):
        if sts in workloads:
            found += _cluster_problems(resources, sts)
    for scaled in by_kind(resources, "ScaledObject"):
        found += _scaler_problems(resources, scaled)
    found += _migrate_problems(resources)
    found += _secret_hygiene(resources)
    return found
