"""Risk limits: their figures, warnings and breaches, daily resets and stale feeds.

Used under the sequencing lock only. Every figure is checked before anything changes: a
NaN or an infinity must never disarm a limit (NaN compares False with everything, so a
NaN figure would read as "under the threshold" and let a resume through).
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any

from actors.clock import Clock
from actors.config import LimitConfig
from actors.config_parse import reset_minutes, zone
from actors.config_ranges import MIN_STALE_AFTER_S
from actors.errors import ConfigError, NotFound, valid_text

SECONDS_PER_DAY = 86_400
_EPOCH_ORDINAL = datetime(1970, 1, 1, tzinfo=UTC).toordinal()


def finite_figure(name: str, figure: object) -> float:
    """`figure` as a float, or TypeError/ValueError naming `name`.

    Real numbers only (numpy scalars included), never a bool; NaN and infinities refused.
    """
    if isinstance(figure, bool) or not isinstance(figure, numbers.Real):
        raise TypeError(f"{name} must be a real number, not {type(figure).__name__}")
    try:
        number = float(figure)
    except OverflowError:  # an int or Fraction beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, not {number!r}")
    return number


def trading_day(wall: float, zone_info: tzinfo, reset_minutes_: int) -> int:
    """The trading day of wall time `wall`, as days since 1970-01-01: the local date, in
    `zone_info`, of (local wall-clock time minus the reset time of day).

    Wall-clock arithmetic, so the day starts at the same local time on either side of a
    DST switch (a reset time that does not exist that day falls at the first instant
    after it). With UTC and 00:00 it is the UTC day number, `int(wall // 86400)`.

    Never decreasing as `wall` grows: in the repeated hour of a switch back, local time
    goes back, and a reset time inside that hour has already passed at its first
    occurrence; the second occurrence is still the new day (an engine started there
    would otherwise reset a day's figure twice).
    """
    local = datetime.fromtimestamp(wall, zone_info)
    day = (local - timedelta(minutes=reset_minutes_)).date()
    if local.fold:
        following = datetime.combine(day + timedelta(days=1), time(), zone_info)
        if (following + timedelta(minutes=reset_minutes_)).timestamp() <= wall:
            day += timedelta(days=1)
    return day.toordinal() - _EPOCH_ORDINAL


@dataclass(slots=True, kw_only=True)
class LimitState:
    name: str
    kind: str
    threshold: float
    auto_halt: bool
    stale_after_s: float | None = None
    #: daily_loss: where the trading day starts (time zone, minutes after local midnight).
    zone: tzinfo = UTC
    reset_minutes: int = 0
    value: float = 0.0
    peak_equity: float | None = None
    warned: bool = False
    exceeded: bool = False
    #: The trading day the value belongs to (days since 1970-01-01; see `trading_day`).
    day: int = 0
    starts: deque[float] = field(default_factory=deque)
    #: Monotonic time of the last update (or of engine start or restore).
    fed_at: float = 0.0
    #: No update for stale_after_s; cleared by the next update.
    stale: bool = False

    @property
    def measure(self) -> float:
        """The figure judged against the threshold: a position's size either way (a short
        of -5 is as big as a long of 5; signed, a short never came near its limit)."""
        return abs(self.value) if self.kind == "position_size" else self.value

    @property
    def utilization(self) -> float:
        return self.measure / self.threshold

    def stats(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "threshold": self.threshold,
                "utilization": self.utilization, "auto_halt": self.auto_halt,
                "exceeded": self.exceeded, "stale": self.stale}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an update did: the events to publish and whether it calls for HALT."""

    limit: LimitState
    events: list[dict[str, Any]]
    breach: bool
    #: The figure went up (or is the engine's own count): in REDUCE_ONLY only a breach that
    #: rose halts again; one falling while still over is the reduction working.
    rose: bool = True


class RiskBook:
    def __init__(self, limits: tuple[LimitConfig, ...], *, warn_at: float, clock: Clock) -> None:
        # Config.from_dict checked all this and names the key; a Config built by hand
        # gets the same refusals here, so no engine ever runs with a disarmed limit.
        if not (math.isfinite(warn_at) and 0 < warn_at <= 1):
            raise ConfigError(f"emergency.warn_at must be in (0, 1], not {warn_at!r}")
        self.warn_at = warn_at
        self._clock = clock
        now = clock.monotonic()
        self.limits: dict[str, LimitState] = {}
        for c in limits:
            if not isinstance(c.name, str) or not c.name or valid_text(c.name) != c.name:
                raise ConfigError(f"risk limit name {c.name!r} must be a non-empty string "
                                  "UTF-8 can carry (no lone surrogates)")
            if not (math.isfinite(c.threshold) and c.threshold > 0):
                raise ConfigError(f"risk limit {c.name!r}: threshold must be a finite "
                                  f"number > 0, not {c.threshold!r}")
            if c.kind == "drawdown_pct" and c.threshold > 100:
                raise ConfigError(f"risk limit {c.name!r}: a drawdown_pct threshold is in "
                                  f"percent (0-100), not {c.threshold!r}")
            stale = c.stale_after_s
            if stale is not None and not (math.isfinite(stale) and stale >= MIN_STALE_AFTER_S):
                raise ConfigError(f"risk limit {c.name!r}: stale_after_s must be a finite "
                                  f"number >= {MIN_STALE_AFTER_S:g}, not {stale!r}")
            try:
                zone_info, minutes = zone(c.timezone), reset_minutes(c.reset_at)
            except ValueError as exc:
                raise ConfigError(f"risk limit {c.name!r}: {exc}") from None
            limit = LimitState(name=c.name, kind=c.kind, threshold=c.threshold,
                               auto_halt=c.auto_halt, stale_after_s=stale, fed_at=now,
                               zone=zone_info, reset_minutes=minutes)
            limit.day = self._day_of(limit)
            self.limits[c.name] = limit
        self.action_rate_limits = [s for s in self.limits.values() if s.kind == "action_rate"]
        self._stale_limits = [s for s in self.limits.values() if s.stale_after_s is not None]

    def update(self, name: str, *, value: float | None = None, delta: float | None = None,
               equity: float | None = None) -> Verdict:
        """Apply one figure. Anything refused (TypeError, ValueError, NotFound) changes
        nothing: not the figure, not the flags, not the staleness."""
        limit = self.limits.get(name) if isinstance(name, str) else None
        if limit is None:
            raise NotFound(f"no risk limit named {name!r}")
        if limit.kind == "action_rate":
            raise ValueError(f"risk limit {name!r} is an action_rate: the engine measures it")
        given = [(arg, x) for arg, x in (("value", value), ("delta", delta), ("equity", equity))
                 if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of value, delta, equity")
        arg, figure = given[0][0], finite_figure(given[0][0], given[0][1])
        if arg == "equity" and limit.kind != "drawdown_pct":
            raise ValueError(f"equity is for drawdown_pct limits; {name!r} is {limit.kind}")
        self._roll_day(limit)
        peak = limit.peak_equity
        if arg == "equity":
            peak = figure if peak is None else max(peak, figure)
            new = 0.0 if peak <= 0 else max(0.0, (peak - figure) / peak * 100.0)
        elif arg == "value":
            new = figure
        else:
            new = limit.value + figure
        if not math.isfinite(new):  # finite inputs can still overflow
            raise ValueError(f"{arg}={figure!r} would make risk limit {name!r} non-finite")
        before = limit.measure
        limit.value, limit.peak_equity = new, peak
        rose = limit.measure > before
        limit.fed_at = self._clock.monotonic()
        limit.stale = False
        return self._judge(limit, rose)

    def note_action(self, now: float) -> tuple[list[Verdict], float]:
        """An action wants to start now. Returns the verdicts and how long it must wait.

        A positive wait means a rate limit without auto_halt is full; the caller waits
        and asks again. A verdict with `breach` means an auto_halt limit is exceeded.
        """
        verdicts: list[Verdict] = []
        wait = 0.0
        for limit in self.action_rate_limits:
            starts = limit.starts
            while starts and starts[0] <= now - 1.0:
                starts.popleft()
            if len(starts) + 1 > limit.threshold:
                limit.value = float(len(starts) + 1)
                verdict = self._judge(limit)
                verdicts.append(verdict)
                if not limit.auto_halt:
                    wait = max(wait, (starts[0] + 1.0 - now) if starts else 1.0)
                continue
        if wait > 0 or any(v.breach for v in verdicts):
            return verdicts, wait
        for limit in self.action_rate_limits:
            limit.starts.append(now)
            limit.value = float(len(limit.starts))
            verdicts.append(self._judge(limit))
        return verdicts, 0.0

    def exceeded(self) -> list[str]:
        for limit in self.limits.values():
            self._refresh(limit)
        return [lim.name for lim in self.limits.values() if lim.exceeded]

    def blocking(self) -> list[str]:
        """The exceeded `auto_halt` limits: while there is one, NORMAL and ALERT are
        refused unless forced."""
        exceeded = set(self.exceeded())
        return [lim.name for lim in self.limits.values()
                if lim.auto_halt and lim.name in exceeded]

    # -- stale feeds -------------------------------------------------------------------------

    def stale_due(self, now: float) -> tuple[list[LimitState], list[LimitState]]:
        """Limits whose feed has been silent for their stale_after_s, as of `now`, and
        those of them that were not stale before (to log once per feed going stale).

        Each is marked stale and its silence counted again from now: a feed still dead
        after another stale_after_s is reported again (an operator who resumed meanwhile
        is told once more), and the next update clears it."""
        due, newly = [], []
        for limit in self._stale_limits:
            assert limit.stale_after_s is not None
            if limit.fed_at + limit.stale_after_s <= now:
                if not limit.stale:
                    newly.append(limit)
                limit.stale = True
                limit.fed_at = now
                due.append(limit)
        return due, newly

    def next_stale_at(self) -> float | None:
        """The monotonic time of the next possible stale report; None if no limit has one."""
        deadlines = [lim.fed_at + lim.stale_after_s for lim in self._stale_limits
                     if lim.stale_after_s is not None]
        return min(deadlines) if deadlines else None

    # -- persistence -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """What a journal keeps of each limit, to `restore` after a restart."""
        return {name: {"value": lim.value, "peak_equity": lim.peak_equity, "day": lim.day,
                       "warned": lim.warned, "exceeded": lim.exceeded}
                for name, lim in self.limits.items() if lim.kind != "action_rate"}

    def restore(self, saved: dict[str, dict[str, Any]]) -> None:
        """Put back a snapshot; limits no longer configured are ignored, a daily_loss saved
        on an earlier trading day resets on its next use (one saved by a clock that ran
        days ahead keeps its figure until the next reset time), and stale-feed clocks
        start now.
        A saved figure that is not finite is refused (ValueError): it would disarm."""
        now = self._clock.monotonic()
        for name, fields in saved.items():
            limit = self.limits.get(name)
            if limit is None or limit.kind == "action_rate":
                continue
            value = finite_figure(f"saved value of risk limit {name!r}", fields["value"])
            peak = fields.get("peak_equity")
            if peak is not None:
                peak = finite_figure(f"saved peak_equity of risk limit {name!r}", peak)
            limit.value, limit.peak_equity = value, peak
            limit.day = int(fields.get("day", limit.day))
            limit.warned = bool(fields.get("warned", False))
            limit.exceeded = bool(fields.get("exceeded", False))
        for limit in self.limits.values():
            limit.fed_at = now
            limit.stale = False

    def stats(self) -> dict[str, dict[str, Any]]:
        for limit in self.limits.values():
            self._refresh(limit)
        return {name: lim.stats() for name, lim in self.limits.items()}

    def _refresh(self, limit: LimitState) -> None:
        """Bring a figure that time changes up to now: a daily_loss past its reset, an
        action_rate's window (else status showed the rate of the last action start for
        ever, while resume, judging now, found it under)."""
        self._roll_day(limit)
        if limit.kind == "action_rate":
            now = self._clock.monotonic()
            while limit.starts and limit.starts[0] <= now - 1.0:
                limit.starts.popleft()
            limit.value = float(len(limit.starts))
            limit.exceeded = limit.value > limit.threshold

    # -- judging -----------------------------------------------------------------------------

    def _judge(self, limit: LimitState, rose: bool = True) -> Verdict:
        events: list[dict[str, Any]] = []
        # action_rate counts the start being asked for, so its breach is going over.
        measure = limit.measure
        over = (measure > limit.threshold if limit.kind == "action_rate"
                else measure >= limit.threshold)
        breach = False
        if measure >= self.warn_at * limit.threshold:
            if not limit.warned:
                limit.warned = True
                events.append(self._event("risk_limit_warning", limit))
        else:
            limit.warned = False
        if over:
            if not limit.exceeded:
                limit.exceeded = True
                events.append(self._event("risk_limit_exceeded", limit))
            breach = limit.auto_halt
        else:
            limit.exceeded = False
        return Verdict(limit, events, breach, rose)

    def _event(self, kind: str, limit: LimitState) -> dict[str, Any]:
        return {"v": 1, "type": kind, "limit": limit.name, "kind": limit.kind,
                "value": limit.value, "threshold": limit.threshold,
                "utilization": limit.utilization}

    def _day_of(self, limit: LimitState) -> int:
        return trading_day(self._clock.time(), limit.zone, limit.reset_minutes)

    def _roll_day(self, limit: LimitState) -> None:
        if limit.kind != "daily_loss":
            return
        today = self._day_of(limit)
        if today > limit.day:
            limit.day = today
            limit.value = 0.0
            limit.warned = limit.exceeded = False
        elif today < limit.day - 1:
            # The wall clock was set back past more than one reset time: it had run ahead
            # (an NTP step of days or years) and was corrected. Following it, figure kept,
            # means the next reset comes at the next reset time, not a year from now.
            limit.day = today
        # One day behind is not a new day: in the hour a DST switch repeats, local time
        # goes back and with it the day number; a clock set back across one reset time
        # must not reset again when it passes that time a second time.
