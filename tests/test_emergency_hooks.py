"""On-halt hooks: workflows run each time HALT is entered (e.g. cancel every resting order),
exempt from the halt, their actions treated as `reduces_risk`; a hook that fails or hangs
never blocks or delays the halt."""

from __future__ import annotations

import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from actors import (
    Config,
    ConfigError,
    EmergencyState,
    Engine,
    ManualClock,
    Node,
    NodeContext,
    Workflow,
)
from actors.messages import Halt
from tests.conftest import Recorder

WAIT_S = 20.0
TERMINAL = {"execution_completed", "execution_failed", "execution_halted",
            "execution_cancelled"}


class Hook:
    """A hook workflow: provider -> action (not marked reduces_risk). The action records the
    inputs it saw; with `gates`, it first waits on the gate named by the halt's reason."""

    def __init__(self, wf_id: str = "cancel_all", *,
                 gates: dict[str, threading.Event] | None = None) -> None:
        self.gates = gates or {}
        self.cond = threading.Condition()
        self.calls: list[dict[str, Any]] = []
        self.entered = 0
        self.workflow = Workflow(wf_id, nodes=[
            Node("orders", lambda ctx: ["o1", "o2"], category="provider"),
            Node("cancel", self.cancel, category="action", depends_on=["orders"]),
        ])

    def cancel(self, ctx: NodeContext) -> int:
        with self.cond:
            self.entered += 1
            self.cond.notify_all()
        gate = self.gates.get(ctx.inputs["halt_reason"])
        if gate is not None:
            gate.wait(WAIT_S)
        with self.cond:
            self.calls.append(dict(ctx.inputs))
            self.cond.notify_all()
        return len(ctx.upstream["orders"])

    def wait_entered(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.entered >= n, WAIT_S), self.entered


def hook_executions(rec: Recorder, wf_id: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for event in rec.events:
        if event.get("workflow_id") == wf_id:
            out.setdefault(event["execution_id"], []).append(event)
    return out


def started(engine: Engine) -> Recorder:
    rec = Recorder()
    rec.follow(engine)
    return rec


def test_a_hook_runs_once_per_halt_with_its_action_admitted_in_halt() -> None:
    hook = Hook()
    engine = Engine.start(on_halt=[hook.workflow])
    try:
        rec = started(engine)
        assert engine.halt("incident", origin="cli") == {"state": "HALT",
                                                         "previous_state": "NORMAL"}
        events = rec.wait_for(lambda evs: any(
            e["type"] == "execution_completed" and e["workflow_id"] == "cancel_all"
            for e in evs))
        engine.halt("again")  # already halted: HALT is not entered again
        assert engine.ref.ask(Halt(reason="and again"), timeout=WAIT_S) == {
            "state": "HALT", "previous_state": "HALT"}
        runs = hook_executions(rec, "cancel_all")
        assert len(runs) == 1
        (evs,) = runs.values()
        types = [e["type"] for e in evs]
        assert types[0] == "execution_started" and types[-1] == "execution_completed", types
        assert [e["node_id"] for e in evs if e["type"] == "node_started"] == [
            "orders", "cancel"]
        assert {e["state"] for e in evs} == {"HALT"}
        halt_seq = next(e["seq"] for e in events if e["type"] == "emergency_state_changed")
        assert all(e["seq"] > halt_seq for e in evs), "hooks run after the halt is published"
        assert hook.calls == [{"halt_reason": "incident", "halt_source": "manual",
                               "halt_origin": "cli"}]
        # Every HALT entered runs them again; a later resume is not held up by them.
        engine.resume()
        engine.halt("second incident")
        rec.wait_for(lambda evs: sum(e["type"] == "execution_completed"
                                     and e["workflow_id"] == "cancel_all" for e in evs) == 2)
        assert [c["halt_reason"] for c in hook.calls] == ["incident", "second incident"]
        assert engine.status()["running"] == 0
    finally:
        engine.stop()


def test_hooks_run_when_a_limit_halts() -> None:
    hook = Hook()
    engine = Engine.start(Config.from_dict({"emergency": {"limits": [
        {"name": "loss", "kind": "daily_loss", "threshold": 100.0}]}}),
        on_halt=[hook.workflow])
    try:
        rec = started(engine)
        engine.risk_update("loss", value=150.0)
        rec.wait_for(lambda evs: any(e["type"] == "execution_completed"
                                     and e["workflow_id"] == "cancel_all" for e in evs))
        assert hook.calls[-1]["halt_source"] == "risk_limit"
        assert hook.calls[-1]["halt_origin"] == "engine"
    finally:
        engine.stop()


@pytest.mark.parametrize("auto_halt", [True, False])
def test_hook_actions_are_not_held_to_the_action_rate(auto_halt: bool) -> None:
    # A manual clock stands still: the one-second window never passes, so an action held
    # to the rate would wait (or halt) for ever.
    hook = Hook()
    engine = Engine.start(Config.from_dict({"emergency": {"limits": [
        {"name": "rate", "kind": "action_rate", "threshold": 1.0, "auto_halt": auto_halt}]}}),
        clock=ManualClock(), on_halt=[hook.workflow])
    try:
        rec = started(engine)
        one = Workflow("one", nodes=[Node("act", lambda ctx: 1, category="action")])
        assert engine.submit(one).result(timeout=WAIT_S).status == "completed"
        if auto_halt:
            over = engine.submit(one).result(timeout=WAIT_S)  # over the rate: HALT
            assert over.status == "halted"
        else:
            engine.halt("manual")
        rec.wait_for(lambda evs: any(e["type"] == "execution_completed"
                                     and e["workflow_id"] == "cancel_all" for e in evs))
        assert engine.state is EmergencyState.HALT
        expected = ("risk_limit", "engine") if auto_halt else ("manual", "api")
        assert (hook.calls[0]["halt_source"], hook.calls[0]["halt_origin"]) == expected
    finally:
        engine.stop()


def test_hanging_hooks_neither_delay_a_halt_nor_end_with_the_next_one() -> None:
    gates = {"first": threading.Event(), "second": threading.Event()}
    hook = Hook(gates=gates)
    # One running slot, one queued: the engine is full once a hook runs and one waits.
    engine = Engine.start(Config.from_dict({"daemon": {"max_concurrent_executions": 1,
                                                       "max_queued_executions": 1}}),
                          on_halt=[hook.workflow])
    quick = Workflow("w", nodes=[Node("n", lambda ctx: 1)])
    try:
        rec = started(engine)
        engine.halt("first")
        hook.wait_entered(1)  # the hook's action is running, and stays there
        assert engine.resume()["state"] == "NORMAL"
        queued = engine.submit(quick)
        overloaded = engine.submit(quick).result(timeout=WAIT_S)
        assert overloaded.error_type == "Overloaded"
        assert engine.halt("second") == {"state": "HALT", "previous_state": "NORMAL"}
        assert queued.result(timeout=WAIT_S).status == "halted"
        hook.wait_entered(2)  # a full engine did not keep the second hook out
        assert hook.calls == [], "both hooks are still inside their action"
        engine.resume()
        waiting = engine.submit(quick)
        gates["first"].set()
        rec.wait_for(lambda evs: sum(e["type"] == "execution_completed"
                                     and e["workflow_id"] == "cancel_all" for e in evs) == 1)
        # The first hook's slot was one over the limit: it is given back, not passed on
        # while the second hook still runs.
        engine.supervisor_stats()  # a round trip: the supervisor has finished closing it
        assert engine.status()["queued"] == 1 and not waiting.done()
        gates["second"].set()
        assert waiting.result(timeout=WAIT_S).status == "completed"
        ends = [(e["workflow_id"], e["type"]) for e in rec.events if e["type"] in TERMINAL]
        assert ends.count(("cancel_all", "execution_completed")) == 2, (
            "the second halt ended the first hook")
        assert engine.status()["running"] == 0, "forced hook slots are all given back"
        assert engine.submit(quick).result(timeout=WAIT_S).status == "completed"
    finally:
        for gate in gates.values():
            gate.set()
        engine.stop()


def test_a_failing_hook_is_logged_loudly_and_the_halt_stands() -> None:
    def broken(ctx: NodeContext) -> None:
        raise ConnectionError("exchange unreachable")

    bad = Workflow("bad_hook", nodes=[Node("cancel", broken, category="action")])
    good = Hook()
    engine = Engine.start(on_halt=[bad, good.workflow])
    try:
        rec = started(engine)
        with capture_logs() as logs:
            assert engine.halt("incident")["state"] == "HALT"
            rec.wait_for(lambda evs: {e["workflow_id"] for e in evs if e["type"] in TERMINAL}
                         == {"bad_hook", "cancel_all"})
        failed = [entry for entry in logs if entry["event"] == "on_halt_hook_failed"]
        assert [(f["log_level"], f["workflow_id"], f["error_type"]) for f in failed] == [
            ("error", "bad_hook", "ConnectionError")]
        assert engine.state is EmergencyState.HALT
        assert len(good.calls) == 1, "one failing hook does not keep the others from running"
    finally:
        engine.stop()


def test_a_hook_that_cannot_be_submitted_is_logged_and_the_halt_stands() -> None:
    good = Hook()
    engine = Engine.start(on_halt=[good.workflow])
    try:
        def refuse(workflow: Workflow, inputs: Any, recorded: Any) -> Any:
            raise RuntimeError("no supervisor")

        engine._halt_hooks._submit = refuse
        with capture_logs() as logs:
            assert engine.halt("incident") == {"state": "HALT", "previous_state": "NORMAL"}
            assert engine.resume()["state"] == "NORMAL"  # a round trip: the hooks ran by now
        assert [(e["event"], e["log_level"]) for e in logs
                if e["event"].startswith("on_halt")] == [("on_halt_hook_failed", "error")]
    finally:
        engine.stop()


def test_stop_cancels_a_running_hook() -> None:
    gate = threading.Event()
    hook = Hook(gates={"incident": gate})
    engine = Engine.start(on_halt=[hook.workflow])
    handles: list[Any] = []
    try:
        engine.subscribe(lambda e: handles.append(e) if e["type"] in TERMINAL else None)
        engine.halt("incident")
        hook.wait_entered(1)
    finally:
        engine.stop()
        gate.set()
    assert [e["status"] for e in handles] == ["cancelled"]


def test_on_halt_must_be_workflows() -> None:
    with pytest.raises(TypeError, match=r"on_halt\[1\]"):
        Engine.start(on_halt=[Hook().workflow, "cancel_all"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="on_halt"):
        Engine.start(on_halt=Hook().workflow)  # type: ignore[arg-type]


# -- [[emergency.on_halt]] in the config ---------------------------------------------------------

HOOK_MODULE = textwrap.dedent("""
    from actors import Node, Workflow

    calls = []

    def cancel_all(ctx):
        calls.append(ctx.inputs["halt_reason"])
        return "cancelled"

    hook = Workflow("cfg_hook", nodes=[Node("cancel", cancel_all, category="action")])
    not_a_workflow = 7
""")


@pytest.fixture
def hook_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    name = f"hookmod_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(HOOK_MODULE)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path, name
    sys.modules.pop(name, None)


def test_config_on_halt_hooks_are_imported_and_run(hook_module: tuple[Path, str]) -> None:
    directory, name = hook_module
    path = directory / "daemon.toml"
    path.write_text(f'[[emergency.on_halt]]\nref = "{name}:hook"\n')
    config = Config.load(path)
    (entry,) = config.emergency.on_halt
    assert entry.ref == f"{name}:hook" and entry.workflow.id == "cfg_hook"
    engine = Engine.start(config)
    try:
        rec = started(engine)
        engine.halt("from config")
        rec.wait_for(lambda evs: any(e["type"] == "execution_completed"
                                     and e["workflow_id"] == "cfg_hook" for e in evs))
        assert sys.modules[name].calls == ["from config"]
    finally:
        engine.stop()


@pytest.mark.parametrize("table, key", [
    ({"ref": "{name}:missing"}, "emergency.on_halt[1].ref"),
    ({"ref": "{name}:not_a_workflow"}, "emergency.on_halt[1].ref"),
    ({"ref": "no_such_module_xyz:hook"}, "emergency.on_halt[1].ref"),
    ({"ref": 5}, "emergency.on_halt[1].ref"),
    ({}, "'emergency.on_halt[1].ref'"),
    ({"ref": "{name}:hook", "every_s": 1.0}, "emergency.on_halt[1].every_s"),
])
def test_a_bad_on_halt_entry_is_refused_naming_the_key(
        hook_module: tuple[Path, str], table: dict[str, Any], key: str) -> None:
    directory, name = hook_module
    bad = {k: v.format(name=name) if isinstance(v, str) else v for k, v in table.items()}
    raw = {"emergency": {"on_halt": [{"ref": f"{name}:hook"}, bad]}}
    with pytest.raises(ConfigError) as exc:
        Config.from_dict(raw, base_dir=directory)
    assert key in str(exc.value)


def test_on_halt_must_be_an_array_of_tables() -> None:
    with pytest.raises(ConfigError, match=r"emergency\.on_halt"):
        Config.from_dict({"emergency": {"on_halt": {"ref": "x:y"}}})
