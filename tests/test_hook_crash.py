"""On-halt hooks across a kill -9 (tests/hook_crash_child.py): a HALT's hooks are owed
until each has ended, and a start in that HALT runs those that had not, except one whose
action had started (at most once: its intent is left to the operator)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import Config, EmergencyState, Engine
from tests.engine_journal_helpers import captured_logs, eventually
from tests.hook_crash_child import HOOK_ID, hook_workflow
from tests.journal_helpers import Child

WAIT_S = 20.0


def killed_at(point: str, data_dir: Path, side_file: Path) -> None:
    child = Child(str(data_dir), str(side_file), point, module="tests.hook_crash_child")
    try:
        child.wait_for(lambda lines: "READY" in lines, timeout=60.0)
    finally:
        child.kill()


def restarted(data_dir: Path, side_file: Path) -> Engine:
    return Engine.start(Config.from_dict({"daemon": {"data_dir": str(data_dir)}}),
                        on_halt=[hook_workflow(side_file)])


def hook_runs(engine: Engine) -> list[dict[str, object]]:
    return engine.executions(workflow=HOOK_ID)


def cancels(side_file: Path) -> list[str]:
    return side_file.read_text().split() if side_file.exists() else []


@pytest.mark.parametrize("point", ["unsubmitted", "running"])
def test_a_hook_the_crash_cut_off_before_its_action_runs_at_the_next_start(
        tmp_path: Path, point: str) -> None:
    """The kill -9 lands right after the halt's reply (the hook not yet recorded), or
    while the hook runs before its action: it was lost for good, the resting orders it
    cancels left live on the exchange under a daemon that came back halted."""
    data_dir, side_file = tmp_path / "data", tmp_path / "cancels.txt"
    killed_at(point, data_dir, side_file)
    assert cancels(side_file) == []
    with captured_logs() as logs:
        engine = restarted(data_dir, side_file)
    try:
        assert engine.state is EmergencyState.HALT
        eventually(lambda: len(cancels(side_file)) == 1, WAIT_S, "the owed hook's cancel")
        eventually(lambda: engine.gate.hooks_owed is None, WAIT_S, "the HALT owing nothing")
        [rerun] = cancels(side_file)
        statuses = {str(run["execution_id"]): run["status"] for run in hook_runs(engine)}
        assert statuses[rerun] == "completed"
        expected = {rerun: "completed"}
        if point == "running":  # the cut-off run: interrupted, and run again
            expected.update({k: "interrupted" for k in statuses if k != rerun})
        assert statuses == expected
        [owed] = [e for e in logs if e["event"] == "on_halt_hooks_owed"]
        assert owed["workflow_ids"] == [HOOK_ID] and owed["reason"] == "crash test"
        record = engine.execution(rerun)
        assert record is not None and record["results"]["cancel_all"] == 2
        assert engine.intents() == []  # the rerun's action resolved; nothing else open
    finally:
        engine.stop()
    again = restarted(data_dir, side_file)  # owed no more: not run a third time
    try:
        assert again.state is EmergencyState.HALT and again.gate.hooks_owed is None
        assert len(hook_runs(again)) == len(expected)
    finally:
        again.stop()
    assert len(cancels(side_file)) == 1


@pytest.mark.parametrize(("point", "status"), [("acted", "interrupted"),
                                               ("ended", "completed")])
def test_a_hook_whose_action_had_started_or_that_ended_is_not_run_again(
        tmp_path: Path, point: str, status: str) -> None:
    data_dir, side_file = tmp_path / "data", tmp_path / "cancels.txt"
    killed_at(point, data_dir, side_file)
    [first] = cancels(side_file)
    with captured_logs() as logs:
        engine = restarted(data_dir, side_file)
    try:
        assert engine.state is EmergencyState.HALT and engine.gate.hooks_owed is None
        assert [(r["execution_id"], r["status"]) for r in hook_runs(engine)] == [
            (first, status)]
        notes = [e for e in logs if e["event"].startswith("on_halt_hook")]
        intents = [i["idempotency_key"] for i in engine.intents()]
        if point == "acted":  # at most once: left to the operator, who is told
            assert [(e["event"], e["execution_ids"]) for e in notes] == [
                ("on_halt_hook_not_run_again", [first])]
            assert intents == [f"{first}:cancel_all"]
        else:
            assert notes == [] and intents == []
    finally:
        engine.stop()
    assert cancels(side_file) == [first]
