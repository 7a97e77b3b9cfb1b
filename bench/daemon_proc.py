"""The daemon as a subprocess for the benchmarks (bench/stream.py part b, bench/daemon.py).

    with BenchDaemon(workdir, ["bench.workflows:chain"]) as daemon:   # started, pinged
        ControlClient(daemon.control).submit("chain")

Free ports on 127.0.0.1, a fresh data_dir under `workdir`, optional CURVE keys
(`CurveKeys.make(dir)` writes a daemon and a client key pair as `tradeloom keys` does), stderr
to a file (shown when the daemon fails), SIGTERM on exit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq.auth

from transport.client import ClientKeys, ControlClient, DaemonUnreachable

ROOT = Path(__file__).resolve().parent.parent
READY_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class CurveKeys:
    server_secret: Path
    server_public: Path
    authorized_dir: Path
    client_secret: Path

    @classmethod
    def make(cls, directory: Path) -> CurveKeys:
        directory.mkdir(parents=True, exist_ok=True)
        server_public, server_secret = zmq.auth.create_certificates(str(directory), "daemon")
        client_public, client_secret = zmq.auth.create_certificates(str(directory), "client")
        authorized = directory / "authorized"
        authorized.mkdir(exist_ok=True)
        (authorized / "client.key").write_bytes(Path(client_public).read_bytes())
        return cls(Path(server_secret), Path(server_public), authorized, Path(client_secret))

    def client(self) -> ClientKeys:
        return ClientKeys(self.client_secret, self.server_public)


def _toml(value: Any) -> str:
    return json.dumps(value)  # strings, numbers, booleans and lists: the same in TOML


class BenchDaemon:
    def __init__(self, workdir: Path, workflow_refs: list[str], *,
                 curve: CurveKeys | None = None, daemon: dict[str, Any] | None = None,
                 metrics_listen: str | None = None, name: str = "daemon",
                 sections: dict[str, dict[str, Any]] | None = None,
                 time_commits: bool = False) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.events = f"tcp://127.0.0.1:{free_port()}"
        self.control = f"tcp://127.0.0.1:{free_port()}"
        self.curve = curve
        lines = ["[daemon]", f"data_dir = {_toml(str(self.dir / 'data'))}"]
        lines += [f"{k} = {_toml(v)}" for k, v in (daemon or {}).items()]
        lines += ["[transport]", f"events = {_toml(self.events)}",
                  f"control = {_toml(self.control)}", "heartbeat_s = 1.0"]
        if curve is not None:
            lines += [f"curve_secret_key_file = {_toml(str(curve.server_secret))}",
                      f"curve_authorized_keys_dir = {_toml(str(curve.authorized_dir))}"]
        if metrics_listen is not None:
            lines += ["[metrics]", f"listen = {_toml(metrics_listen)}"]
        for section, values in (sections or {}).items():  # e.g. {"journal": {...}}
            lines += [f"[{section}]", *(f"{k} = {_toml(v)}" for k, v in values.items())]
        for ref in workflow_refs:
            lines += ["[[workflows]]", f"ref = {_toml(ref)}"]
        self.config = self.dir / "daemon.toml"
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.stderr_path = self.dir / "daemon.err"
        #: With `time_commits`, the daemon runs under bench/commit_probe.py and writes its
        #: journal commits' `[last seq, time]` here as it exits (`commit_times()`).
        self.commit_times_path = self.dir / "commit_times.json" if time_commits else None
        self.proc: subprocess.Popen[bytes] | None = None

    def keys(self) -> ClientKeys | None:
        return self.curve.client() if self.curve is not None else None

    def client(self, timeout: float = 10.0) -> ControlClient:
        return ControlClient(self.control, timeout=timeout, keys=self.keys())

    def start(self) -> BenchDaemon:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        entry = ["-m", "actors.cli"]
        if self.commit_times_path is not None:
            entry = ["-m", "bench.commit_probe", str(self.commit_times_path)]
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, *entry, "--log-level", "warning", "daemon",
                 "--config", str(self.config)], cwd=ROOT, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        with self.client(timeout=0.25) as control:
            problem = wait_answering(self.proc, control, READY_S)
        if problem is not None:
            if self.proc.poll() is None:
                self.stop()
            raise RuntimeError(f"{problem}: {self.stderr_tail()}")
        return self

    def commit_times(self) -> list[list[Any]]:
        """The journal's commits as `[last seq, time.time()]`, once the daemon has exited."""
        assert self.commit_times_path is not None, "started without time_commits"
        times: list[list[Any]] = json.loads(self.commit_times_path.read_text(encoding="utf-8"))
        return times

    def stderr_tail(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-2000:]

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def __enter__(self) -> BenchDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        code = self.stop()
        if code != 0 and exc == (None, None, None):
            raise RuntimeError(f"the daemon exited {code}: {self.stderr_tail()}")


def wait_answering(proc: subprocess.Popen[bytes], control: ControlClient,
                   within_s: float) -> str | None:
    """Ping the daemon `proc` until it answers: None, or why not (it exited, or gave no
    answer within `within_s`)."""
    deadline = time.monotonic() + within_s
    while True:
        if proc.poll() is not None:
            return f"the daemon exited {proc.returncode}"
        try:
            control.ping()
            return None
        except DaemonUnreachable:
            if time.monotonic() > deadline:
                return f"the daemon did not answer within {within_s} s"
