"""The metrics port, checked before the flow starts.

Bytewax serves `/metrics` on 0.0.0.0:BYTEWAX_DATAFLOW_API_PORT (3030) when
BYTEWAX_DATAFLOW_API_ENABLED is set, and when that port is taken it exits 0 without a word
(`-w 2`) or panics and runs on without metrics (`-w 1`): a supervisor records success while
nothing consumes. So `logins run` and `flows/logins.py` bind the port themselves first, as
Bytewax will (SO_REUSEADDR, like tokio's listener, so a closed connection's TIME_WAIT is no
conflict; a listener is), and stop with exit 2 naming the port and, where /proc shows it, the
process that holds it.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path

DEFAULT_PORT = 3030
ENABLED = "BYTEWAX_DATAFLOW_API_ENABLED"
PORT = "BYTEWAX_DATAFLOW_API_PORT"
_LISTEN = "0A"  # the TCP state LISTEN in /proc/net/tcp
_MAX_COMMAND = 200
_MAX_WORDS = 6
_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^@/\s]*@")


class PortUnavailable(Exception):
    """The metrics port cannot be bound; the message names it and what holds it."""


def configured_port(env: Mapping[str, str] | None = None) -> int | None:
    """The port Bytewax will serve metrics on, or None when the API is not enabled (Bytewax
    enables it for any value of the variable, even empty)."""
    env = os.environ if env is None else env
    if ENABLED not in env:
        return None
    text = env.get(PORT, "").strip() or str(DEFAULT_PORT)
    try:
        port = int(text)
    except ValueError:
        raise PortUnavailable(f"{PORT}={text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise PortUnavailable(f"{PORT}={port} is not a port number (1-65535)")
    return port


def check_port(port: int) -> None:
    """Bind 0.0.0.0:`port` as Bytewax will, then let it go; PortUnavailable if that fails."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 (where Bytewax serves /metrics)
            probe.listen(1)
        except OSError as exc:
            raise PortUnavailable(
                f"the metrics port {port} is in use{holder(port)} ({exc.strerror})."
                f" Stop that process, or choose another port (logins run --metrics-port N,"
                f" or {PORT}=N; --metrics-port 0 runs without metrics)"
            ) from None


def check_configured(env: Mapping[str, str] | None = None) -> int | None:
    """Check the port the environment enables (see `configured_port`); the port or None."""
    port = configured_port(env)
    if port is not None:
        check_port(port)
    return port


def holder(port: int, proc: Path = Path("/proc")) -> str:
    """Who listens on `port`, as far as /proc shows this user: " by pid N (command)", else
    " by a process this user cannot see", else "" (no listener: only "in use" is known)."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return ""
    for pid, inode in _socket_owners(proc):
        if inode in inodes:
            return f" by pid {pid} ({_command(proc / pid)})"
    return " by a process this user cannot see"


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[9] != "0":
                inodes.add(fields[9])
    return inodes


def _socket_owners(proc: Path) -> list[tuple[str, str]]:
    """(pid, socket inode) for every socket descriptor this user may read."""
    owners = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:  # another user's process, or it ended
            continue
        for fd in descriptors:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                owners.append((entry.name, target[8:-1]))
    return owners


def _command(pid_dir: Path) -> str:
    """The holder's first few arguments, with a URL's password hidden (a command line may
    carry a DSN), cut to a line."""
    try:
        raw = (pid_dir / "cmdline").read_bytes()
    except OSError:
        return "command not readable"
    words = raw.rstrip(b"\0").decode(errors="replace").split("\0")[:_MAX_WORDS]
    command = " ".join(_URL_PASSWORD.sub(r"\1***@", _printable(w)) for w in words if w)
    if len(command) > _MAX_COMMAND:
        command = command[: _MAX_COMMAND - 3] + "..."
    return command or "command not readable"


def _printable(word: str) -> str:
    return word if word.isprintable() else word.encode("unicode_escape").decode()
