"""Risk limits: their figures, warnings and breaches. Used under the sequencing lock only."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from actors.clock import Clock
from actors.config import LimitConfig
from actors.errors import NotFound

SECONDS_PER_DAY = 86_400


@dataclass(slots=True, kw_only=True)
class LimitState:
    name: str
    kind: str
    threshold: float
    auto_halt: bool
    value: float = 0.0
    peak_equity: float | None = None
    warned: bool = False
    exceeded: bool = False
    day: int = 0
    starts: deque[float] = field(default_factory=deque)

    @property
    def utilization(self) -> float:
        return self.value / self.threshold

    def stats(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "threshold": self.threshold,
                "utilization": self.utilization, "auto_halt": self.auto_halt,
                "exceeded": self.exceeded}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an update did: the events to publish and whether it calls for HALT."""

    limit: LimitState
    events: list[dict[str, Any]]
    breach: bool


class RiskBook:
    def __init__(self, limits: tuple[LimitConfig, ...], *, warn_at: float, clock: Clock) -> None:
        self.warn_at = warn_at
        self._clock = clock
        today = self._today()
        self.limits: dict[str, LimitState] = {
            c.name: LimitState(name=c.name, kind=c.kind, threshold=c.threshold,
                               auto_halt=c.auto_halt, day=today)
            for c in limits
        }
        self.action_rate_limits = [s for s in self.limits.values() if s.kind == "action_rate"]

    def update(self, name: str, *, value: float | None = None, delta: float | None = None,
               equity: float | None = None) -> Verdict:
        limit = self.limits.get(name)
        if limit is None:
            raise NotFound(f"no risk limit named {name!r}")
        if limit.kind == "action_rate":
            raise ValueError(f"risk limit {name!r} is an action_rate: the engine measures it")
        self._roll_day(limit)
        given = [x is not None for x in (value, delta, equity)]
        if sum(given) != 1:
            raise ValueError("give exactly one of value, delta, equity")
        if equity is not None:
            if limit.kind != "drawdown_pct":
                raise ValueError(f"equity is for drawdown_pct limits; {name!r} is {limit.kind}")
            peak = max(limit.peak_equity or equity, equity)
            limit.peak_equity = peak
            limit.value = 0.0 if peak <= 0 else max(0.0, (peak - equity) / peak * 100.0)
        elif value is not None:
            limit.value = float(value)
        else:
            assert delta is not None
            limit.value += float(delta)
        return self._judge(limit)

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
            self._roll_day(limit)
            if limit.kind == "action_rate":
                now = self._clock.monotonic()
                while limit.starts and limit.starts[0] <= now - 1.0:
                    limit.starts.popleft()
                limit.value = float(len(limit.starts))
                limit.exceeded = limit.value > limit.threshold
        return [lim.name for lim in self.limits.values() if lim.exceeded]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """What a journal keeps of each limit, to `restore` after a restart."""
        return {name: {"value": lim.value, "peak_equity": lim.peak_equity, "day": lim.day,
                       "warned": lim.warned, "exceeded": lim.exceeded}
                for name, lim in self.limits.items() if lim.kind != "action_rate"}

    def restore(self, saved: dict[str, dict[str, Any]]) -> None:
        """Put back a snapshot; limits no longer configured are ignored (and a daily_loss
        saved on an earlier UTC day resets on its next use)."""
        for name, fields in saved.items():
            limit = self.limits.get(name)
            if limit is None or limit.kind == "action_rate":
                continue
            limit.value = float(fields["value"])
            limit.peak_equity = fields.get("peak_equity")
            limit.day = int(fields.get("day", limit.day))
            limit.warned = bool(fields.get("warned", False))
            limit.exceeded = bool(fields.get("exceeded", False))

    def stats(self) -> dict[str, dict[str, Any]]:
        for limit in self.limits.values():
            self._roll_day(limit)
        return {name: lim.stats() for name, lim in self.limits.items()}

    def _judge(self, limit: LimitState) -> Verdict:
        events: list[dict[str, Any]] = []
        # action_rate counts the start being asked for, so its breach is going over.
        over = (limit.value > limit.threshold if limit.kind == "action_rate"
                else limit.value >= limit.threshold)
        breach = False
        if limit.value >= self.warn_at * limit.threshold:
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
        return Verdict(limit, events, breach)

    def _event(self, kind: str, limit: LimitState) -> dict[str, Any]:
        return {"v": 1, "type": kind, "limit": limit.name, "kind": limit.kind,
                "value": limit.value, "threshold": limit.threshold,
                "utilization": limit.utilization}

    def _today(self) -> int:
        return int(self._clock.time() // SECONDS_PER_DAY)

    def _roll_day(self, limit: LimitState) -> None:
        if limit.kind != "daily_loss":
            return
        today = self._today()
        if today != limit.day:
            limit.day = today
            limit.value = 0.0
            limit.warned = limit.exceeded = False
