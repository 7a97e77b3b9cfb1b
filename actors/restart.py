"""Restart strategies: which failures re-run a node, how often, and how long to wait.

A failed node is re-run at most `max_restarts` times in one execution, and only within
`restart_within_s` of the failure that led to its first re-run there (the times kept are
those failures'); past either, its last error is final. Not
OTP's sliding intensity/period: restarts spaced by the backoff (or by a `timeout_s` as long
as the window) never fill a sliding window, so a node that always failed was re-run
forever and its execution never ended. The waits come from tenacity's wait strategies,
composed the tenacity way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tenacity
from tenacity.wait import wait_base, wait_exponential, wait_random

from actors.config import ResilienceConfig
from actors.workflow import DEFAULT_RESTART_ON, Node

_RETRYING = tenacity.Retrying()


def backoff(min_s: float, max_s: float) -> wait_base:
    """Jittered exponential backoff: min * 2**(n-1) plus up to `min` of jitter, capped."""
    return wait_exponential(multiplier=min_s, min=min_s, max=max_s) + wait_random(0, min_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    timeout_s: float
    max_restarts: int
    restart_within_s: float
    restart_on: tuple[type[BaseException], ...]
    backoff_min_s: float
    backoff_max_s: float
    wait: Callable[[tenacity.RetryCallState], float]

    def restartable(self, error: BaseException) -> bool:
        """Whether `error` is one of `restart_on`, by its type: `isinstance` would also read
        the exception's `__class__` (user code: a property that blocked held up every
        execution and the halt). A class in `restart_on` may be user code too, with a
        metaclass `__subclasscheck__`: one that raises (anything) means not restartable."""
        if self.max_restarts <= 0:
            return False
        try:
            return issubclass(type(error), self.restart_on)
        except BaseException:  # noqa: BLE001 - user code on the supervisor's thread
            return False

    def allows_restart(self, restart_times: list[float], now: float) -> bool:
        """True if one more restart is allowed at `now`, given the times of this node's
        failures that were re-run in this execution: fewer than `max_restarts`, and the
        first one within the window."""
        if len(restart_times) >= self.max_restarts:
            return False
        return not restart_times or now - restart_times[0] <= self.restart_within_s

    def delay_s(self, restart_number: int) -> float:
        """The wait before restart number `restart_number` (1 for the first restart)."""
        state = tenacity.RetryCallState(retry_object=_RETRYING, fn=None, args=(), kwargs={})
        state.attempt_number = restart_number
        return min(max(self.wait(state), self.backoff_min_s), self.backoff_max_s)


def policy_for(node: Node, defaults: ResilienceConfig) -> RestartPolicy:
    """The node's own options over the engine's `[resilience]` defaults."""
    backoff_min = node.backoff_min_s if node.backoff_min_s is not None else defaults.backoff_min_s
    backoff_max = node.backoff_max_s if node.backoff_max_s is not None else defaults.backoff_max_s
    backoff_max = max(backoff_max, backoff_min)
    return RestartPolicy(
        timeout_s=node.timeout_s if node.timeout_s is not None else defaults.timeout_s,
        max_restarts=(node.max_restarts if node.max_restarts is not None
                      else defaults.max_restarts),
        restart_within_s=(node.restart_within_s if node.restart_within_s is not None
                          else defaults.restart_within_s),
        restart_on=node.restart_on if node.restart_on is not None else DEFAULT_RESTART_ON,
        backoff_min_s=backoff_min,
        backoff_max_s=backoff_max,
        wait=backoff(backoff_min, backoff_max),
    )
