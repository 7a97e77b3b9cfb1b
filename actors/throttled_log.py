"""A warning logged at most once every so often, the ones in between counted, not lost.

    dead = ThrottledWarning(log, "webhook_dead_letter", every_s=10.0, monotonic=clock,
                            since_key="dead_since_last_line", total_key="dead_total",
                            webhook="ops")
    dead.add(3, first_seq=7, last_seq=9)   # the first: logged at once
    dead.add(1, first_seq=10, last_seq=10) # within every_s: counted, held back
    dead.flush()                           # once every_s is up: one line, "since" = 1
    dead.flush(now=True)                   # at a stop: whatever is held back, now

Each line carries the latest details, how many since the previous line (`since_key`) and
the running total (`total_key`). Call `flush()` on every turn of the owner's loop: what a
burst held back is told once the time is up, whether or not another comes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ThrottledWarning"]


class ThrottledWarning:
    def __init__(self, log: Any, event: str, *, every_s: float,
                 monotonic: Callable[[], float], since_key: str, total_key: str,
                 **fixed: Any) -> None:
        self._log = log
        self._event = event
        self._every_s = every_s
        self._monotonic = monotonic
        self._keys = (since_key, total_key)
        self._fixed = fixed
        #: Everything added, logged or not.
        self.total = 0
        self._held = 0
        self._details: dict[str, Any] = {}
        self._logged_at: float | None = None

    def add(self, count: int, **details: Any) -> None:
        """Count `count` more; log now unless a line went out less than `every_s` ago."""
        self.total += count
        self._held += count
        self._details = details
        self.flush()

    def flush(self, *, now: bool = False) -> None:
        """Log what is held back once `every_s` is up since the last line (`now`: at once)."""
        if not self._held:
            return
        at = self._monotonic()
        if now or self._logged_at is None or at - self._logged_at >= self._every_s:
            since, total = self._keys
            self._log.warning(self._event, **self._fixed, **self._details,
                              **{since: self._held, total: self.total})
            self._logged_at, self._held = at, 0
