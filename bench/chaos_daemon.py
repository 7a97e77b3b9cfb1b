"""The daemon the chaos probe (bench/chaos.py) runs and kills: `tradeloom daemon` in a
subprocess on free loopback ports, with a fresh data_dir, bench/chaos_workflows.py on
interval triggers, an on-halt hook and a `daily_loss` limit with auto_halt. Each run's
stderr goes to its own file, so a traceback can be traced to the run that wrote it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.chaos_workflows import ACTIONS_ENV
from bench.daemon_proc import free_port, wait_answering
from transport.client import ControlClient

ROOT = Path(__file__).resolve().parent.parent
READY_S = 30.0
STOP_S = 40.0
LIMIT = "daily_loss"
THRESHOLD = 100.0

CONFIG = """\
[daemon]
data_dir = "{data_dir}"
shutdown_grace_s = 1.0
max_concurrent_executions = 6
max_queued_executions = 25
[transport]
events = "{events}"
control = "{control}"
heartbeat_s = 0.5
[resilience]
max_restarts = 2
backoff_min_s = 0.01
backoff_max_s = 0.1
breaker_failure_threshold = 3
breaker_reset_timeout_s = 1.0
[[emergency.limits]]
name = "{limit}"
kind = "daily_loss"
threshold = {threshold}
auto_halt = true
[[emergency.on_halt]]
ref = "bench.chaos_workflows:on_halt"
[[workflows]]
ref = "bench.chaos_workflows:trade"
every_s = 0.5
[[workflows]]
ref = "bench.chaos_workflows:slow"
every_s = 1.5
[[workflows]]
ref = "bench.chaos_workflows:stuck"
"""


class ChaosDaemon:
    """`tradeloom daemon` in a subprocess on free ports; each run's stderr in its own file."""

    def __init__(self, workdir: Path, seed: int) -> None:
        self.workdir = workdir
        self.events = f"tcp://127.0.0.1:{free_port()}"
        self.control = f"tcp://127.0.0.1:{free_port()}"
        self.side_file = workdir / "actions.txt"
        self.config = workdir / "daemon.toml"
        self.config.write_text(CONFIG.format(
            data_dir=workdir / "data", events=self.events, control=self.control,
            limit=LIMIT, threshold=THRESHOLD), encoding="utf-8")
        self.seed = seed
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def stderr_path(self, run: int | None = None) -> Path:
        return self.workdir / f"daemon-{self.runs if run is None else run}.err"

    def start(self, *, wait: bool = True) -> None:
        """Start it; returns once it answers `ping` (else RuntimeError), or at once."""
        self.runs += 1
        env = dict(os.environ, PYTHONPATH=str(ROOT), TRADELOOM_CHAOS_SEED=str(
            self.seed * 1000 + self.runs), **{ACTIONS_ENV: str(self.side_file)})
        with self.stderr_path().open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "actors.cli", "--log-level", "warning", "daemon",
                 "--config", str(self.config)], cwd=ROOT, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        if not wait:
            return
        with ControlClient(self.control, timeout=0.5) as client:
            problem = wait_answering(self.proc, client, READY_S)
        if problem is not None:
            raise RuntimeError(f"run {self.runs}: {problem} at start")

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def nudge(self, signum: int) -> None:
        """Send `signum` without waiting."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    def signal(self, signum: int) -> int | None:
        """Send `signum`; its exit code (None: not gone within STOP_S, then SIGKILLed)."""
        proc, self.proc = self.proc, None
        assert proc is not None
        proc.send_signal(signum)
        try:
            return proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def tracebacks(self) -> list[str]:
        return [f"run {run}: a traceback on stderr ({self.stderr_path(run)})"
                for run in range(1, self.runs + 1)
                if "Traceback" in self.stderr_path(run).read_text(errors="replace")]
