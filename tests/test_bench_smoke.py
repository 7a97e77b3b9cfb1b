"""Smoke runs of bench/core.py as CI runs them: the default mode and the A/B mode, --quick.

They check that the scripts run to the end and clean up, not any figure: timing on a shared
machine is the bench's business, not the suite's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "bench" / "core.py"
TIMEOUT_S = 120


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CORE), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False)


def git_head() -> str | None:
    """HEAD's commit, or None without git or a commit to check out (a shallow CI clone)."""
    if shutil.which("git") is None:
        return None
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet",
                           "HEAD^{commit}"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def worktrees() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "worktree", "list", "--porcelain"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.timeout(TIMEOUT_S + 30)
def test_quick_default_mode_runs_and_delivers_every_event() -> None:
    proc = run_bench("--quick")
    assert proc.returncode == 0, proc.stderr
    assert "events delivered to the subscriber" in proc.stdout
    assert "seq gaps: 0" in proc.stdout


@pytest.mark.timeout(TIMEOUT_S + 30)
def test_quick_ab_mode_measures_both_trees_and_removes_its_worktree() -> None:
    head = git_head()
    if head is None:
        pytest.skip("needs git and a HEAD commit")
    proc = run_bench("--ab", "HEAD", "--quick", "--json", "--b-args", "--gc-freeze")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    a, b = summary["sides"]["A"], summary["sides"]["B"]
    assert a["label"].startswith(f"HEAD @ {head[:7]}")
    assert Path(b["tree"]) == ROOT
    # Each side's workers imported their own tree's `actors`.
    assert {Path(run["actors"]) for run in summary["runs"]["A"]} == {
        Path(a["tree"]).resolve() / "actors"}
    assert {Path(run["actors"]) for run in summary["runs"]["B"]} == {ROOT / "actors"}
    assert summary["order"] == ["AB", "BA"]
    # --b-args reach B's workers only.
    assert a["gc"]["frozen"] == 0 and b["gc"]["frozen"] > 0
    for metric in ("latency_p50_ms", "wf_s_c50", "wf_s_c1000"):
        row = summary["metrics"][metric]
        assert row["a"]["median"] > 0 and row["b"]["median"] > 0
        assert row["verdict"] in ("within spread", "better beyond spread",
                                  "worse beyond spread")
    assert summary["verdict"].startswith(("no regression", "REGRESSION"))
    # The temporary worktree is gone, from disk and from git's list.
    assert not Path(a["tree"]).exists()
    assert a["tree"] not in worktrees()


def test_workflow_size_bench_runs_both_shapes_for_each_size() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "workflow_size.py"),
                           "--sizes", "10,30"], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split()[:2] for line in proc.stdout.splitlines()[1:]]
    assert rows == [["10", "flat"], ["10", "chain"], ["30", "flat"], ["30", "chain"]]
