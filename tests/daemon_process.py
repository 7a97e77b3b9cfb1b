"""The daemon as a real subprocess for the CLI tests: `tradeloom daemon --config FILE` on
OS-picked free loopback ports and a tmp data_dir, ready once its control socket answers a
ping, stopped with SIGTERM (exit 0 asserted); and the CLI itself as a subprocess, with a
line reader for the long-running `tail`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.ports import PORT_RETRIES, free_port, fresh_address, replaced, taken_address
from transport.client import ClientKeys, ControlClient, DaemonUnreachable

_SCRIPT = Path(sys.executable).parent / "tradeloom"
#: The CLI: the console script when installed, else the module.
TRADELOOM: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m",
                                                                 "actors.cli"]
READY_S = 30.0
STOP_S = 30.0

WORKFLOWS = textwrap.dedent("""
    from actors import Node, Workflow

    def echo(ctx):
        return dict(ctx.inputs)

    def order(ctx):
        return {"order": ctx.idempotency_key}

    def boom(ctx):
        raise ValueError("boom from the cli test")

    def stuck_order(ctx):
        ctx.cancelled.wait(10)  # until its timeout cancels it: a late result
        return {"late": True}

    def nap(ctx):
        ctx.cancelled.wait(float(ctx.inputs.get("seconds", 5)))
        return {"slept": True}

    ok = Workflow("cli_ok", nodes=[
        Node("echo", echo, category="provider"),
        Node("order", order, category="action", depends_on=["echo"]),
    ])
    failing = Workflow("cli_fail", nodes=[
        Node("echo", echo, category="provider"),
        Node("boom", boom, depends_on=["echo"]),
    ])
    stuck = Workflow("cli_stuck", nodes=[
        Node("order", stuck_order, category="action", timeout_s=0.3),
    ])
    slow = Workflow("cli_slow", nodes=[Node("nap", nap, timeout_s=30)])
""")


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env.pop("FORCE_COLOR", None)
    return env


def daemon_tables(directory: Path, *, shutdown_grace_s: float) -> str:
    """A test daemon's `[daemon]` (data_dir `directory/data`) and `[transport]` (free
    ports) tables, `[transport]` last so that more of its keys may follow."""
    return textwrap.dedent(f"""
        [daemon]
        data_dir = "{directory / 'data'}"
        shutdown_grace_s = {shutdown_grace_s}
        [transport]
        events = "tcp://127.0.0.1:{free_port()}"
        control = "tcp://127.0.0.1:{free_port()}"
    """)


def write_config(directory: Path, *, transport_extra: str = "") -> Path:
    """A daemon config in `directory` with the test workflows, a daily_loss limit with
    auto_halt, free ports and data_dir `directory/data`."""
    (directory / "cli_daemon_wf.py").write_text(WORKFLOWS)
    config = directory / "daemon.toml"
    config.write_text(daemon_tables(directory, shutdown_grace_s=2.0) + textwrap.dedent("""
        heartbeat_s = 0.2
        TRANSPORT_EXTRA
        [resilience]
        backoff_min_s = 0.01
        backoff_max_s = 0.05
        [[emergency.limits]]
        name = "daily_loss"
        kind = "daily_loss"
        threshold = 100.0
        auto_halt = true
        [[workflows]]
        ref = "cli_daemon_wf:ok"
        [[workflows]]
        ref = "cli_daemon_wf:failing"
        [[workflows]]
        ref = "cli_daemon_wf:stuck"
        [[workflows]]
        ref = "cli_daemon_wf:slow"
    """).replace("TRANSPORT_EXTRA", transport_extra))
    return config


class DaemonProcess:
    """`tradeloom daemon --config FILE` in a subprocess; its stderr goes to a file."""

    def __init__(self, config: Path, control: str, events: str, *,
                 cwd: Path | None = None, log_format: str = "json",
                 keys: ClientKeys | None = None, close_stdout: bool = False,
                 soft_open_files: int | None = None) -> None:
        self.config, self.control, self.events = config, control, events
        #: Start it under this soft open-files limit (`ulimit -Sn N`; the hard one is kept).
        self.soft_open_files = soft_open_files
        #: Start it with fd 1 closed (`tradeloom daemon ... >&-`).
        self.close_stdout = close_stdout
        self.keys = keys  # for its CURVE sockets: the readiness ping and `client()`
        self.cwd = cwd or config.parent
        self.log_format = log_format
        self.log = config.parent / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start it and wait until its control socket answers a ping.

        A first start refused for a port in use that free_port() picked (tests/ports.py
        says how a probed port can be taken) is tried again with that address moved to a
        fresh port in the config file; a restart keeps its ports, as a restart must."""
        first_start = self.starts == 0
        for attempt in range(PORT_RETRIES + 1):
            logged = self.log.stat().st_size if self.log.exists() else 0
            try:
                self._start_once()
                return
            except AssertionError:
                exited_2 = self.proc is not None and self.proc.returncode == 2
                taken = taken_address(self._log_since(logged)) if exited_2 else None
                if not first_start or attempt == PORT_RETRIES or taken is None:
                    raise
                self._move(taken)

    def _log_since(self, offset: int) -> str:
        with self.log.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", errors="replace")

    def _move(self, address: str) -> None:
        fresh = fresh_address()
        # Said where a failing test's output shows it: a test that kept the old port in a
        # variable of its own (not read back from the fixture) fails after this.
        print(f"daemon fixture: {address} was taken at the first start, moved to {fresh}",
              file=sys.stderr)
        self.config.write_text(replaced(self.config.read_text(), address, fresh))
        self.control = replaced(self.control, address, fresh)
        self.events = replaced(self.events, address, fresh)

    def _start_once(self) -> None:
        self.starts += 1
        closing = ["sh", "-c", 'exec "$@" >&-', "sh"] if self.close_stdout else []
        if self.soft_open_files is not None:  # (no preexec_fn: unsafe in a threaded parent)
            closing = ["sh", "-c", f'ulimit -Sn {self.soft_open_files} && exec "$@"', "sh",
                       *closing]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*closing, *TRADELOOM, "--log-format", self.log_format, "daemon", "--config",
                 str(self.config)],
                cwd=self.cwd, env=environment(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_S
        with ControlClient(self.control, timeout=0.5, keys=self.keys) as client:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"the daemon exited {self.proc.returncode}: "
                                         f"{self.log.read_text()[-2000:]}")
                try:
                    client.ping()
                    return
                except DaemonUnreachable:
                    if time.monotonic() > deadline:
                        self.kill()  # never leave a daemon behind
                        raise AssertionError(f"the daemon did not answer a ping within "
                                             f"{READY_S} s") from None

    def stop(self) -> None:
        """SIGTERM; the daemon must exit 0 within STOP_S."""
        proc, self.proc = self.proc, None
        assert proc is not None, "not running"
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"the daemon did not stop within {STOP_S} s") from None
        assert code == 0, (code, self.log.read_text()[-2000:])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def client(self, timeout: float = 5.0) -> ControlClient:
        return ControlClient(self.control, timeout=timeout, keys=self.keys)

    def endpoints(self) -> list[str]:
        return ["--control", self.control, "--events", self.events]

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """A client command against this daemon (its endpoints appended)."""
        return run_cli(*args, *self.endpoints(), timeout=timeout)


def read_endpoints(config: Path) -> tuple[str, str]:
    import tomllib

    transport = tomllib.loads(config.read_text())["transport"]
    return str(transport["control"]), str(transport["events"])


def run_cli(*args: str, timeout: float = 60.0,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRADELOOM, *args], capture_output=True, text=True, timeout=timeout,
                          env=environment(), cwd=cwd, check=False)


class LineReader:
    """A long-running CLI command (`tail`) whose stdout lines are collected by a thread."""

    def __init__(self, args: Sequence[str]) -> None:
        self.proc = subprocess.Popen([*TRADELOOM, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=environment())
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self._stderr_thread: threading.Thread | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], bool],
                 timeout: float = 30.0) -> list[str]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.lines), timeout):
                raise AssertionError(f"not seen within {timeout} s; {len(self.lines)} lines, "
                                     f"last: {self.lines[-3:]}; exit {self.proc.poll()}")
            return list(self.lines)

    def follow_stderr(self) -> list[str]:
        """Collect stderr's lines as they come, in the list returned (a thread reads it)."""
        lines: list[str] = []

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                lines.append(line)

        self._stderr_thread = threading.Thread(target=read, daemon=True)
        self._stderr_thread.start()
        return lines

    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return [json.loads(line) for line in self.lines]

    def interrupt(self, timeout: float = 15.0) -> tuple[int, str]:
        """Ctrl-C; the exit code and stderr."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(5)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()

    def kill(self) -> None:
        """Kill it if it still runs, and close its pipes (always call it: in `finally`)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(5)
        if self._stderr_thread is not None:
            self._stderr_thread.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def running_daemon(directory: Path, *, keys: ClientKeys | None = None,
                   **config: str) -> Iterator[DaemonProcess]:
    """A daemon on `write_config(directory, **config)`, stopped (exit 0 asserted) after."""
    directory.mkdir(parents=True, exist_ok=True)
    path = write_config(directory, **config)
    process = DaemonProcess(path, *read_endpoints(path), keys=keys)
    process.start()
    try:
        yield process
    finally:
        if process.proc is not None:
            try:
                process.stop()
            finally:
                process.kill()
