"""bench/stream.py runs end to end (a smoke run: no timing asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "stream.py"


def test_stream_bench_smoke() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--part", "a", "--rounds", "1",
                           "--events", "3000"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "zero loss: yes" in proc.stdout
    assert "publisher (packed)" in proc.stdout and "bare pyzmq + msgpack" in proc.stdout
