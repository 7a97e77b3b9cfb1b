"""A smoke run of bench/cli.py (the CLI start-up bench): it runs to the end and prints a row
per command against the baseline. No figure is checked: timing is the bench's business."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_one_round_prints_the_baseline_and_a_row_per_command() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "cli.py"), "--rounds", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^baseline: python -c pass, median \d+ ms \(1 runs\)$", proc.stdout,
                     re.M), proc.stdout
    rows = re.findall(r"^\| `tradeloom ([^`]+)` \| (\d+) \((\d+\.\d)x\) \|$", proc.stdout,
                      re.M)
    assert [row[0] for row in rows] == [
        "--version", "halt --help", "status (nobody listening, --timeout 0.05)"], proc.stdout
