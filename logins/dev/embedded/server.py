"""What every embedded server shares: a loopback port (a free one unless pinned), start/stop,
and use as a context manager."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
START_ATTEMPTS = 3  # a port picked by free_port() can be taken before the server binds it


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now; the OS skips ports in use, such as 5432."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class PortTaken(RuntimeError):
    """The server lost the race for its port to another process."""


class LoopbackServer(ABC):
    """A server on HOST: on the port given, or on a free one picked at start (and kept)."""

    def __init__(self, port: int | None = None) -> None:
        self._port = port
        self._port_pinned = port is not None  # once started, the port never changes

    @abstractmethod
    def start(self) -> Self:
        """Start serving (a no-op while running); returns once the server accepts TCP."""

    @abstractmethod
    def stop(self) -> None:
        """Stop serving and release the port."""

    def _listen(self, listen: Callable[[int], None]) -> None:
        """Call `listen(port)` on the pinned port, or on a fresh free port up to START_ATTEMPTS
        times while another process takes it first (`listen` raises PortTaken); then pin it."""
        attempts = 1 if self._port_pinned else START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            if not self._port_pinned:
                self._port = free_port()
            try:
                listen(self.port)
                break
            except PortTaken:
                if attempt == attempts:
                    raise
        self._port_pinned = True

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} has no port until start()")
        return self._port
