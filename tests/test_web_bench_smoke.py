"""bench/web.py --quick runs to the end with zero loss (its numbers are not checked here:
timing on a shared machine says nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_web_bench_quick_runs_lossless() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "web.py"), "--quick"],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "zero loss: yes" in done.stdout
    assert "stalled WebSocket client / without" in done.stdout
