"""A model of the kill switch, from CONTRACT sections 7 and 8, for the stateful tests.

`KillSwitchModel` predicts the emergency state, each risk limit's figures and flags, and
the events owed (`emergency_state_changed`, `risk_limit_warning`, `risk_limit_exceeded`)
for each operator call, risk figure, stale-feed check and node admission. It is written
from the contract, not from actors/emergency.py; tests/test_emergency_stateful.py checks
the gate against it and tests/test_emergency_engine_stateful.py a real Engine:

- halt / resume / alert / reduce_only, each with `source: "manual"`; resume and alert are
  refused (`LimitExceeded`, nothing changes) while an auto_halt limit is exceeded, unless
  forced; reduce_only never is (it is how positions close), and may leave HALT.
- Risk figures (`value` or `delta`): NaN, infinities, bools, non-numbers and anything that
  would make the figure non-finite are refused and change nothing. Otherwise one
  `risk_limit_warning` per upward crossing of warn_at x threshold, one `risk_limit_exceeded`
  per crossing of the threshold, and HALT (`source: "risk_limit"`) for an auto_halt limit at
  or over its threshold, from NORMAL or ALERT; from REDUCE_ONLY only when the figure rose
  (one falling while still over is positions being closed).
- A limit fed nothing for `stale_after_s` raises the state to ALERT (HALT with auto_halt),
  `source: "stale_feed"`, never lowering it; its silence is then counted again.
- HALT admits no node (but an on-halt hook's); REDUCE_ONLY admits actions only when they
  reduce risk (or belong to an on-halt hook).
- Every state change is exactly one `emergency_state_changed` event; none without a change.
  HALT is left only by an operator's call (resume, alert, reduce_only), never by a figure
  or the clock.

Not modelled: `action_rate` limits (their admission waits on a real timer), `daily_loss`
day rollover (tests/test_emergency_limits.py), equity/drawdown figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import event
from hypothesis import strategies as st

from actors.config import LimitConfig
from actors.emergency import EmergencyState
from actors.events import Event
from actors.risk import RiskBook

HALT, NORMAL = EmergencyState.HALT, EmergencyState.NORMAL
ALERT, REDUCE_ONLY = EmergencyState.ALERT, EmergencyState.REDUCE_ONLY
RANK = {NORMAL: 0, ALERT: 1, REDUCE_ONLY: 2, HALT: 3}
WARN_AT = 0.8
LIMITS = (
    # auto_halt with a feed that must keep reporting: stale -> HALT
    LimitConfig(name="position", kind="position_size", threshold=100.0, auto_halt=True,
                stale_after_s=30.0),
    # no auto_halt: warns and flags, never halts; stale -> ALERT
    LimitConfig(name="score", kind="custom", threshold=10.0, auto_halt=False,
                stale_after_s=20.0),
    # auto_halt, never stale
    LimitConfig(name="exposure", kind="custom", threshold=1000.0, auto_halt=True),
)
CHANGE_FIELDS = ("state", "previous_state", "reason", "source", "origin")

# A figure a risk feed may send: plain numbers near the thresholds and their warn_at
# marks, exact edges, and the odd ones that must be refused without changing anything.
sane_figures = st.one_of(
    st.floats(-150.0, 1500.0, allow_nan=False, allow_infinity=False),
    st.integers(-150, 1500),
    st.sampled_from([0.0, -0.0, 7.999999999999999, 8.0, 10.0, 80.0, 99.99999999999999, 100.0,
                     800.0, 1000.0, 5e-324]),
    st.just(Fraction(1, 3)),
)
odd_figures = st.sampled_from([
    math.nan, -math.nan, math.inf, -math.inf, 10**400, -(10**400), True, False,
    1e308, -1e308, 1.7976931348623157e308, Decimal("5"), "5", None, [5.0], complex(5, 0),
])
figures = st.one_of(sane_figures, odd_figures)


@dataclass(frozen=True)
class LimitModel:
    name: str
    threshold: float
    auto_halt: bool
    stale_after_s: float | None
    kind: str = "custom"
    value: float = 0.0
    warned: bool = False
    exceeded: bool = False
    fed_at: float = 0.0
    stale: bool = False


def measure(kind: str, value: float) -> float:
    """The figure a limit judges: a position_size limit judges the size, short or long."""
    return abs(value) if kind == "position_size" else value


def refusal(figure: object, current: float, as_delta: bool) -> type[Exception] | float:
    """The model's reading of a figure: the exception it must raise, or the new value."""
    if figure is None:  # no figure at all: "give exactly one of value, delta, equity"
        return ValueError
    if isinstance(figure, bool) or not isinstance(figure, (int, float, Fraction)):
        return TypeError
    try:
        number = float(figure)
    except OverflowError:
        return ValueError
    new = current + number if as_delta else number
    if not (math.isfinite(number) and math.isfinite(new)):
        return ValueError
    return new


class Mentions:
    """Equal to any string that contains each of `words` (a reason the model cannot spell
    out in full: a limit's figure, a feed's silence)."""

    def __init__(self, *words: str) -> None:
        self.words = words

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and all(word in other for word in self.words)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Mentions{self.words!r}"


class KillSwitchModel:
    """The kill switch as CONTRACT sections 7 and 8 describe it, and the events it owes."""

    def __init__(self, now: float) -> None:
        self.state = NORMAL
        self.last_change: dict[str, Any] | None = None
        self.changes = 0
        self.limits = {c.name: LimitModel(c.name, c.threshold, c.auto_halt, c.stale_after_s,
                                          c.kind, fed_at=now) for c in LIMITS}
        #: events owed since the last check, in order
        self.expected: list[dict[str, Any]] = []

    def blocking(self) -> list[str]:
        return [m.name for m in self.limits.values() if m.auto_halt and m.exceeded]

    def change_to(self, new: EmergencyState, reason: object, source: str, origin: str) -> None:
        if new is self.state:
            return
        change = {"type": "emergency_state_changed", "state": new.value,
                  "previous_state": self.state.value, "reason": reason, "source": source,
                  "origin": origin}
        self.expected.append(change)
        self.state, self.last_change = new, change
        self.changes += 1

    def operator(self, new: EmergencyState, reason: str, origin: str, *, force: bool) -> bool:
        """An operator's change (source "manual"); False when it must be refused."""
        if new in (NORMAL, ALERT) and not force and self.blocking():
            event(f"{new.value} refused in {self.state.value}")
            return False
        event(f"{self.state.value} -> {new.value}{' forced' if force else ''}")
        self.change_to(new, reason, "manual", origin)
        return True

    def figure(self, name: str, figure: object, *, as_delta: bool,
               now: float) -> type[Exception] | None:
        """A risk figure: the exception it must be refused with, or None once applied."""
        model = self.limits[name]
        outcome = refusal(figure, model.value, as_delta)
        if isinstance(outcome, type):
            event(f"figure refused: {outcome.__name__}")
            return outcome
        new = outcome
        size = measure(model.kind, new)  # a position's size either way
        warned = size >= WARN_AT * model.threshold
        exceeded = size >= model.threshold
        for crossed, before, kind in ((warned, model.warned, "risk_limit_warning"),
                                      (exceeded, model.exceeded, "risk_limit_exceeded")):
            if crossed and not before:  # once per upward crossing
                self.expected.append({"type": kind, "limit": name, "value": new,
                                      "threshold": model.threshold,
                                      "utilization": size / model.threshold})
                event(f"{kind} {name}")
        self.limits[name] = replace(model, value=new, warned=warned, exceeded=exceeded,
                                    fed_at=now, stale=False)
        rose = size > measure(model.kind, model.value)
        if (exceeded and model.auto_halt and self.state is not HALT
                and (rose or self.state is not REDUCE_ONLY)):
            event(f"{self.state.value} -> HALT by limit {name}")
            self.change_to(HALT, Mentions(name), "risk_limit", "engine")
        return None

    def watchdog(self, now: float) -> tuple[EmergencyState, object] | None:
        """The stale-feed watchdog at `now`: the state it raises to and why, if it does."""
        due = [m for m in self.limits.values()
               if m.stale_after_s is not None and m.fed_at + m.stale_after_s <= now]
        for m in due:  # marked stale, and its silence counted again from now
            self.limits[m.name] = replace(m, stale=True, fed_at=now)
        target = HALT if any(m.auto_halt for m in due) else ALERT
        if not due or RANK[self.state] >= RANK[target]:
            return None
        event(f"{self.state.value} -> {target.value} by a stale feed")
        reason = Mentions(*(f"limit {m.name} " for m in due))
        self.change_to(target, reason, "stale_feed", "engine")
        return target, reason

    def admits(self, category: str, *, reduces_risk: bool, exempt: bool) -> str | None:
        """Why a node may not start now (the gate's refusal), or None."""
        if self.state is HALT and not exempt:
            return "halted"
        if (self.state is REDUCE_ONLY and category == "action" and not reduces_risk
                and not exempt):
            return "reduce_only"
        return None

    def next_stale_deadline(self) -> float:
        return min(m.fed_at + m.stale_after_s for m in self.limits.values()
                   if m.stale_after_s is not None)


def assert_limits(book: RiskBook, model: KillSwitchModel) -> None:
    stats = book.stats()
    for name, m in model.limits.items():
        lim = book.limits[name]
        assert (lim.value, lim.warned, lim.exceeded, lim.stale) == (
            m.value, m.warned, m.exceeded, m.stale), name
        assert lim.fed_at == m.fed_at, name
        assert stats[name]["value"] == m.value
        assert math.isfinite(lim.value)  # nothing ever disarms a limit
    assert book.blocking() == model.blocking()


def assert_owed_events(new: list[Event], model: KillSwitchModel) -> None:
    """`new` are exactly the events the model owes (each with the fields it predicts)."""
    owed = model.expected
    assert [e["type"] for e in new] == [e["type"] for e in owed]
    assert [{k: e[k] for k in expected} for e, expected in zip(new, owed, strict=True)] == owed
    model.expected = []


def assert_history(history: list[dict[str, Any]], model: KillSwitchModel,
                   events: list[Event]) -> None:
    assert len(history) == model.changes
    if model.last_change is not None:
        assert {k: history[-1][k] for k in CHANGE_FIELDS} == {
            k: model.last_change[k] for k in CHANGE_FIELDS}
        assert history[-1]["seq"] == max(e["seq"] for e in events
                                         if e["type"] == "emergency_state_changed")

