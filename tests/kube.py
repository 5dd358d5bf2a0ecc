"""Render the kustomizations under deploy/kubernetes and validate every resource, offline.

Core kinds go to `kubernetes-validate` (the published Kubernetes OpenAPI schemas, strict: an
unknown field is an error). KEDA's and the Prometheus Operator's kinds go to the
`openAPIV3Schema` of their CRDs, vendored in deploy/kubernetes/schemas/ (versions in its
README), made strict the same way. A kind with no schema is an error, so nothing passes
unchecked. Rendering uses `kustomize build` if it is installed, else `kubectl kustomize`
(kustomize is built into kubectl since 1.14; this machine's image ships kubectl).
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.helpers import REPO

KUBE = REPO / "deploy" / "kubernetes"
OVERLAYS = ("local", "prod", "prod-cluster")
SCHEMAS = KUBE / "schemas"
# The oldest Kubernetes the manifests promise to work on, and the newest schema set shipped.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())

# KEDA 2.20.2, pkg/scalers/aws_sqs_queue_scaler.go (`keda:"name=..."` tags): the trigger's
# metadata is a map of strings in the CRD, so a misspelt key would pass its schema.
AWS_SQS_METADATA = {
    "queueLength",
    "activationQueueLength",
    "queueURL",
    "queueURLFromEnv",
    "awsRegion",
    "awsEndpoint",
    "scaleOnInFlight",
    "scaleOnDelayed",
    "identityOwner",
}


class RenderError(Exception):
    """A kustomization that does not build; the message is kustomize's own."""


def _renderer() -> list[str]:
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    raise RenderError(
        "neither `kustomize` nor `kubectl` is on PATH: install one (kubectl >= 1.21 has"
        " kustomize v4+ built in) to render deploy/kubernetes"
    )


def render(directory: Path) -> list[dict[str, Any]]:
    """The resources `kubectl apply -k directory` would send."""
    result = subprocess.run(
        [*_renderer(), str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RenderError(f"{directory}: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _strict(schema: Any) -> Any:
    """Reject unknown fields, as the API server's strict field validation does: every object
    schema that lists its properties and does not preserve unknown fields gets
    additionalProperties: false."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> a validator for every version a vendored CRD serves."""
    validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            jsonschema.Draft7Validator.check_schema(schema)
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def _semantic(resource: dict[str, Any]) -> Iterator[str]:
    """What a schema cannot say: the aws-sqs-queue trigger's metadata keys."""
    if resource.get("kind") != "ScaledObject":
        return
    for i, trigger in enumerate(resource.get("spec", {}).get("triggers", [])):
        if trigger.get("type") == "aws-sqs-queue":
            for key in sorted(set(trigger.get("metadata", {})) - AWS_SQS_METADATA):
                yield f"spec.triggers.{i}.metadata.{key}: not a key of the aws-sqs-queue scaler"


def validate(resource: dict[str, Any]) -> list[str]:
    """Every problem with one resource, or [] if it is valid for every version above."""
    name = f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"
    key = (resource.get("apiVersion", ""), resource.get("kind", ""))
    problems: list[str] = []
    if key in crd_validators():
        for error in crd_validators()[key].iter_errors(resource):
            path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
            problems.append(f"{name}: {path}: {error.message}")
    else:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path) or "(top level)"
                problems.append(f"{name} (Kubernetes {version}): {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                problems.append(f"{name}: no schema to validate it: {error.message}")
    problems.extend(f"{name}: {problem}" for problem in _semantic(resource))
    return problems
