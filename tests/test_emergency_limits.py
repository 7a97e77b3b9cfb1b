"""Risk limits that cannot be disarmed: non-finite figures and settings refused (the limit
keeps its figure, a resume stays refused), the daily reset at the operator's local time
(DST-correct), and the stale-feed watchdog (a dead feed is not a safe one)."""

from __future__ import annotations

import math
import textwrap
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import (
    Config,
    ConfigError,
    EmergencyState,
    Engine,
    LimitExceeded,
    ManualClock,
    Node,
    Workflow,
)
from actors.config import LimitConfig
from actors.messages import RiskUpdate
from actors.risk import RiskBook, trading_day
from tests.conftest import EngineFactory, Recorder, state_now
from tests.engine_journal_helpers import captured_logs

WAIT_S = 20.0
NAN, INF = float("nan"), float("inf")


def limits(*tables: dict[str, Any]) -> dict[str, Any]:
    return {"emergency": {"limits": list(tables)}}


LOSS = {"name": "loss", "kind": "daily_loss", "threshold": 1000.0}
DRAWDOWN = {"name": "dd", "kind": "drawdown_pct", "threshold": 20.0}


def figures(engine: Engine, name: str) -> tuple[float, bool, bool]:
    stats = engine.gate.book.stats()[name]
    return stats["value"], stats["exceeded"], engine.gate.book.limits[name].warned


# -- non-finite figures never disarm a limit ---------------------------------------------------

def test_a_nan_figure_leaves_an_exceeded_limit_armed_and_resume_refused(
        make_engine: EngineFactory) -> None:
    engine = make_engine(limits(LOSS))
    rec = Recorder()
    rec.follow(engine)
    engine.risk_update("loss", value=1500.0)
    assert engine.state is EmergencyState.HALT
    before = figures(engine, "loss")
    seq = engine.status()["last_seq"]
    for kwargs in ({"value": NAN}, {"value": INF}, {"value": -INF}, {"delta": NAN},
                   {"delta": -INF}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            engine.risk_update("loss", **kwargs)
        with pytest.raises(ValueError):
            engine.ref.ask(RiskUpdate(limit="loss", **kwargs), timeout=WAIT_S)
        assert figures(engine, "loss") == before, kwargs
    assert engine.status()["last_seq"] == seq, "a refused figure publishes nothing"
    with pytest.raises(LimitExceeded):
        engine.resume()
    assert engine.state is EmergencyState.HALT


def test_reduce_only_out_of_a_halt_lets_positions_close_until_the_figure_rises(
        make_engine: EngineFactory) -> None:
    """REDUCE_ONLY from HALT is how positions close (CONTRACT 7): a figure still over the
    threshold but falling must not halt it again, or the reducing action is refused; a
    figure that rises does halt it again."""
    engine = make_engine(limits({"name": "pos", "kind": "position_size",
                                 "threshold": 100.0}))
    calls: list[str] = []
    close = Workflow("close_position", nodes=[
        Node("sell", lambda ctx: calls.append(ctx.idempotency_key), category="action",
             reduces_risk=True)])
    engine.risk_update("pos", value=150.0)
    assert engine.state is EmergencyState.HALT
    engine.reduce_only("close the position")
    engine.risk_update("pos", value=140.0)  # falling, still over
    engine.risk_update("pos", value=140.0)  # the same figure again
    assert state_now(engine) is EmergencyState.REDUCE_ONLY
    result = engine.submit(close).result(timeout=WAIT_S)
    assert result.status == "completed" and len(calls) == 1, result
    engine.risk_update("pos", value=145.0)  # rising again: halt
    assert state_now(engine) is EmergencyState.HALT
    assert engine.status()["state"] == "HALT"


def test_a_short_position_is_judged_by_its_size(make_engine: EngineFactory) -> None:
    """A position_size limit bounds the position either way: a short of -150 against a
    threshold of 100 is over it (signed, it read as utilization -1.5 and never halted)."""
    engine = make_engine(limits({"name": "pos", "kind": "position_size",
                                 "threshold": 100.0}))
    engine.risk_update("pos", value=-79.0)
    assert figures(engine, "pos") == (-79.0, False, False)
    engine.risk_update("pos", value=-80.0)
    assert figures(engine, "pos") == (-80.0, False, True)  # warned at 0.8 x 100
    assert state_now(engine) is EmergencyState.NORMAL
    reply = engine.risk_update("pos", delta=-70.0)
    assert reply["value"] == -150.0 and reply["utilization"] == 1.5
    assert state_now(engine) is EmergencyState.HALT
    assert engine.status()["reason"] == "risk limit pos exceeded: |-150| >= 100"
    engine.reduce_only("buy back")
    engine.risk_update("pos", value=-120.0)  # shrinking, still over: the reduction working
    assert state_now(engine) is EmergencyState.REDUCE_ONLY
    engine.risk_update("pos", value=-130.0)  # growing again: halt
    assert state_now(engine) is EmergencyState.HALT
    engine.risk_update("pos", value=-10.0)
    assert figures(engine, "pos") == (-10.0, False, False)
    engine.resume()
    assert state_now(engine) is EmergencyState.NORMAL


@pytest.mark.parametrize("kwargs, error, named", [
    ({"value": True}, TypeError, "value"),
    ({"delta": False}, TypeError, "delta"),
    ({"value": "1500"}, TypeError, "value"),
    ({"value": [1.0]}, TypeError, "value"),
    ({"value": 1 + 0j}, TypeError, "value"),
    ({}, ValueError, "exactly one"),
    ({"value": 1.0, "delta": 1.0}, ValueError, "exactly one"),
    ({"value": 10**400}, ValueError, "value"),
])
def test_ill_typed_figures_are_refused_naming_the_argument(
        make_engine: EngineFactory, kwargs: dict[str, Any], error: type[Exception],
        named: str) -> None:
    engine = make_engine(limits(LOSS))
    engine.risk_update("loss", value=100.0)
    with pytest.raises(error, match=named):
        engine.risk_update("loss", **kwargs)
    assert figures(engine, "loss") == (100.0, False, False)


def test_equity_must_be_finite_and_the_peak_survives(make_engine: EngineFactory) -> None:
    engine = make_engine(limits(DRAWDOWN))
    engine.risk_update("dd", equity=10_000.0)
    engine.risk_update("dd", equity=7_900.0)  # 21 % down: HALT
    assert engine.state is EmergencyState.HALT
    for bad in (NAN, INF, -INF):
        with pytest.raises(ValueError, match="equity"):
            engine.risk_update("dd", equity=bad)
    with pytest.raises(TypeError, match="equity"):
        engine.risk_update("dd", equity="9000")  # type: ignore[arg-type]
    assert engine.gate.book.limits["dd"].peak_equity == 10_000.0
    assert figures(engine, "dd") == pytest.approx((21.0, True, True))
    with pytest.raises(LimitExceeded):
        engine.resume()


def test_a_sum_that_overflows_is_refused(make_engine: EngineFactory) -> None:
    engine = make_engine(limits({"name": "big", "kind": "custom", "threshold": 1e308}))
    engine.risk_update("big", value=1e308)
    with pytest.raises(ValueError, match="non-finite"):
        engine.risk_update("big", delta=1e308)
    assert figures(engine, "big")[0] == 1e308


def test_real_numbers_of_other_types_are_accepted(make_engine: EngineFactory) -> None:
    class Price(float):
        pass

    engine = make_engine(limits(LOSS))
    assert engine.risk_update("loss", value=Price(10.0))["value"] == 10.0
    # Typed `float` (PEP 484's real number); at run time any numbers.Real is taken, as here.
    half = cast(float, Fraction(1, 2))
    assert engine.risk_update("loss", delta=half)["value"] == 10.5
    assert engine.risk_update("loss", delta=-3)["value"] == 7.5


def test_a_nan_from_a_node_fails_the_node_and_changes_nothing(
        make_engine: EngineFactory) -> None:
    engine = make_engine(limits(LOSS))
    engine.risk_update("loss", value=1200.0)
    engine.reduce_only("close out")
    wf = Workflow("pnl", nodes=[Node("pnl", lambda ctx: ctx.risk("loss", value=NAN))])
    result = engine.submit(wf).result(timeout=WAIT_S)
    assert (result.status, result.error_type) == ("failed", "ValueError")
    assert "value" in (result.error or "")
    assert figures(engine, "loss") == (1200.0, True, True)
    with pytest.raises(LimitExceeded):
        engine.resume()


odd_figures = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.booleans(), st.none(),
    st.text(max_size=3), st.complex_numbers(), st.fractions(),
    st.lists(st.floats(), max_size=2), st.decimals(allow_nan=True))


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["value", "delta"]), figure=odd_figures)
def test_any_figure_either_applies_finitely_or_changes_nothing(kind: str, figure: Any) -> None:
    clock = ManualClock()
    book = RiskBook((LimitConfig(name="loss", kind="daily_loss", threshold=1000.0),),
                    warn_at=0.8, clock=clock)
    book.update("loss", value=1500.0)
    limit = book.limits["loss"]
    try:
        book.update("loss", **{kind: figure})
    except (TypeError, ValueError):
        assert (limit.value, limit.exceeded, limit.warned) == (1500.0, True, True)
    else:
        assert math.isfinite(limit.value)
        assert limit.exceeded == (limit.value >= 1000.0)
    assert book.blocking() == (["loss"] if limit.exceeded else [])


# -- non-finite and bad settings refused at load, naming the key -------------------------------

@pytest.mark.parametrize("raw, key", [
    (limits({**LOSS, "threshold": NAN}), "emergency.limits[0].threshold"),
    (limits({**LOSS, "threshold": INF}), "emergency.limits[0].threshold"),
    (limits(LOSS, {**DRAWDOWN, "stale_after_s": INF}), "emergency.limits[1].stale_after_s"),
    (limits({**LOSS, "stale_after_s": 0}), "emergency.limits[0].stale_after_s"),
    (limits({**LOSS, "stale_after_s": 1e-6}), "emergency.limits[0].stale_after_s must be >= 0.01"),
    (limits({**LOSS, "stale_after_s": 0.009}), "emergency.limits[0].stale_after_s"),
    (limits({"name": "r", "kind": "action_rate", "threshold": 5.0, "stale_after_s": 1.0}),
     "emergency.limits[0].stale_after_s"),
    ({"emergency": {"warn_at": NAN}}, "emergency.warn_at"),
    ({"resilience": {"timeout_s": INF}}, "resilience.timeout_s"),
    ({"resilience": {"backoff_max_s": -INF}}, "resilience.backoff_max_s"),
    ({"transport": {"heartbeat_s": NAN}}, "transport.heartbeat_s"),
    ({"resilience": {"timeout_s": 10**400}}, "resilience.timeout_s"),
    (limits({**LOSS, "reset_at": "24:00"}), "emergency.limits[0].reset_at"),
    (limits({**LOSS, "reset_at": "7:00"}), "emergency.limits[0].reset_at"),
    (limits({**LOSS, "reset_at": 700}), "emergency.limits[0].reset_at"),
    (limits({**LOSS, "timezone": "Mars/Olympus_Mons"}), "emergency.limits[0].timezone"),
    (limits({**LOSS, "timezone": "../../etc/passwd"}), "emergency.limits[0].timezone"),
    (limits({**LOSS, "timezone": ""}), "emergency.limits[0].timezone"),
    (limits({**DRAWDOWN, "reset_at": "17:00"}), "emergency.limits[0].reset_at"),
    (limits({**DRAWDOWN, "timezone": "UTC"}), "emergency.limits[0].timezone"),
])
def test_bad_limit_settings_are_refused_naming_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Config.from_dict(raw)
    assert key in str(exc.value)


def test_toml_nan_and_inf_are_refused_naming_the_key(tmp_path: Path) -> None:
    for text, key in [("threshold = nan", "emergency.limits[0].threshold"),
                      ("threshold = +inf", "emergency.limits[0].threshold"),
                      ("threshold = 5.0\nstale_after_s = inf",
                       "emergency.limits[0].stale_after_s")]:
        path = tmp_path / "c.toml"
        path.write_text(textwrap.dedent("""
            [[emergency.limits]]
            name = "loss"
            kind = "daily_loss"
        """) + text + "\n")
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            Config.load(path)


def test_a_hand_built_config_with_a_non_finite_threshold_cannot_start() -> None:
    config = Config.from_dict({})
    bad = LimitConfig(name="loss", kind="daily_loss", threshold=INF)
    config = type(config)(emergency=type(config.emergency)(limits=(bad,)))
    with pytest.raises(ConfigError, match="loss"):
        Engine.start(config)


def test_a_hand_built_limit_with_a_tiny_stale_after_s_is_refused() -> None:
    tiny = LimitConfig(name="loss", kind="daily_loss", threshold=1.0, stale_after_s=1e-6)
    with pytest.raises(ConfigError, match=r"'loss': stale_after_s must be .* >= 0\.01, not"):
        RiskBook((tiny,), warn_at=0.8, clock=ManualClock())


def test_daily_reset_settings_load() -> None:
    (lim,) = Config.from_dict(limits({**LOSS, "reset_at": "17:00",
                                      "timezone": "America/New_York",
                                      "stale_after_s": 30})).emergency.limits
    assert (lim.reset_at, lim.timezone, lim.stale_after_s) == ("17:00", "America/New_York",
                                                               30.0)
    (default,) = Config.from_dict(limits(LOSS)).emergency.limits
    assert (default.reset_at, default.timezone, default.stale_after_s) == ("00:00", "UTC",
                                                                           None)


# -- the daily reset where the operator trades ---------------------------------------------------

def wall(text: str) -> float:
    """A UTC instant, "2026-03-08 20:59"."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp()


def test_trading_day_is_the_utc_day_by_default() -> None:
    utc = ZoneInfo("UTC")
    for t in (0.0, 86_399.9, 86_400.0, 1_800_000_000.0, wall("2026-03-08 23:59")):
        assert trading_day(t, utc, 0) == int(t // 86_400)


def test_trading_day_follows_local_time_across_dst() -> None:
    ny = ZoneInfo("America/New_York")
    five_pm = 17 * 60
    # 17:00 New York is 22:00 UTC in winter (EST) and 21:00 UTC in summer (EDT); the
    # clocks went forward on Sunday 2026-03-08.
    day = trading_day(wall("2026-03-07 22:00"), ny, five_pm)
    assert trading_day(wall("2026-03-07 21:59"), ny, five_pm) == day - 1
    assert trading_day(wall("2026-03-08 20:59"), ny, five_pm) == day
    assert trading_day(wall("2026-03-08 21:00"), ny, five_pm) == day + 1
    # A reset time that does not exist that day (02:30) falls at 03:00 EDT = 07:00 UTC.
    half_two = 2 * 60 + 30
    spring = trading_day(wall("2026-03-08 06:59"), ny, half_two)
    assert trading_day(wall("2026-03-08 07:00"), ny, half_two) == spring + 1


def test_daily_loss_resets_at_local_reset_time_on_a_dst_switch_day(
        make_engine: EngineFactory) -> None:
    clock = ManualClock(start_wall=wall("2026-03-07 21:59"))
    engine = make_engine(limits({**LOSS, "reset_at": "17:00",
                                 "timezone": "America/New_York"}), clock=clock)
    engine.risk_update("loss", delta=300.0)
    clock.advance(120)                     # 17:01 EST: a new trading day
    assert engine.status()["limits"]["loss"]["value"] == 0.0
    engine.risk_update("loss", delta=400.0)
    clock.set_wall(wall("2026-03-08 20:59"))  # 16:59 EDT, the day after the switch
    assert engine.status()["limits"]["loss"]["value"] == 400.0
    clock.set_wall(wall("2026-03-08 21:01"))  # 17:01 EDT: an hour earlier in UTC
    assert engine.status()["limits"]["loss"]["value"] == 0.0


def test_the_repeated_hour_of_a_dst_switch_does_not_reset_twice(
        make_engine: EngineFactory) -> None:
    # New York's clocks went back on 2026-11-01: 01:00-02:00 local happened twice.
    clock = ManualClock(start_wall=wall("2026-11-01 05:29"))   # 01:29 EDT
    engine = make_engine(limits({**LOSS, "reset_at": "01:30",
                                 "timezone": "America/New_York"}), clock=clock)
    engine.risk_update("loss", delta=100.0)
    clock.set_wall(wall("2026-11-01 05:31"))                    # 01:31 EDT: new day
    assert engine.risk_update("loss", delta=50.0)["value"] == 50.0
    clock.set_wall(wall("2026-11-01 06:05"))                    # 01:05 EST: same day
    assert engine.risk_update("loss", delta=50.0)["value"] == 100.0
    clock.set_wall(wall("2026-11-01 06:31"))                    # 01:31 EST: same day
    assert engine.status()["limits"]["loss"]["value"] == 100.0


def test_europe_london_midnight_is_2300_utc_in_summer(make_engine: EngineFactory) -> None:
    clock = ManualClock(start_wall=wall("2026-07-01 22:58"))
    engine = make_engine(limits({**LOSS, "timezone": "Europe/London"}), clock=clock)
    engine.risk_update("loss", delta=900.0)
    clock.advance(60)
    assert engine.status()["limits"]["loss"]["value"] == 900.0
    clock.advance(120)                     # 00:01 BST
    assert engine.status()["limits"]["loss"]["value"] == 0.0


def test_a_saved_day_compares_against_the_trading_day_key(make_engine: EngineFactory) -> None:
    cfg = limits({**LOSS, "reset_at": "17:00", "timezone": "America/New_York"})
    clock = ManualClock(start_wall=wall("2026-03-09 20:00"))   # 16:00 EDT
    first = make_engine(cfg, clock=clock)
    first.risk_update("loss", value=1200.0)
    saved = first.gate.snapshot()
    same_day = make_engine(cfg, clock=ManualClock(start_wall=wall("2026-03-09 20:30")))
    same_day.gate.restore(saved)
    assert same_day.status()["limits"]["loss"]["value"] == 1200.0
    with pytest.raises(LimitExceeded):
        same_day.resume()
    next_day = make_engine(cfg, clock=ManualClock(start_wall=wall("2026-03-09 21:30")))
    next_day.gate.restore(saved)
    assert next_day.status()["limits"]["loss"]["value"] == 0.0
    assert next_day.resume() == {"state": "NORMAL", "previous_state": "HALT"}


def test_a_saved_non_finite_figure_is_refused_on_restore(make_engine: EngineFactory) -> None:
    engine = make_engine(limits(LOSS))
    saved = engine.gate.snapshot()
    saved["limits"]["loss"]["value"] = NAN
    with pytest.raises(ValueError, match="loss"):
        engine.gate.restore(saved)


# -- the stale-feed watchdog ---------------------------------------------------------------------

BARRIER = {"name": "barrier", "kind": "custom", "threshold": 1.0, "auto_halt": False}


def watchdog(make_engine: EngineFactory, *tables: dict[str, Any]
             ) -> tuple[Engine, ManualClock, Recorder]:
    clock = ManualClock()
    engine = make_engine(limits(BARRIER, *tables), clock=clock)
    rec = Recorder()
    rec.follow(engine)
    return engine, clock, rec


def settle(engine: Engine) -> None:
    """A round trip through the kill switch's mailbox: whatever it was told before (a
    watchdog tick) has been handled when this returns."""
    engine.risk_update("barrier", value=0.0)


def changes(rec: Recorder) -> list[tuple[str, str, str, str]]:
    return [(e["state"], e["previous_state"], e["source"], e["origin"])
            for e in rec.of_type("emergency_state_changed")]


def test_a_silent_feed_raises_alert_and_an_update_clears_it(make_engine: EngineFactory) -> None:
    feed = {**LOSS, "auto_halt": False, "stale_after_s": 30.0}
    engine, clock, rec = watchdog(make_engine, feed)
    clock.advance(20.0)
    engine.risk_update("loss", value=10.0)   # the clock starts again at each update
    clock.advance(29.0)
    settle(engine)
    assert engine.state is EmergencyState.NORMAL and changes(rec) == []
    clock.advance(1.0)
    rec.wait_type("emergency_state_changed")
    assert changes(rec) == [("ALERT", "NORMAL", "stale_feed", "engine")]
    (event,) = rec.of_type("emergency_state_changed")
    assert "loss" in event["reason"] and "30" in event["reason"]
    assert engine.gate.book.stats()["loss"]["stale"] is True
    engine.risk_update("loss", value=11.0)
    assert engine.gate.book.stats()["loss"]["stale"] is False
    assert state_now(engine) is EmergencyState.ALERT, "a fresh figure does not relax the state"


def test_a_silent_auto_halt_feed_halts_and_ends_executions(make_engine: EngineFactory) -> None:
    engine, clock, rec = watchdog(make_engine, {**DRAWDOWN, "stale_after_s": 5.0})
    engine.reduce_only("de-risk")
    clock.advance(5.0)
    rec.wait_for(lambda evs: any(e.get("state") == "HALT" for e in evs))
    assert changes(rec)[-1] == ("HALT", "REDUCE_ONLY", "stale_feed", "engine")
    result = engine.submit(Workflow("w", nodes=[Node("n", lambda ctx: 1)])).result(WAIT_S)
    assert result.status == "refused"


def test_the_watchdog_never_lowers_the_state(make_engine: EngineFactory) -> None:
    engine, clock, rec = watchdog(make_engine, {**LOSS, "auto_halt": False,
                                                "stale_after_s": 5.0})
    engine.reduce_only("de-risk")
    clock.advance(6.0)
    settle(engine)
    engine.halt("stop")
    clock.advance(6.0)
    settle(engine)
    assert engine.gate.book.stats()["loss"]["stale"] is True
    assert [c[0] for c in changes(rec)] == ["REDUCE_ONLY", "HALT"]


def test_a_feed_still_dead_after_a_resume_is_reported_again(make_engine: EngineFactory) -> None:
    engine, clock, rec = watchdog(make_engine, {**LOSS, "auto_halt": False,
                                                "stale_after_s": 5.0})
    clock.advance(5.0)
    rec.wait_type("emergency_state_changed")
    engine.resume()
    clock.advance(4.0)
    settle(engine)
    assert engine.state is EmergencyState.NORMAL
    clock.advance(1.0)
    rec.wait_type("emergency_state_changed", 3)
    assert [c[:3] for c in changes(rec)] == [("ALERT", "NORMAL", "stale_feed"),
                                             ("NORMAL", "ALERT", "manual"),
                                             ("ALERT", "NORMAL", "stale_feed")]


def test_a_dead_feed_is_logged_once_per_going_stale_not_at_each_check(
        make_engine: EngineFactory) -> None:
    """Each check that finds a feed still dead re-reports it (the state may have been
    lowered meanwhile), but `risk_feed_stale` is logged once until an update clears it: a
    small stale_after_s flooded the log."""
    with captured_logs() as logs:
        engine, clock, _rec = watchdog(make_engine, {**LOSS, "auto_halt": False,
                                                     "stale_after_s": 5.0})
        for _ in range(4):
            clock.advance(5.0)
            settle(engine)
        stale = [e["limit"] for e in logs if e["event"] == "risk_feed_stale"]
        assert stale == ["loss"]
        engine.risk_update("loss", value=1.0)  # fed again: no longer stale
        clock.advance(5.0)
        settle(engine)
        stale = [e["limit"] for e in logs if e["event"] == "risk_feed_stale"]
        assert stale == ["loss", "loss"]


def test_restore_starts_the_stale_clock_again(make_engine: EngineFactory) -> None:
    engine, clock, rec = watchdog(make_engine, {**LOSS, "auto_halt": False,
                                                "stale_after_s": 5.0})
    clock.advance(4.0)
    engine.gate.restore(engine.gate.snapshot())
    clock.advance(4.0)
    settle(engine)
    assert changes(rec) == []
    clock.advance(1.0)
    rec.wait_type("emergency_state_changed")


def test_the_watchdog_runs_on_the_real_clock(make_engine: EngineFactory) -> None:
    engine = make_engine(limits({**LOSS, "stale_after_s": 0.05}))
    rec = Recorder()
    rec.follow(engine)
    rec.wait_for(lambda evs: any(e["type"] == "emergency_state_changed" for e in evs),
                 timeout=WAIT_S)
    assert engine.state is EmergencyState.HALT
    assert changes(rec) == [("HALT", "NORMAL", "stale_feed", "engine")]
