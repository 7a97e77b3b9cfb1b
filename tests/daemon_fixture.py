"""The real daemon as a subprocess, for end-to-end tests (tests/test_daemon_*.py).

    with DaemonFleet(tmp_path) as fleet:
        daemon = fleet.daemon(workflows=("fast",)).start()   # ready: it answered a ping
        with daemon.client() as control:
            control.submit("fast")
        assert daemon.terminate() == 0                        # SIGTERM, exit code

Each `DaemonProcess` gets its own config file, `data_dir` and two free ports on 127.0.0.1;
`start()` runs `python -m actors.cli daemon --config FILE` from the repo root (so
`tests.e2e_workflows` imports) and returns once the control socket answers `ping`, within a
deadline; `terminate()` sends SIGTERM and waits for the exit code; `kill()` is `kill -9`.
Starting again reuses the same data_dir and ports (a restart). Every wait has a deadline;
nothing here sleeps blindly. `SubscriberProcess` runs tests/e2e_subscriber.py (the client
library's `Subscriber` in another process) and talks to it over stdin/stdout lines.

Self-contained on purpose: it shares nothing with the CLI tests' own fixture.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.ports import PORT_RETRIES, free_port, fresh_address, replaced, taken_address
from transport.client import ClientKeys, ControlClient, DaemonUnreachable

ROOT = Path(__file__).resolve().parent.parent
SUBSCRIBER_SCRIPT = Path(__file__).with_name("e2e_subscriber.py")
#: A daemon that does not answer a ping this long after its start has failed to start.
READY_S = 30.0
#: How long a SIGTERMed daemon may take to exit (its shutdown grace comes on top).
STOP_S = 20.0



def child_env() -> dict[str, str]:
    """The environment of every child: the repo root importable, no stray warnings config."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PYTHONWARNINGS", None)
    return env


# -- TOML (the few shapes a daemon config needs: tables, arrays of tables, scalars) --------

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(
        isinstance(v, Mapping) for v in value)


def _toml_table(name: str, table: Mapping[str, Any], out: list[str]) -> None:
    scalars = {k: v for k, v in table.items()
               if not isinstance(v, Mapping) and not _is_table_array(v)}
    if name:
        out.append(f"[{name}]")
    out.extend(f"{key} = {_toml_value(value)}" for key, value in scalars.items())
    for key, value in table.items():
        path = f"{name}.{key}" if name else key
        if isinstance(value, Mapping):
            _toml_table(path, value, out)
        elif _is_table_array(value):
            for item in value:
                out.append(f"[[{path}]]")
                out.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())


def toml_text(config: Mapping[str, Any]) -> str:
    out: list[str] = []
    _toml_table("", config, out)
    return "\n".join(out) + "\n"


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra`'s tables merged key by key (other values replaced)."""
    result = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


# -- the daemon ---------------------------------------------------------------------------

class DaemonProcess:
    """One daemon: its directory, config, data_dir and ports; started and stopped as a
    subprocess as often as a test likes (the same data_dir and ports each time)."""

    def __init__(self, directory: Path, *, workflows: Sequence[str] = ("fast", "slow"),
                 config: Mapping[str, Any] | None = None, insecure: bool = False,
                 keys: ClientKeys | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.data_dir = directory / "data"
        self.events = f"tcp://127.0.0.1:{free_port()}"
        self.control = f"tcp://127.0.0.1:{free_port()}"
        self.keys = keys
        self.insecure = insecure
        base = {
            "daemon": {"data_dir": str(self.data_dir), "shutdown_grace_s": 2.0},
            "transport": {"events": self.events, "control": self.control,
                          "heartbeat_s": 0.2},
            "workflows": [{"ref": f"tests.e2e_workflows:{name}"} for name in workflows],
        }
        self.config = merged(base, config or {})
        self.config_path = directory / "daemon.toml"
        self.config_path.write_text(toml_text(self.config), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self._stderr_path = directory / "daemon-0.err"

    @property
    def args(self) -> list[str]:
        args = [sys.executable, "-m", "actors.cli", "daemon", "--config", str(self.config_path)]
        return [*args, "--insecure"] if self.insecure else args

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> DaemonProcess:
        """Start the process without waiting for it to be ready."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        self._stderr_path = self.directory / f"daemon-{self.runs}.err"
        with open(self._stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, env=child_env(),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=stderr)
        return self

    def start(self, timeout: float = READY_S) -> DaemonProcess:
        """Start and wait until the control socket answers a ping.

        A first start refused for a port in use (any of its config's `127.0.0.1:PORT`
        addresses: tests/ports.py says why a probed port can be taken) is tried again with
        that address moved to a fresh port; a restart keeps its ports, as a restart must."""
        first_start = self.runs == 0
        for attempt in range(PORT_RETRIES + 1):
            self.spawn()
            try:
                self.wait_ready(timeout)
                return self
            except AssertionError:
                exited_2 = self.proc is not None and self.proc.returncode == 2
                taken = taken_address(self.stderr()) if exited_2 else None
                if not first_start or attempt == PORT_RETRIES or taken is None:
                    raise
                self._move(taken)
        return self

    def _move(self, address: str) -> None:
        fresh = fresh_address()
        # Said where a failing test's output shows it: a test that kept the old port in a
        # variable of its own (not read back from the fixture) fails after this.
        print(f"daemon fixture: {address} was taken at the first start, moved to {fresh}",
              file=sys.stderr)
        self.config = replaced(self.config, address, fresh)
        self.events = replaced(self.events, address, fresh)
        self.control = replaced(self.control, address, fresh)
        self.config_path.write_text(toml_text(self.config), encoding="utf-8")

    def wait_ready(self, timeout: float = READY_S) -> None:
        deadline = time.monotonic() + timeout
        with self.client(timeout=0.25) as control:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"the daemon exited {self.proc.returncode} before it "
                                         f"was ready:\n{self.stderr()[-3000:]}")
                try:
                    control.ping()
                    return
                except DaemonUnreachable:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"the daemon did not answer a ping within "
                                             f"{timeout} s:\n{self.stderr()[-3000:]}") from None

    def client(self, timeout: float = 5.0, keys: ClientKeys | None = None) -> ControlClient:
        """A control client of this daemon (with the daemon's client keys unless given)."""
        return ControlClient(self.control, timeout=timeout,
                             keys=keys if keys is not None else self.keys)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = STOP_S) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"the daemon did not exit within {timeout} s:\n"
                                 f"{self.stderr()[-3000:]}") from None

    def terminate(self, timeout: float = STOP_S) -> int:
        """SIGTERM; the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> int:
        """kill -9; the exit code (-9)."""
        self.signal(signal.SIGKILL)
        return self.wait_exit(10)

    def stderr(self) -> str:
        """What the current (or last) run wrote to stderr."""
        try:
            return self._stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_events(self) -> list[dict[str, Any]]:
        """The current run's JSON log lines, parsed (lines that are not JSON skipped)."""
        lines = []
        for line in self.stderr().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def close(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


def wait_until(predicate: Any, timeout: float, what: str, poll_s: float = 0.02) -> Any:
    """Poll `predicate()` until it returns something truthy (returned) or `timeout` passes
    (AssertionError naming `what`). For conditions in another process, where there is no
    event to wait on."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {value!r})")
        time.sleep(poll_s)


def wait_idle(control: ControlClient, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the daemon runs and queues nothing; its last status."""
    def idle() -> dict[str, Any] | None:
        status = control.status()
        return status if status["running"] == 0 and status["queued"] == 0 else None
    result: dict[str, Any] = wait_until(idle, timeout, "the daemon to be idle")
    return result


def wait_last_seq(control: ControlClient, at_least: int, timeout: float = 30.0) -> int:
    """Wait until `status()["last_seq"]` reaches `at_least`; the value it reached."""
    def reached() -> int:
        last: int = control.status()["last_seq"]
        return last if last >= at_least else 0
    result: int = wait_until(reached, timeout, f"last_seq >= {at_least}")
    return result


def wait_started(control: ControlClient, runs: int, timeout: float = 30.0) -> int:
    """The seq of the `runs`-th `daemon_started` in the journal, once it is committed
    (everything a restart's recovery published comes before it)."""
    def started() -> int:
        seqs = [e["seq"] for e in replay_all(control) if e["type"] == "daemon_started"]
        return seqs[runs - 1] if len(seqs) >= runs else 0
    seq: int = wait_until(started, timeout, f"daemon_started number {runs}")
    return seq


def replay_all(control: ControlClient, since_seq: int = 1,
               until_seq: int | None = None) -> list[dict[str, Any]]:
    """Every committed event from `since_seq` (to `until_seq`), through paged replays."""
    events: list[dict[str, Any]] = []
    seq = since_seq
    while True:
        page = control.replay(seq, limit=10_000)
        end = page["last_seq"] if until_seq is None else min(until_seq, page["last_seq"])
        events.extend(e for e in page["events"] if e["seq"] <= end)
        if page["next_seq"] > end or page["next_seq"] <= seq:
            return events
        seq = page["next_seq"]


def submit_many(daemon: DaemonProcess, workflow: str, count: int, *, threads: int = 4,
                inputs: dict[str, Any] | None = None) -> list[str]:
    """Submit `count` executions over `threads` control clients; their ids."""
    ids: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def run(share: int) -> None:
        try:
            with daemon.client() as control:
                mine = [control.submit(workflow, inputs)["execution_id"] for _ in range(share)]
            with lock:
                ids.extend(mine)
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    shares = [count // threads + (i < count % threads) for i in range(threads)]
    workers = [threading.Thread(target=run, args=(share,)) for share in shares]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert not errors, errors[0]
    assert len(ids) == count
    return ids


def wait_ended(control: ControlClient, ids: list[str], timeout: float = 60.0) -> dict[str, str]:
    """Wait until the journal has every one of `ids` in a terminal status; id -> status.
    Their events are in the journal's database then, but `status()["last_seq"]` may not
    cover them yet (it moves just after the commit): wait on a subscriber's terminal
    events (`SubscriberProcess.wait_terminals`) or on `wait_last_seq` for that."""
    wanted = set(ids)
    open_statuses = {"queued", "running"}

    def ended() -> dict[str, str] | None:
        rows = control.executions(limit=10_000)
        statuses = {r["execution_id"]: r["status"] for r in rows if r["execution_id"] in wanted}
        if len(statuses) == len(wanted) and not open_statuses & set(statuses.values()):
            return statuses
        return None

    result: dict[str, str] = wait_until(ended, timeout, f"{len(ids)} executions to end", 0.05)
    return result


def check_stream(summary: dict[str, Any], first: int, last: int) -> None:
    """The subscriber delivered exactly the seqs first..last, in order, each once."""
    assert summary["contiguous"], summary["breaks"]
    assert (summary["first_seq"], summary["last_seq"]) == (first, last)
    assert summary["count"] == last - first + 1
    assert summary["after_terminal"] == 0
    assert not summary["timed_out"]


class DaemonFleet:
    """The daemons of one test, all killed at teardown if still running."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._daemons: list[DaemonProcess] = []
        self._subscribers: list[SubscriberProcess] = []

    def daemon(self, name: str = "daemon", **options: Any) -> DaemonProcess:
        daemon = DaemonProcess(self.directory / name, **options)
        self._daemons.append(daemon)
        return daemon

    def subscriber(self, daemon: DaemonProcess, *args: str) -> SubscriberProcess:
        subscriber = SubscriberProcess(daemon, *args)
        self._subscribers.append(subscriber)
        return subscriber

    def close(self) -> None:
        for subscriber in self._subscribers:
            subscriber.close()
        for daemon in self._daemons:
            daemon.close()

    def __enter__(self) -> DaemonFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- a subscriber in another process ------------------------------------------------------

class SubscriberProcess:
    """tests/e2e_subscriber.py following `daemon`; lines read with deadlines."""

    def __init__(self, daemon: DaemonProcess, *args: str) -> None:
        cmd = [sys.executable, str(SUBSCRIBER_SCRIPT), daemon.events, daemon.control, *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._pumps = [threading.Thread(target=self._pump_stdout, daemon=True),
                       threading.Thread(target=self._pump_stderr, daemon=True)]
        for pump in self._pumps:
            pump.start()
        self.events: list[dict[str, Any]] = []  # `event` lines seen so far (--echo)

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, prefix: str, timeout: float) -> str:
        """The rest of the next line starting with `prefix` (event lines are collected)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line from the subscriber within "
                                     f"{timeout} s; stderr: {self.stderr()[-3000:]}") from None
            if line is None:
                self._lines.put(None)
                raise AssertionError(f"the subscriber exited before a {prefix!r} line; "
                                     f"stderr: {self.stderr()[-3000:]}")
            if line.startswith("event "):
                self.events.append(json.loads(line[6:]))
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def wait_live(self, timeout: float = 30.0) -> dict[str, Any]:
        live: dict[str, Any] = json.loads(self.expect("live ", timeout))
        return live

    def wait_reached(self, seq: int, timeout: float) -> None:
        self.send(f"notify {seq}")
        assert self.expect(f"reached {seq}", timeout) == ""

    def wait_terminals(self, count: int, timeout: float = 60.0) -> None:
        """Until `count` executions' terminal events were delivered (each committed)."""
        self.send(f"terminals {count}")
        assert self.expect(f"terminals {count}", timeout) == ""

    def finish(self, until_seq: int | None, timeout: float) -> dict[str, Any]:
        """Let it deliver up to `until_seq` (None: stop now); its summary."""
        self.send(f"until {until_seq}" if until_seq is not None else "stop")
        summary: dict[str, Any] = json.loads(self.expect("summary ", timeout))
        self.proc.wait(10)
        return summary

    def stderr(self) -> str:
        return "".join(self._stderr)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pump in self._pumps:
            pump.join(10)  # at the end of the output now: never close a stream under it
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
