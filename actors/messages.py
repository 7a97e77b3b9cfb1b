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


@dataclass(frozen=True, slots=True)
class Halt:
    """Enter HALT: no new execution or action starts; running executions end halted."""

    reason: str
    source: str = "manual"


@dataclass(frozen=True, slots=True)
class Resume:
    """Back to NORMAL. Refused while a risk limit is exceeded, unless `force`."""

    reason: str | None = None
    force: bool = False


@dataclass(frozen=True, slots=True)
class Alert:
    """Enter ALERT: everything runs, events carry the state."""

    reason: str
    force: bool = False


@dataclass(frozen=True, slots=True)
class ReduceOnly:
    """Enter REDUCE_ONLY: only action nodes marked `reduces_risk` run."""

    reason: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel one execution; the reply is {"status": ...}."""

    execution_id: str


@dataclass(frozen=True, slots=True)
class GetStatus:
    """The reply is the status map of CONTRACT section 6."""


@dataclass(frozen=True, slots=True)
class RiskUpdate:
    """Set (`value`) or move (`delta`) a risk limit's figure; `equity` for drawdown_pct."""

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


@dataclass(frozen=True, slots=True)
class CancelRuns:
    """Wake the nodes waiting on these cancel Events: sent by a supervisor to itself after a
    bulk end (halt, stop), so that waking them does not slow down the acknowledgement."""

    events: tuple[threading.Event, ...]


@dataclass(frozen=True, slots=True)
class Tick:
    """Wakes a supervisor to look at its timers (sent when a manual clock advances)."""


@dataclass(frozen=True, slots=True)
class SupervisorStats:
    """The reply is a dict of the supervisor's live counts."""
