"""bench/chaos.py: a few seconds of the chaos probe against a real daemon (it kills and
restarts it at least once), and its invariant checks on made-up journals, so that a check
that stopped seeing breakage would show."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.chaos_checks import execution_violations, recovery_violations

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60


def event(seq: int, kind: str, execution_id: str | None = "e1", **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"seq": seq, "type": kind, **extra}
    if execution_id is not None:
        fields["execution_id"] = execution_id
    return fields


@pytest.mark.timeout(TIMEOUT_S + 10)
def test_a_short_chaos_run_holds_every_invariant_and_restarts_the_daemon() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "chaos.py"), "--minutes",
                           "0.05", "--seed", "11"], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "invariants: all held" in proc.stdout
    runs = re.search(r"(\d+) daemon runs", proc.stdout)
    assert runs is not None and int(runs.group(1)) >= 2, proc.stdout


def test_one_terminal_event_per_execution_and_nothing_after_it() -> None:
    good = [event(1, "execution_started"), event(2, "node_started"),
            event(3, "execution_completed")]
    assert execution_violations(good) == ([], set())
    twice = [*good, event(4, "execution_failed")]
    assert "2 terminal events" in execution_violations(twice)[0][0]
    after = [*good, event(4, "node_completed")]
    assert "after its terminal event" in execution_violations(after)[0][0]
    assert execution_violations(good[:2]) == ([], {"e1"})


def test_an_execution_open_across_a_restart_is_reported() -> None:
    start = event(1, "daemon_started", None)
    restart = event(4, "daemon_started", None)
    ended = [start, event(2, "execution_started"),
             event(3, "execution_failed", status="interrupted"), restart]
    assert recovery_violations(ended) == []
    left_open = [start, event(2, "execution_started"), restart]
    assert "still open" in recovery_violations(left_open)[0]
    not_by_recovery = [start, event(2, "execution_started"),
                       event(3, "execution_failed", status="interrupted"),
                       event(4, "node_started", "e2"), restart]
    assert "between an interrupted end" in recovery_violations(not_by_recovery)[0]
