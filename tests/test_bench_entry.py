"""`python -m bench`, the one benchmark entry point: CI runs it in --quick mode so the
benches never rot. These check the report's shape (every section, the pass/short table),
not any figure: timing on a shared machine is the bench's business, not the suite's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import BENCHES, PENDING_TARGETS
from bench.report import render
from bench.results import figure, result, target

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
#: The whole quick run takes ~30 s on 2 busy cores; the deadline leaves room for load.
DEADLINE_S = 150
ALWAYS_HERE = {"core", "resilience", "halt", "journal", "stream", "daemon"}


def run_entry(*args: str, timeout: float = DEADLINE_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
@pytest.mark.timeout(DEADLINE_S + 30)
def test_quick_run_writes_every_section_with_pass_or_short(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    proc = run_entry("--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    for heading in ("# Benchmarks", "## Machine", "## Targets"):
        assert f"\n{heading}\n" in f"\n{text}", heading
    for key in ("cores", "CPU", "Python", "OS", "date", "git commit"):
        assert re.search(rf"^\| {re.escape(key)} \| .+ \|$", text, re.M), key
    assert "| issue | target | measured | pass/short | command to reproduce |" in text
    sections = {m.group(1) for m in re.finditer(r"^## (.+?)(?: \(`.*`\))?$", text, re.M)}
    for name, title in [(n, t) for n, _, t in BENCHES] + [("soak", "Soak")]:
        assert title in sections, (name, sorted(sections))
    for name, _, title in BENCHES:  # measured: a figure table under its heading
        body = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
        measured = "| figure | median | min - max | unit | n |" in body
        # Benches other helpers are writing may not be in this tree yet.
        assert measured or (name not in ALWAYS_HERE and body.strip().startswith(
            ("not present:", "not measured:"))), (name, body[:300])
    rows = [line for line in text.splitlines() if re.match(r"^\| #\d+ \|", line)]
    verdicts = {line.split("|")[4].strip() for line in rows}
    assert verdicts & {"pass", "**short**"}, rows
    assert verdicts <= {"pass", "**short**", "-"}, verdicts
    for issue in (2, 3, 4, 8, 9, 10, 11):  # every measured issue has a target row
        assert any(line.startswith(f"| #{issue} |") for line in rows), issue
    assert "failed" not in text.split("## Targets", 1)[1].split("\n## ", 1)[0]
    notes = ROOT / "docs" / "benchmarks-notes.md"
    assert notes.read_text(encoding="utf-8").strip().splitlines()[0] in text


@pytest.mark.timeout(DEADLINE_S)
def test_quick_without_out_prints_and_leaves_the_docs_alone() -> None:
    before = DOCS.stat().st_mtime_ns if DOCS.exists() else None
    proc = run_entry("--quick", "--only", "journal")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("# Benchmarks")
    assert "## Journal" in proc.stdout and "not selected with --only" in proc.stdout
    assert (DOCS.stat().st_mtime_ns if DOCS.exists() else None) == before


def test_report_marks_targets_pass_short_and_missing_benches() -> None:
    res = result("demo", "Demo", "python bench/demo.py", 3, [
        figure("wf/s", "wf/s", [900.0, 1100.0, 1000.0]),
        figure("halt", "ms", [1.0, 2.0, 80.0]),
        figure("on / off", "x", [0.5, 0.6, 0.7])], [
        target(98, "rate >= 950", "wf/s", ">=", 950),
        target(98, "halt p99 <= 50 ms", "halt", "<=", 50, stat="p99"),
        target(99, "ratio >= 0.75x", "on / off", ">=", 0.75),
        target(99, "a figure nobody measured", "absent", "<=", 1)])
    entries = [{"name": "demo", "title": "Demo", "status": "ok", "result": res,
                "command": res["command"], "seconds": 1.0},
               {"name": "webhooks", "title": "Webhooks", "status": "not present",
                "detail": "bench/webhooks.py does not exist (yet)"}]
    text = render(entries, {"cores": "2"}, quick=True, command="python -m bench --quick",
                  pending=PENDING_TARGETS)
    rows = {line.split("|")[2].strip(): line.split("|")[3:5] for line in text.splitlines()
            if line.startswith("| #")}
    assert [cell.strip() for cell in rows["rate >= 950"]] == ["1,000 wf/s", "pass"]
    assert [cell.strip() for cell in rows["halt p99 <= 50 ms"]] == ["p99 80 ms",
                                                                     "**short**"]
    assert [cell.strip() for cell in rows["ratio >= 0.75x"]] == ["0.60x", "**short**"]
    assert [cell.strip() for cell in rows["a figure nobody measured"]] == ["not measured",
                                                                           "-"]
    webhook_target = PENDING_TARGETS["webhooks"][0][1]
    assert [cell.strip() for cell in rows[webhook_target]] == ["not present", "-"]
    assert "| wf/s | 1,000 | 900 - 1,100 | wf/s | 3 |" in text
    assert "| on / off | 0.60x | 0.50x - 0.70x | x | 3 |" in text
    assert "**quick mode**" in text
