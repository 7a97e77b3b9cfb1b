"""Every actor message, as frozen dataclasses (the pykka `messages.py` way).

The first group is public: `engine.ref.ask(Halt(reason="manual"))`. The second group is what
the engine's own actors tell each other; it is not part of the API.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.ending import Ending
    from actors.machine import Execution, NodeRun
    from actors.workflow import Workflow


# -- public ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Submit:
    """Start an execution; the reply is an ExecutionHandle (refused ones are resolved)."""

    workflow: Workflow | str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    bot_id: str | None = None
    strategy_id: str | None = None
    priority: int = 0


#: Who asked for an emergency state change (the `origin` of `emergency_state_changed`):
#: the in-process API, the control socket, the command line, the web gateway, or the
#: engine itself (auto-halts on a risk limit, a stale risk feed, the action rate).
ORIGINS = frozenset({"api", "control", "cli", "web", "engine"})
#: Why the state changed (the event's `source`).
SOURCES = frozenset({"manual", "risk_limit", "journal", "stale_feed"})


def _check_change(reason: object, origin: object, *, optional_reason: bool = False,
                  force: object = False) -> None:
    """Bad fields of a state message are the caller's error, raised where it is built."""
    if not (isinstance(reason, str) or (optional_reason and reason is None)):
        raise TypeError(f"reason must be a string, not {type(reason).__name__}")
    if not isinstance(origin, str) or origin not in ORIGINS:
        raise ValueError(f"origin must be one of {sorted(ORIGINS)}, not {origin!r}")
    if not isinstance(force, bool):
        raise TypeError(f"force must be a bool, not {type(force).__name__}")


@dataclass(frozen=True, slots=True)
class Halt:
    """Enter HALT: no new execution or action starts; running executions end halted."""

    reason: str
    source: str = "manual"
    origin: str = "api"

    def __post_init__(self) -> None:
        _check_change(self.reason, self.origin)
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {sorted(SOURCES)}, not {self.source!r}")


@dataclass(frozen=True, slots=True)
class Resume:
    """Back to NORMAL. Refused (`LimitExceeded`) while an auto_halt limit is exceeded,
    unless `force`."""

    reason: str | None = None
    force: bool = False
    origin: str = "api"

    def __post_init__(self) -> None:
        _check_change(self.reason, self.origin, optional_reason=True, force=self.force)


@dataclass(frozen=True, slots=True)
class Alert:
    """Enter ALERT: everything runs, events carry the state. Refused (`LimitExceeded`)
    while an auto_halt limit is exceeded, unless `force`."""

    reason: str
    force: bool = False
    origin: str = "api"

    def __post_init__(self) -> None:
        _check_change(self.reason, self.origin, force=self.force)


@dataclass(frozen=True, slots=True)
class ReduceOnly:
    """Enter REDUCE_ONLY: only action nodes marked `reduces_risk` run (allowed from HALT,
    and while a limit is exceeded: it is how positions get closed)."""

    reason: str
    origin: str = "api"

    def __post_init__(self) -> None:
        _check_change(self.reason, self.origin)


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel one execution; the reply is {"status": ...}."""

    execution_id: str


@dataclass(frozen=True, slots=True)
class GetStatus:
    """The reply is the status map of docs/protocol.md (control ops)."""


@dataclass(frozen=True, slots=True)
class RiskUpdate:
    """Set (`value`) or move (`delta`) a risk limit's figure; `equity` for drawdown_pct.

    Exactly one of the three, a finite real number (not a bool): anything else is refused
    with a TypeError/ValueError naming the argument, and the limit keeps its figure.
    """

    limit: str
    value: float | None = None
    delta: float | None = None
    equity: float | None = None


# -- internal ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StartExecution:
    execution: Execution


@dataclass(frozen=True, slots=True)
class RunNode:
    run: NodeRun


@dataclass(frozen=True, slots=True)
class NodeDone:
    """A node actor's reply; the outcome is on the run (value/error/duration_s/denied)."""

    run: NodeRun


@dataclass(frozen=True, slots=True)
class EndExecutions:
    """Tell a supervisor to end its executions (all, or one id) with `ending`; the reply
    is how many it ended. Executions exempt from halt (on-halt hooks) are kept when the
    ending is a halt."""

    ending: Ending
    execution_id: str | None = None


@dataclass(frozen=True, slots=True)
class BroadcastHalt:
    """The gate halted by itself (an action_rate breach): tell every supervisor."""

    reason: str
    source: str = "risk_limit"
    origin: str = "engine"


@dataclass(frozen=True, slots=True)
class RunHaltHooks:
    """HALT was entered and acknowledged: submit the on-halt hook workflows. The kill
    switch sends it to itself, so the halt's reply never waits for the hooks."""

    reason: str
    source: str
    origin: str


@dataclass(frozen=True, slots=True)
class CancelRuns:
    """Wake the nodes waiting on these cancel Events: sent by a supervisor to itself after a
    bulk end (halt, stop), so that waking them does not slow down the acknowledgement."""

    events: tuple[threading.Event, ...]


@dataclass(frozen=True, slots=True)
class HandOver:
    """Sent by a supervisor to itself after a message that finished an execution holding
    user objects: handling it hands them to the reaper even while nothing else arrives
    (actors/reaper.py)."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Wakes a supervisor to look at its timers (sent when a manual clock advances)."""


@dataclass(frozen=True, slots=True)
class SupervisorStats:
    """The reply is a dict of the supervisor's live counts."""
