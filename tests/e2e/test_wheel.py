"""The wheel works outside the repository: built from the tree, installed into a fresh venv,
`logins init DIR` writes a starter project over the shipped configuration and `logins check`
passes there.

The fresh venv gets the project only from the wheel (`pip install --no-deps`, asserted: the
`logins` it imports is the venv's). Its dependencies are this test environment's own site
directory, added by a .pth file: installing bytewax, boto3, psycopg, ... from an index takes
~70 s, and what is tested here is the project's packaging, not pip's resolver.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.e2e

SOURCES = ("pyproject.toml", "README.md", "logins", "flows", "connectors", "config")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wheel, built from a copy of the tree (a stale build/ in the repository must not
    leak old modules into it)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    # without build isolation: the build backend is the dev extra's setuptools, not a fresh
    # download of it (~15 s)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    pip += ["-w", str(out), str(source)]
    subprocess.run(pip, check=True, capture_output=True, timeout=180)
    (built,) = out.glob("logins_etl-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("venv")
    # without a pip of its own (ensurepip costs ~10 s): this environment's pip installs into it
    venv = [sys.executable, "-m", "venv", "--without-pip", str(home)]
    subprocess.run(venv, check=True, timeout=120)
    python = home / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    install += ["--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=120)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    yield home


def _run(venv: Path, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOGINS_")}
    clean["PATH"] = f"{venv / 'bin'}{os.pathsep}{clean.get('PATH', '')}"
    return subprocess.run(
        args, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def test_the_wheel_holds_every_module_and_the_shipped_configuration(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("logins", "flows", "connectors"):
        for module in (REPO / package).rglob("*.py"):
            assert str(module.relative_to(REPO)) in names, module
    for config in (REPO / "config").rglob("*.yaml"):
        shipped = Path("logins/core/config/shipped") / config.relative_to(REPO / "config")
        assert str(shipped) in names, config
        assert zipfile.ZipFile(wheel).read(str(shipped)) == config.read_bytes()


def test_init_then_check_work_outside_the_repository(venv: Path, tmp_path: Path) -> None:
    where = _run(venv, ["python", "-c", "import logins; print(logins.__file__)"], tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout  # the wheel's, not the tree's

    init = _run(venv, ["logins", "init", "project"], tmp_path)
    assert init.returncode == 0, init.stderr
    project = tmp_path / "project"
    assert "extends: logins:local.yaml" in (project / "config/local.yaml").read_text()
    assert "keys/" in (project / ".gitignore").read_text().splitlines()

    keygen = _run(venv, ["logins", "keygen", "keys"], project)
    assert keygen.returncode == 0, keygen.stderr
    check = _run(venv, ["logins", "check"], project)
    assert check.returncode == 0, check.stderr
    assert "table: user_logins" in check.stdout  # from the shipped base.yaml
    assert "# ok: token key id" in check.stdout

    typo = project / "typo.yaml"
    typo.write_text("extends: config/local.yaml\nsink:\n  tabel: x\n")
    bad = _run(venv, ["logins", "check"], project, LOGINS_CONFIG="typo.yaml")
    assert bad.returncode == 2
    assert "typo.yaml:3: sink.tabel: unknown key; did you mean table?" in bad.stderr

    unknown = _run(venv, ["logins", "check"], project, LOGINS_ENV="staging")
    assert unknown.returncode == 2
    assert "known environments: ['local', 'prod']" in unknown.stderr
    again = _run(venv, ["logins", "init", "project"], tmp_path)
    assert again.returncode != 0
    assert "not overwriting" in again.stderr
