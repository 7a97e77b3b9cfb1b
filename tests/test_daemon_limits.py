"""The daemon under a low open-files limit (`ulimit -Sn 64` below a hard limit of at least
4096): it raises its soft limit to the hard one at start (at most 65536), so that a crowd
of client connections does not cost the kill switch over a new control connection."""

from __future__ import annotations

import json
import resource
import socket
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, read_endpoints, write_config

SOFT, HARD = 64, 4096  # HARD: the least hard limit the test needs
#: Idle TCP connections held on the control port: past SOFT, each one a descriptor.
CROWD = 150


def soft_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no 'Max open files' line")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="needs /proc")
@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_NOFILE)[1] < HARD,
                    reason=f"needs a hard open-files limit of {HARD}")
def test_a_crowd_of_connections_past_the_soft_limit_leaves_the_kill_switch_working(
        tmp_path: Path) -> None:
    config = write_config(tmp_path)
    daemon = DaemonProcess(config, *read_endpoints(config), soft_open_files=SOFT)
    daemon.start()
    try:
        assert daemon.proc is not None
        raised = soft_open_files(daemon.proc.pid)
        assert raised >= HARD
        port = int(daemon.control.rsplit(":", 1)[1])
        with ExitStack() as crowd:
            for _ in range(CROWD):
                crowd.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
            with daemon.client(timeout=5.0) as client:  # a new connection, past the crowd
                assert client.halt("fd crowd")["state"] == "HALT"
        started = [json.loads(line) for line in daemon.log.read_text().splitlines()
                   if '"daemon_started"' in line and '"fd_limit"' in line]
        assert [line["fd_limit"] for line in started] == [raised]
    finally:
        try:
            daemon.stop()
        finally:
            daemon.kill()
