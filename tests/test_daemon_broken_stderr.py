"""The daemon's stderr is a pipe whose reader dies (a log shipper, `2>&1 | tee`): every log
line then fails with a broken pipe. Logging must not be part of the work it describes: a
halt's broadcast and on-halt hooks ran after a log line, a control reply was built by code
that logs, and the trigger loop logged. They all go on; the lines are dropped and counted."""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_fixture import ROOT, DaemonProcess, child_env
from tests.ports import free_port
from transport.errors import HaltedError

DEADLINE_S = 20.0


class PipedDaemon(DaemonProcess):
    """A daemon whose stderr is a pipe that a thread here reads until `kill_reader()`."""

    def spawn(self) -> PipedDaemon:
        self.runs += 1
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=child_env(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=write_fd)
        os.close(write_fd)
        self.lines_read: list[bytes] = []
        self._stop_reading = threading.Event()
        self._reading = threading.Thread(target=self._read, args=(read_fd,), daemon=True)
        self._reading.start()
        return self

    def _read(self, fd: int) -> None:
        # Polled, and closed here: a close() from another thread while this one is blocked
        # in read() would leave the pipe a reader until that read returned.
        try:
            while not self._stop_reading.is_set():
                if select.select([fd], [], [], 0.05)[0]:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        return
                    self.lines_read.append(chunk)
        finally:
            os.close(fd)

    def kill_reader(self) -> None:
        """The pipe's only reader goes: the daemon's writes to stderr now fail (EPIPE)."""
        self._stop_reading.set()
        self._reading.join(DEADLINE_S)
        assert not self._reading.is_alive()

    def stderr(self) -> str:
        return b"".join(self.lines_read).decode(errors="replace")


def eventually(predicate: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {DEADLINE_S} s: {what}")


def test_a_daemon_whose_log_reader_died_still_halts_runs_hooks_answers_and_triggers(
        tmp_path: Path) -> None:
    daemon = PipedDaemon(tmp_path, workflows=("fast", "w"), config={
        "workflows": [{"ref": "tests.e2e_workflows:fast"},
                      {"ref": "tests.e2e_workflows:w", "every_s": 0.1}],
        "emergency": {"on_halt": [{"ref": "tests.e2e_workflows:fast"}]},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
    })
    daemon.start()
    try:
        with daemon.client(timeout=10.0) as control:
            eventually(lambda: control.executions(workflow="w"), "a triggered run")
            daemon.kill_reader()
            # Logged lines now fail; one that logs is a submit refused for HALT, below.
            submitted = control.submit("fast")["execution_id"]
            eventually(lambda: control.execution(submitted)["status"] == "completed",
                       "the submitted run")
            reply = control.halt("broken pipe drill")
            assert reply["state"] == "HALT"
            eventually(lambda: len([e for e in control.executions(workflow="fast")
                                    if e["status"] == "completed"]) == 2, "the on-halt hook")
            with pytest.raises(HaltedError):  # refused: logged by the control socket too
                control.submit("fast")
            assert control.resume("drill over")["state"] == "NORMAL"
            seq = control.status()["last_seq"]
            # The trigger loop survived its failed log lines: it runs again after resume.
            eventually(lambda: control.status()["last_seq"] > seq + 10, "triggered runs")
            assert control.status()["state"] == "NORMAL"
        listen = daemon.config["metrics"]["listen"]  # (moved if the port was taken at start)
        scraped = httpx.get(f"http://{listen}/metrics", timeout=10).text
        families = {f.name: f for f in text_string_to_metric_families(scraped)}
        assert families["tradeloom_log_lines_dropped"].samples[0].value > 0
        assert daemon.terminate() == 0
    finally:
        if daemon.running():
            daemon.kill()
