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


def test_commits_are_matched_to_the_first_commit_that_holds_each_seq() -> None:
    from bench.commit_probe import committed_to_received

    commits = [[3, 10.0], [3, 10.5], [7, 11.0], [9, 12.0]]  # (a records-only commit: 3 again)
    arrivals = [[1, 10.25], [3, 10.5], [4, 11.5], [7, 11.25], [9, 12.75], [10, 13.0]]
    assert committed_to_received(commits, arrivals) == [0.25, 0.5, 0.5, 0.25, 0.75]


def test_a_paced_round_times_every_event_from_its_commit(tmp_path: Path) -> None:
    from bench.stream_daemon import latency_round

    result = latency_round(tmp_path, None, 0.3)
    assert result["lossless"], result
    latency = result["latency"]
    assert latency["n"] == result["received"]  # every event received was matched to a commit
    assert 0.0 < latency["min"] <= latency["p50"] <= latency["p99"]
    assert latency["p50"] <= result["stamp_latency"]["p50"]  # a commit is after the node's return
