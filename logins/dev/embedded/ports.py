"""Loopback addresses for the embedded servers."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"
START_ATTEMPTS = 3  # a port picked by free_port() can be taken before the server binds it


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now; the OS skips ports in use, such as 5432."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port
