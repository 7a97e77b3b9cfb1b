"""Ports on 127.0.0.1 for daemons started by tests, and recovery from a port taken.

`free_port()` cannot reserve a port: between the probe and the daemon's bind, any process
on the machine (another test worker, an outgoing connection) may take it. A daemon refused
that way exits 2 with one line naming the address ("cannot bind ... 127.0.0.1:PORT:
Address already in use"); `taken_address` finds that address and `replaced` moves it to a
fresh port in a config, so a fixture can start again. Only a first start may move: a
restart keeps its ports, as a restart must. A test that wants a collision starts the daemon
itself (`run_daemon`) and sees the refusal.
"""

from __future__ import annotations

import re
import socket
from typing import Any

#: How many times a first start is tried again on a fresh port after a port in use.
PORT_RETRIES = 3

_IN_USE = "Address already in use"
_ADDRESS = re.compile(r"127\.0\.0\.1:(\d+)")
#: Every port free_port() handed out in this process: only those may be moved (a fixed
#: port written into a test's config is refused as the test wrote it).
_PROBED: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    _PROBED.add(port)
    return port


def taken_address(output: str) -> str | None:
    """The `127.0.0.1:PORT` a daemon could not bind, from its output, if that is why it
    stopped and free_port() picked that port (None otherwise)."""
    for line in output.splitlines():
        if _IN_USE in line:
            found = _ADDRESS.search(line)
            if found is not None and int(found.group(1)) in _PROBED:
                return found.group(0)
    return None


def fresh_address() -> str:
    """`127.0.0.1:PORT` on a port that nothing listens on right now."""
    return f"127.0.0.1:{free_port()}"


def replaced(value: Any, address: str, fresh: str) -> Any:
    """`value` (a str, or maps and lists of them, as in a config) with `address` moved to
    `fresh`; an address that is only a prefix of a longer port is left alone."""
    if isinstance(value, str):
        return re.sub(re.escape(address) + r"(?!\d)", fresh, value)
    if isinstance(value, dict):
        return {key: replaced(item, address, fresh) for key, item in value.items()}
    if isinstance(value, list):
        return [replaced(item, address, fresh) for item in value]
    return value
