"""Risk limits: warnings once per upward crossing, breach -> HALT (source "risk_limit"),
ctx.risk from inside a node, the 00:00 UTC reset of daily_loss (ManualClock), drawdown by
value and by equity, position_size, custom, action_rate (waiting and auto_halt), and the
limits in status().

Risk updates are synchronous: their events are sequenced before the reply, so a test can
look at the recorded events as soon as `risk_update` returns.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from actors import (
    EmergencyState,
    Engine,
    ManualClock,
    Node,
    NodeContext,
    NotFound,
    ResumeRefused,
    Workflow,
)
from actors.config import LimitConfig
from actors.errors import ConfigError
from actors.messages import GetStatus, RiskUpdate
from actors.risk import RiskBook
from tests.conftest import EngineFactory, Recorder, state_now

WAIT_S = 20.0
BLOCK_S = 10.0
DAY = 86_400.0
TERMINAL_TYPES = {"execution_completed", "execution_failed", "execution_halted",
                  "execution_cancelled"}


def limits_config(*limits: dict[str, Any], warn_at: float | None = None,
                  **daemon: Any) -> dict[str, Any]:
    emergency: dict[str, Any] = {"limits": list(limits)}
    if warn_at is not None:
        emergency["warn_at"] = warn_at
    config: dict[str, Any] = {"emergency": emergency}
    if daemon:
        config["daemon"] = daemon
    return config


def limit(name: str, kind: str, threshold: float, auto_halt: bool = True) -> dict[str, Any]:
    return {"name": name, "kind": kind, "threshold": threshold, "auto_halt": auto_halt}


DAILY_LOSS = limit("daily_loss", "daily_loss", 1000.0)


def started(make_engine: EngineFactory, *limits: dict[str, Any],
            clock: ManualClock | None = None, **daemon: Any) -> tuple[Engine, Recorder]:
    engine = make_engine(limits_config(*limits, **daemon), clock=clock)
    rec = Recorder()
    rec.follow(engine)
    return engine, rec


def risk_fields(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event["limit"], event["value"], event["threshold"], event["utilization"])


def changes(rec: Recorder) -> list[tuple[str, str, str]]:
    return [(e["state"], e["previous_state"], e["source"])
            for e in rec.of_type("emergency_state_changed")]


class Gate:
    """A provider that tells the test it is running, then blocks until cancelled."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.returned = threading.Event()
        self.saw_cancel: list[bool] = []

    def __call__(self, ctx: NodeContext) -> int:
        self.entered.set()
        self.saw_cancel.append(ctx.cancelled.wait(BLOCK_S))
        self.returned.set()
        return 1


# -- warnings and breaches --------------------------------------------------------------------

def test_warning_once_per_upward_crossing_of_warn_at(make_engine: EngineFactory) -> None:
    engine, rec = started(make_engine, DAILY_LOSS)
    assert engine.risk_update("daily_loss", value=500.0) == {
        "limit": "daily_loss", "value": 500.0, "utilization": 0.5}
    assert rec.of_type("risk_limit_warning") == []
    engine.risk_update("daily_loss", value=799.0)
    assert rec.of_type("risk_limit_warning") == []

    engine.risk_update("daily_loss", value=800.0)  # exactly 80 %
    warnings = rec.of_type("risk_limit_warning")
    assert [risk_fields(e) for e in warnings] == [("daily_loss", 800.0, 1000.0, 0.8)]
    for value in (850.0, 900.0, 990.0):  # still above: no more warnings
        engine.risk_update("daily_loss", value=value)
    engine.risk_update("daily_loss", delta=5.0)
    assert len(rec.of_type("risk_limit_warning")) == 1

    engine.risk_update("daily_loss", value=500.0)  # drops below ...
    assert len(rec.of_type("risk_limit_warning")) == 1
    engine.risk_update("daily_loss", value=820.0)  # ... and crosses again: a new warning
    warnings = rec.of_type("risk_limit_warning")
    assert [risk_fields(e) for e in warnings] == [
        ("daily_loss", 800.0, 1000.0, 0.8), ("daily_loss", 820.0, 1000.0, 0.82)]
    for event in warnings:
        assert event["v"] == 1
        assert isinstance(event["seq"], int)
    # A warning never changes the state.
    assert engine.state is EmergencyState.NORMAL
    assert rec.of_type("emergency_state_changed") == []
    assert rec.of_type("risk_limit_exceeded") == []


def test_warn_at_is_configurable(make_engine: EngineFactory) -> None:
    engine, rec = started(make_engine, DAILY_LOSS, warn_at=0.5)
    engine.risk_update("daily_loss", value=499.0)
    assert rec.of_type("risk_limit_warning") == []
    engine.risk_update("daily_loss", value=500.0)
    assert [risk_fields(e) for e in rec.of_type("risk_limit_warning")] == [
        ("daily_loss", 500.0, 1000.0, 0.5)]


def test_daily_loss_at_threshold_exceeds_and_halts(make_engine: EngineFactory) -> None:
    engine, rec = started(make_engine, DAILY_LOSS)
    gate = Gate()
    wf = Workflow("risky", nodes=[
        Node("p", gate, category="provider"),
        Node("a", lambda ctx: "order", category="action", depends_on=["p"]),
    ])
    running = engine.submit(wf)
    assert gate.entered.wait(WAIT_S)
    for _ in range(9):
        engine.risk_update("daily_loss", delta=100.0)
        assert engine.state is EmergencyState.NORMAL
    reply = engine.ref.ask(RiskUpdate(limit="daily_loss", delta=100.0), timeout=WAIT_S)
    assert reply == {"limit": "daily_loss", "value": 1000.0, "utilization": 1.0}
    assert engine.state is EmergencyState.HALT

    exceeded = rec.of_type("risk_limit_exceeded")
    assert [risk_fields(e) for e in exceeded] == [("daily_loss", 1000.0, 1000.0, 1.0)]
    [change] = rec.of_type("emergency_state_changed")
    assert (change["state"], change["previous_state"], change["source"]) == (
        "HALT", "NORMAL", "risk_limit")
    assert "daily_loss" in change["reason"]
    assert exceeded[0]["seq"] < change["seq"]
    assert len(rec.of_type("risk_limit_warning")) == 1  # crossed 80 % on the way up

    # The halt it caused is a real one: running work ends halted, new work is refused.
    result = running.result(timeout=WAIT_S)
    assert result.status == "halted"
    assert result.error_type == "Halted"
    assert gate.returned.wait(WAIT_S)
    assert gate.saw_cancel == [True]
    skipped = [(e["node_id"], e["reason"]) for e in rec.for_execution(running.execution_id)
               if e["type"] == "node_skipped"]
    assert skipped == [("a", "halted")]
    refused = engine.submit(wf).result(timeout=5)
    assert (refused.status, refused.error_type) == ("refused", "Halted")
    # Further updates above the threshold do not emit a second exceeded or a second HALT.
    engine.risk_update("daily_loss", delta=50.0)
    assert len(rec.of_type("risk_limit_exceeded")) == 1
    assert len(rec.of_type("emergency_state_changed")) == 1
    with pytest.raises(ResumeRefused):
        engine.resume()


def test_ctx_risk_from_inside_a_node(make_engine: EngineFactory) -> None:
    engine, rec = started(make_engine, DAILY_LOSS)
    replies: list[dict[str, Any]] = []
    actions: list[str] = []

    def book_loss(ctx: NodeContext) -> float:
        replies.append(ctx.risk("daily_loss", delta=ctx.inputs["loss"]))
        return float(ctx.inputs["loss"])

    def trade(ctx: NodeContext) -> str:
        actions.append(ctx.execution_id)
        return "filled"

    wf = Workflow("pnl", nodes=[
        Node("loss", book_loss, category="provider"),
        Node("trade", trade, category="action", depends_on=["loss"]),
    ])
    first = engine.submit(wf, {"loss": 850.0}).result(timeout=WAIT_S)
    assert first.status == "completed"
    assert replies == [{"limit": "daily_loss", "value": 850.0, "utilization": 0.85}]
    assert [risk_fields(e) for e in rec.of_type("risk_limit_warning")] == [
        ("daily_loss", 850.0, 1000.0, 0.85)]
    assert engine.state is EmergencyState.NORMAL

    second = engine.submit(wf, {"loss": 200.0})
    result = second.result(timeout=WAIT_S)
    assert state_now(engine) is EmergencyState.HALT
    assert result.status == "halted", result
    assert result.error_type == "Halted"
    assert actions == [first.execution_id], "the action after the breach must not run"
    assert [risk_fields(e) for e in rec.of_type("risk_limit_exceeded")] == [
        ("daily_loss", 1050.0, 1000.0, 1.05)]
    assert changes(rec) == [("HALT", "NORMAL", "risk_limit")]
    evs = rec.for_execution(second.execution_id)
    assert evs[-1]["type"] == "execution_halted"
    assert [(e["node_id"], e["reason"]) for e in evs if e["type"] == "node_skipped"] == [
        ("trade", "halted")]
    halt_seq = rec.of_type("emergency_state_changed")[0]["seq"]
    assert not [e for e in rec.events if e["type"] == "node_started" and e["seq"] > halt_seq]
    assert engine.status()["limits"]["daily_loss"]["value"] == 1050.0


def test_unknown_limit_is_not_found(make_engine: EngineFactory) -> None:
    engine, _ = started(make_engine, DAILY_LOSS)
    with pytest.raises(NotFound):
        engine.risk_update("no_such_limit", value=1.0)


# -- daily reset at 00:00 UTC ------------------------------------------------------------------

def test_daily_loss_resets_at_midnight_utc(make_engine: EngineFactory) -> None:
    clock = ManualClock()
    midnight = (clock.time() // DAY + 1) * DAY  # the next 00:00 UTC
    clock.set_wall(midnight - 5.0)
    engine, rec = started(make_engine, DAILY_LOSS, clock=clock)
    engine.risk_update("daily_loss", delta=600.0)
    engine.risk_update("daily_loss", delta=250.0)
    assert engine.status()["limits"]["daily_loss"] == {
        "value": 850.0, "threshold": 1000.0, "utilization": 0.85}
    assert len(rec.of_type("risk_limit_warning")) == 1

    clock.advance(4.0)  # 23:59:59: still the same day
    assert engine.status()["limits"]["daily_loss"]["value"] == 850.0
    clock.advance(2.0)  # 00:00:01 UTC: a new day
    assert engine.status()["limits"]["daily_loss"] == {
        "value": 0.0, "threshold": 1000.0, "utilization": 0.0}
    # The new day counts from zero and warns afresh.
    assert engine.risk_update("daily_loss", delta=100.0)["value"] == 100.0
    assert len(rec.of_type("risk_limit_warning")) == 1
    engine.risk_update("daily_loss", delta=700.0)
    assert len(rec.of_type("risk_limit_warning")) == 2
    assert engine.state is EmergencyState.NORMAL


def test_daily_reset_clears_an_exceeded_limit_so_resume_is_allowed(
        make_engine: EngineFactory) -> None:
    clock = ManualClock()
    midnight = (clock.time() // DAY + 1) * DAY
    clock.set_wall(midnight - 60.0)
    engine, rec = started(make_engine, DAILY_LOSS, clock=clock)
    engine.risk_update("daily_loss", delta=1200.0)
    assert engine.state is EmergencyState.HALT
    with pytest.raises(ResumeRefused):
        engine.resume()
    clock.advance(61.0)
    # A new day does not lift a halt by itself; it makes a plain resume possible.
    assert engine.state is EmergencyState.HALT
    assert engine.status()["limits"]["daily_loss"]["value"] == 0.0
    assert engine.resume() == {"state": "NORMAL", "previous_state": "HALT"}
    assert changes(rec) == [("HALT", "NORMAL", "risk_limit"), ("NORMAL", "HALT", "manual")]


# -- drawdown_pct, position_size, custom --------------------------------------------------------

def test_drawdown_pct_by_value_in_percent(make_engine: EngineFactory) -> None:
    engine, rec = started(make_engine, limit("drawdown", "drawdown_pct", 20.0))
    engine.risk_update("drawdown", value=15.9)
    assert rec.of_type("risk_limit_warning") == []
    engine.risk_update("drawdown", value=16.0)
    assert [risk_fields(e) for e in rec.of_type("risk_limit_warning")] == [
        ("drawdown", 16.0, 20.0, 0.8)]
    engine.risk_update("drawdown", value=19.99)
    assert engine.state is EmergencyState.NORMAL
    engine.risk_update("drawdown", value=20.0)
    assert state_now(engine) is EmergencyState.HALT
    assert [risk_fields(e) for e in rec.of_type("risk_limit_exceeded")] == [
        ("drawdown", 20.0, 20.0, 1.0)]
    assert changes(rec) == [("HALT", "NORMAL", "risk_limit")]


def test_drawdown_pct_by_equity_tracks_the_peak(make_engine: EngineFactory) -> None:
    engine, rec = started(make_engine, limit("drawdown", "drawdown_pct", 20.0))
    assert engine.risk_update("drawdown", equity=10_000.0)["value"] == 0.0
    assert engine.risk_update("drawdown", equity=9_000.0)["value"] == pytest.approx(10.0)
    assert engine.risk_update("drawdown", equity=12_000.0)["value"] == 0.0  # a new peak
    # 10,800 is 10 % below the 12,000 peak (and above the first 10,000).
    assert engine.risk_update("drawdown", equity=10_800.0)["value"] == pytest.approx(10.0)
    assert rec.of_type("risk_limit_warning") == []
    warned = engine.risk_update("drawdown", equity=9_600.0)  # 20 % below the peak
    assert warned["value"] == pytest.approx(20.0)
    assert warned["utilization"] == pytest.approx(1.0)
    assert engine.state is EmergencyState.HALT
    assert len(rec.of_type("risk_limit_warning")) == 1
    [exceeded] = rec.of_type("risk_limit_exceeded")
    assert exceeded["limit"] == "drawdown"
    assert exceeded["value"] == pytest.approx(20.0)
    assert changes(rec) == [("HALT", "NORMAL", "risk_limit")]
    assert engine.status()["limits"]["drawdown"]["value"] == pytest.approx(20.0)


def test_position_size_is_set_not_accumulated(make_engine: EngineFactory) -> None:
    engine, rec = started(make_engine, limit("btc_position", "position_size", 10.0))
    engine.risk_update("btc_position", value=5.0)
    engine.risk_update("btc_position", value=5.0)
    assert engine.status()["limits"]["btc_position"]["value"] == 5.0
    assert engine.state is EmergencyState.NORMAL
    engine.risk_update("btc_position", value=10.0)
    assert state_now(engine) is EmergencyState.HALT
    assert [risk_fields(e) for e in rec.of_type("risk_limit_exceeded")] == [
        ("btc_position", 10.0, 10.0, 1.0)]
    assert changes(rec) == [("HALT", "NORMAL", "risk_limit")]


def test_custom_limit_without_auto_halt_reports_but_does_not_halt(
        make_engine: EngineFactory) -> None:
    engine, rec = started(make_engine, limit("rejects", "custom", 3.0, auto_halt=False),
                          DAILY_LOSS)
    for _ in range(3):
        engine.risk_update("rejects", delta=1.0)
    assert [risk_fields(e) for e in rec.of_type("risk_limit_warning")] == [
        ("rejects", 3.0, 3.0, 1.0)]
    assert [risk_fields(e) for e in rec.of_type("risk_limit_exceeded")] == [
        ("rejects", 3.0, 3.0, 1.0)]
    assert engine.state is EmergencyState.NORMAL
    assert rec.of_type("emergency_state_changed") == []
    assert engine.status()["limits"]["rejects"]["utilization"] == 1.0


def test_custom_limit_with_auto_halt(make_engine: EngineFactory) -> None:
    engine, rec = started(make_engine, limit("errors", "custom", 2.0))
    engine.risk_update("errors", delta=1.0)
    engine.risk_update("errors", delta=1.0)
    assert engine.state is EmergencyState.HALT
    assert changes(rec) == [("HALT", "NORMAL", "risk_limit")]


# -- action_rate --------------------------------------------------------------------------------

def single_action(record: list[float], lock: threading.Lock, wf_id: str) -> Workflow:
    def act(ctx: NodeContext) -> str:
        t = time.monotonic()
        with lock:
            record.append(t)
        return ctx.idempotency_key

    return Workflow(wf_id, nodes=[Node("act", act, category="action")])


def test_action_rate_without_auto_halt_paces_action_starts(make_engine: EngineFactory
                                                           ) -> None:
    threshold, count = 5, 12
    engine, rec = started(make_engine,
                          limit("rate", "action_rate", float(threshold), auto_halt=False))
    starts: list[float] = []
    wf = single_action(starts, threading.Lock(), "paced")
    handles = [engine.submit(wf, {"i": i}) for i in range(count)]
    results = [h.result(timeout=WAIT_S) for h in handles]
    assert {r.status for r in results} == {"completed"}
    assert len(starts) == count
    starts.sort()
    # No more than `threshold` starts in any 1-second window. The gate admits by its own
    # clock reading; a function is entered a moment later, so allow a few ms of slack.
    slack = 0.1
    for i in range(count - threshold):
        window = starts[i + threshold] - starts[i]
        assert window >= 1.0 - slack, (
            f"starts {i}..{i + threshold} ({threshold + 1} actions) within {window:.3f}s")
    assert starts[-1] - starts[0] >= 2.0 - slack  # 12 at 5/s take two full windows
    assert engine.state is EmergencyState.NORMAL
    assert rec.of_type("emergency_state_changed") == []
    assert rec.of_type("risk_limit_exceeded"), "going over the rate is reported"
    print(f"\naction_rate {threshold}/s: {count} actions over "
          f"{starts[-1] - starts[0]:.2f}s")


def test_action_rate_with_auto_halt_halts_and_the_over_rate_action_does_not_run(
        make_engine: EngineFactory) -> None:
    # A manual clock stands still: all starts fall in one window, deterministically.
    threshold = 5
    engine, rec = started(make_engine, limit("rate", "action_rate", float(threshold)),
                          clock=ManualClock())
    starts: list[float] = []
    lock = threading.Lock()
    wf = single_action(starts, lock, "burst")
    completed = [engine.submit(wf, {"i": i}).result(timeout=WAIT_S) for i in range(threshold)]
    assert {r.status for r in completed} == {"completed"}
    assert engine.state is EmergencyState.NORMAL

    over = engine.submit(wf, {"i": threshold})
    result = over.result(timeout=WAIT_S)
    assert result.status == "halted", result
    assert result.error_type == "Halted"
    assert len(starts) == threshold, "the action over the rate must not run"
    assert state_now(engine) is EmergencyState.HALT
    [change] = rec.of_type("emergency_state_changed")
    assert (change["state"], change["previous_state"], change["source"]) == (
        "HALT", "NORMAL", "risk_limit")
    exceeded = rec.of_type("risk_limit_exceeded")
    assert [e["limit"] for e in exceeded] == ["rate"]
    assert exceeded[0]["seq"] < change["seq"]
    evs = rec.for_execution(over.execution_id)
    assert [e["type"] for e in evs if e["type"] in TERMINAL_TYPES] == ["execution_halted"]
    assert not [e for e in evs if e["type"] == "node_started"]
    assert [(e["node_id"], e["reason"]) for e in evs if e["type"] == "node_skipped"] == [
        ("act", "halted")], [e["type"] for e in evs]
    refused = engine.submit(wf).result(timeout=5)
    assert refused.status == "refused"


def test_status_shows_the_action_rate_of_the_last_second_not_of_the_last_start(
        make_engine: EngineFactory) -> None:
    """The rate is the starts in the last second as of now: status, as resume does."""
    clock = ManualClock()
    engine, _ = started(make_engine, limit("rate", "action_rate", 2.0, auto_halt=False),
                        clock=clock)
    wf = single_action([], threading.Lock(), "rated")
    for i in range(2):
        assert engine.submit(wf, {"i": i}).result(timeout=WAIT_S).status == "completed"
    assert engine.status()["limits"]["rate"] == {"value": 2.0, "threshold": 2.0,
                                                 "utilization": 1.0}
    clock.advance(1.5)
    assert engine.status()["limits"]["rate"] == {"value": 0.0, "threshold": 2.0,
                                                 "utilization": 0.0}


# -- status ------------------------------------------------------------------------------------

def test_status_limits_show_value_threshold_utilization(make_engine: EngineFactory) -> None:
    engine, _ = started(make_engine, DAILY_LOSS,
                        limit("btc_position", "position_size", 4.0),
                        limit("drawdown", "drawdown_pct", 10.0),
                        limit("custom_score", "custom", 50.0, auto_halt=False))
    status = engine.status()
    assert status["limits"] == {
        "daily_loss": {"value": 0.0, "threshold": 1000.0, "utilization": 0.0},
        "btc_position": {"value": 0.0, "threshold": 4.0, "utilization": 0.0},
        "drawdown": {"value": 0.0, "threshold": 10.0, "utilization": 0.0},
        "custom_score": {"value": 0.0, "threshold": 50.0, "utilization": 0.0},
    }
    engine.risk_update("daily_loss", delta=250.0)
    engine.risk_update("btc_position", value=1.0)
    engine.risk_update("drawdown", value=2.5)
    engine.ref.ask(RiskUpdate(limit="custom_score", delta=10.0))
    limits = engine.ref.ask(GetStatus(), block=True, timeout=WAIT_S)["limits"]
    assert limits == {
        "daily_loss": {"value": 250.0, "threshold": 1000.0, "utilization": 0.25},
        "btc_position": {"value": 1.0, "threshold": 4.0, "utilization": 0.25},
        "drawdown": {"value": 2.5, "threshold": 10.0, "utilization": 0.25},
        "custom_score": {"value": 10.0, "threshold": 50.0, "utilization": 0.2},
    }
    assert engine.status()["state"] == "NORMAL"


def test_a_drawdown_limit_is_at_most_100_percent() -> None:
    """Built without the config parser too (the risk book checks on its own): a
    drawdown_pct threshold over 100 could never trip, so it is refused; 100 is accepted."""
    clock = ManualClock()
    with pytest.raises(ConfigError, match="drawdown_pct threshold is in percent"):
        RiskBook((LimitConfig(name="dd", kind="drawdown_pct", threshold=150.0),), warn_at=0.8,
                 clock=clock)
    book = RiskBook((LimitConfig(name="dd", kind="drawdown_pct", threshold=100.0),), warn_at=0.8,
                    clock=clock)
    assert book.limits["dd"].threshold == 100.0
