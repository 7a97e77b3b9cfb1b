"""Smoke runs of the daemon benchmarks, --quick: bench/daemon.py and bench/stream.py part (b).
They check that the scripts run to the end with a real daemon and lose nothing, not any
figure: timing on a shared machine is the bench's business, not the suite's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 120


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_daemon_bench_quick_runs_to_the_end() -> None:
    proc = run("daemon.py", "--quick")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in ("daemon: submit -> terminal event elsewhere", "in-process engine, journal on",
                 "daemon / in-process:", "metrics on / off", "target p50 <= 1 ms at c=1"):
        assert line in proc.stdout, proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_stream_bench_part_b_quick_runs_lossless() -> None:
    proc = run("stream.py", "--quick", "--part", "b")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "zero loss: yes" in proc.stdout
    for line in ("events/s delivered", "CURVE on / plain: throughput", "plain "):
        assert line in proc.stdout, proc.stdout
