"""The daemon fixtures' answer to a probed port taken before the daemon binds it: a first
start moves that address to a fresh port and starts again; a restart, or a port the test
wrote itself, is refused as it would be without the fixture."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_fixture import DaemonFleet
from tests.daemon_process import DaemonProcess, read_endpoints, write_config
from tests.ports import free_port, replaced, taken_address


@contextlib.contextmanager
def squatting(address: str) -> Iterator[None]:
    """Listen on `address` (`...127.0.0.1:PORT`): what another process may do between
    free_port()'s probe and the daemon's bind."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(address.rsplit(":", 1)[1])))
        squatter.listen()
        yield


def test_taken_address_names_only_a_probed_port_refused_as_in_use() -> None:
    port = free_port()
    line = f"tradeloom: error: cannot bind the publisher on tcp://127.0.0.1:{port}: "
    assert taken_address("starting\n" + line + "Address already in use\n") == (
        f"127.0.0.1:{port}")
    assert taken_address(line + "Permission denied") is None
    with socket.socket() as holder:  # a port free_port() never handed out
        holder.bind(("127.0.0.1", 0))
        fixed = holder.getsockname()[1]
    assert fixed != port
    assert taken_address(f"cannot bind 127.0.0.1:{fixed}: Address already in use") is None


def test_replaced_moves_the_whole_port_only() -> None:
    config = {"transport": {"events": "tcp://127.0.0.1:4001", "control": "tcp://127.0.0.1:40012"},
              "web": {"listen": "127.0.0.1:4001"}, "n": 4001, "hooks": ["127.0.0.1:4001/x"]}
    assert replaced(config, "127.0.0.1:4001", "127.0.0.1:5") == {
        "transport": {"events": "tcp://127.0.0.1:5", "control": "tcp://127.0.0.1:40012"},
        "web": {"listen": "127.0.0.1:5"}, "n": 4001, "hooks": ["127.0.0.1:5/x"]}


@pytest.mark.timeout(90)
def test_a_cli_daemon_first_start_moves_off_a_taken_port_and_a_restart_does_not(
        tmp_path: Path) -> None:
    config = write_config(tmp_path)
    daemon = DaemonProcess(config, *read_endpoints(config))
    taken = daemon.events
    try:
        with squatting(taken):
            daemon.start()
        assert daemon.starts == 2 and daemon.events != taken
        assert read_endpoints(config) == (daemon.control, daemon.events)
        with daemon.client() as client:
            assert client.ping()["pong"] is True
        daemon.stop()
        kept = daemon.events
        with squatting(kept), pytest.raises(AssertionError, match="exited 2"):
            daemon.start()
        assert daemon.starts == 3 and daemon.events == kept
    finally:
        daemon.kill()


@pytest.mark.timeout(90)
def test_a_fleet_daemon_first_start_moves_its_taken_metrics_port(tmp_path: Path) -> None:
    with DaemonFleet(tmp_path) as fleet:
        listen = f"127.0.0.1:{free_port()}"
        daemon = fleet.daemon(workflows=("fast",), config={"metrics": {"listen": listen}})
        with squatting(listen):
            daemon.start()
        moved = daemon.config["metrics"]["listen"]
        assert daemon.runs == 2 and moved != listen
        assert moved in daemon.config_path.read_text()
        assert daemon.terminate() == 0
