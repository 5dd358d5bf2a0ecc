"""The metrics port check: which port the environment enables, and who holds a taken one."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from logins.core.metricsport import (
    PortUnavailable,
    check_configured,
    check_port,
    configured_port,
    holder,
)


def test_the_port_is_bytewaxs_when_its_api_is_enabled() -> None:
    assert configured_port({}) is None
    assert configured_port({"BYTEWAX_DATAFLOW_API_ENABLED": ""}) == 3030  # any value enables it
    enabled = {"BYTEWAX_DATAFLOW_API_ENABLED": "1", "BYTEWAX_DATAFLOW_API_PORT": "9101"}
    assert configured_port(enabled) == 9101
    for bad in ("http", "0", "70000"):
        with pytest.raises(PortUnavailable, match="BYTEWAX_DATAFLOW_API_PORT"):
            configured_port({**enabled, "BYTEWAX_DATAFLOW_API_PORT": bad})


def test_a_listening_port_is_refused_with_its_holder_and_a_free_one_passes() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        held.listen(1)
        with pytest.raises(PortUnavailable) as refused:
            check_configured(
                {"BYTEWAX_DATAFLOW_API_ENABLED": "1", "BYTEWAX_DATAFLOW_API_PORT": str(port)}
            )
    message = str(refused.value)
    assert message.startswith(f"the metrics port {port} is in use by pid {os.getpid()} (")
    check_port(port)  # released: free again, no TIME_WAIT trouble


def test_without_proc_the_holder_is_only_in_use(tmp_path: Path) -> None:
    assert holder(3030, proc=tmp_path) == ""  # the message says "in use" and the OS's words


def test_a_holders_command_line_shows_no_url_password(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
    line = (
        "   0: 00000000:0BD6 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 4242"
    )
    (tmp_path / "net" / "tcp").write_text(f"{header}\n{line}\n")
    (tmp_path / "77" / "fd").mkdir(parents=True)
    (tmp_path / "77" / "fd" / "3").symlink_to("socket:[4242]")
    (tmp_path / "77" / "cmdline").write_bytes(
        b"psql\0postgresql://app:s3cret@db/logins\0-c\0select\n1\0"
    )
    shown = holder(3030, proc=tmp_path)
    assert shown == " by pid 77 (psql postgresql://app:***@db/logins -c select\\n1)"
