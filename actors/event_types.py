"""Every event type of the stream, declared where it is defined (docs/protocol.md (events)).

An event is a plain dict (the msgpack payload map on the wire, and what an in-process
subscriber receives); each `TypedDict` below says when that type is emitted and what each
field means, in the style of structlog's `typing.py`. Fields a consumer may rely on are
required; additive fields this engine emits only sometimes are `NotRequired`. Consumers
must ignore fields they do not know: events may carry more (docs/protocol.md (events)).

`EVENT_TYPES` maps each `type` to its TypedDict; `actors.events.validate_event(event)` lists
what is wrong with an event against them (the test suite runs it on every event it emits,
with `strict=True`, which also refuses fields not declared here).
"""

# No `from __future__ import annotations` here: on Python 3.11 a TypedDict only sees
# `NotRequired` in annotations that are evaluated.

from typing import Any, Literal, NotRequired, TypedDict, get_args, get_type_hints

NodeCategory = Literal["provider", "condition", "action", "transform"]
EmergencyStateName = Literal["NORMAL", "ALERT", "REDUCE_ONLY", "HALT"]
SkipReason = Literal["condition_false", "upstream_failed", "halted", "reduce_only",
                     "circuit_open", "cancelled"]


# -- the common fields -------------------------------------------------------------------

class BaseEvent(TypedDict):
    """Fields every event has.

    - `v`: the payload version, 1.
    - `timestamp`: when it was sequenced (or built, for events without a `seq`):
      ISO-8601 UTC with milliseconds and a `Z`, e.g. `2025-01-02T03:04:05.678Z`.
    """

    v: Literal[1]
    timestamp: str


class SequencedEvent(BaseEvent):
    """An event of the ordered stream.

    - `seq`: 1, 2, 3 ... across all topics, gapless; it continues across restarts (it is
      the journal's event number). A subscriber that sees a jump lost events.
    """

    seq: int


class WorkflowEvent(SequencedEvent):
    """An event of one execution, published on `workflow/<workflow_id>/<type>`.

    - `execution_id`: `exec_<workflow_id>_<8 lower-case hex>`; `correlation_id`: the same.
    - `workflow_id`, `bot_id`, `strategy_id`: from `submit`, else the `[[workflows]]` entry.
    - `wseq`: 1, 2, 3 ... per `workflow_id`, so a subscriber to one workflow can tell its
      own losses from other topics' traffic.
    - `state`: the emergency state when the event was sequenced.
    - `omitted`: only on an event cut to fit `[journal] max_event_bytes`: the paths of the
      user data replaced by a note of its size (`outputs`, `results.fetch`,
      `nodes.fetch.error`; actors/journal_caps.py).
    """

    execution_id: str
    correlation_id: str
    workflow_id: str
    bot_id: str | None
    strategy_id: str | None
    wseq: int
    state: EmergencyStateName
    omitted: NotRequired[list[str]]


# -- executions and nodes ----------------------------------------------------------------

class ExecutionStarted(WorkflowEvent):
    """First event of every execution, when a supervisor starts it (an execution ended
    while still queued gets it right before its terminal event).

    - `node_count`: nodes in the workflow. `inputs`: the execution's inputs.
    - `priority`: the submit priority (higher first), when the engine knows it.
    """

    type: Literal["execution_started"]
    node_count: int
    inputs: dict[str, Any]
    priority: NotRequired[int]


class NodeStarted(WorkflowEvent):
    """A node attempt is about to run: sequenced when the kill switch admitted it, so no
    action is published as started after HALT. Before its `node_completed`/`node_failed`,
    and after the `node_completed` of every node it depends on.

    - `node_id`, `node_name`, `node_category`; `attempt`: 1 on the first run.
    - `cached`: true when a provider's cached output is reused (nothing runs).
    """

    type: Literal["node_started"]
    node_id: str
    node_name: str
    node_category: NodeCategory
    attempt: int
    cached: NotRequired[bool]


class NodeCompleted(WorkflowEvent):
    """A node attempt returned.

    - `outputs`: what it returned (odd types travel as strings); `status`: "success".
    - `duration_ms`: time in the node function; `attempt`: 1 on the first run.
    - `cached`: true when the output came from the provider cache.
    """

    type: Literal["node_completed"]
    node_id: str
    duration_ms: float
    status: Literal["success"]
    outputs: Any
    attempt: int
    cached: NotRequired[bool]


class NodeFailed(WorkflowEvent):
    """A node attempt raised, timed out (`error_type: "NodeTimeout"`) or returned what the
    engine cannot interpret.

    - `error`: the message; `error_type`: the exception's class name.
    - `final`: false when a `node_retrying` follows (then, with `delay_ms` 0, a
      `node_skipped` `circuit_open` when the node's breaker is open past the backoff: the
      retry is refused at once rather than after it); true fails the execution.
    """

    type: Literal["node_failed"]
    node_id: str
    duration_ms: float
    error: str
    error_type: str
    attempt: int
    final: bool


class NodeRetrying(WorkflowEvent):
    """Follows a `node_failed` with `final: false`: the node runs again after a backoff.

    - `attempt`: the next attempt's number; `delay_ms`: the jittered backoff before it;
      `error_type`: what the failed attempt raised.
    """

    type: Literal["node_retrying"]
    node_id: str
    attempt: int
    delay_ms: float
    error_type: str


class NodeSkipped(WorkflowEvent):
    """A node that will not run in this execution.

    - `reason`: `condition_false` (a condition upstream returned False), `upstream_failed`,
      `halted`, `reduce_only` (an action not marked reduces_risk), `circuit_open`,
      `cancelled`.
    """

    type: Literal["node_skipped"]
    node_id: str
    reason: SkipReason


class Progress(WorkflowEvent):
    """After each node outcome that does not end the execution.

    - `nodes_completed`, `nodes_total`, `nodes_in_progress`.
    - `eta_ms`: a linear estimate of the time left; null before any node finished.
    """

    type: Literal["progress"]
    nodes_completed: int
    nodes_total: int
    nodes_in_progress: int
    eta_ms: float | None


class _Ended(WorkflowEvent):
    """The fields of the one terminal event each execution ends with; nothing of that
    execution is published after it.

    - `duration_ms`: from start to end; `status`: the execution status.
    - `results`: node_id -> output of every node that completed (partial if it failed).
    - `nodes`: node_id -> {"status", "attempts"} plus "error"/"error_type" for a failed
      node: what the journal keeps of each node (absent after an internal error; on an
      interrupted execution's, written at the next start, rebuilt from its node events,
      and absent when retention took some of them).
    """

    duration_ms: float
    nodes: NotRequired[dict[str, Any]]


class _EndedWithError(_Ended):
    """A terminal event of an execution that did not complete.

    - `error`: why; `error_type`: the name of a class in `actors.errors` or of the node's
      exception (e.g. `Halted`, `Cancelled`, `ExecutionTimeout`, `CircuitOpen`).
    """

    error: str
    error_type: str
    results: NotRequired[dict[str, Any]]


class ExecutionCompleted(_Ended):
    """Every node completed or was skipped by a condition: `status: "completed"`;
    `error_type` is None (every terminal event carries the key; docs/protocol.md)."""

    type: Literal["execution_completed"]
    status: Literal["completed"]
    results: dict[str, Any]
    error_type: None


class ExecutionFailed(_EndedWithError):
    """A node failed finally, the workflow timed out, an internal error, or (`status:
    "interrupted"`, `error_type: "Interrupted"`) the daemon died under it."""

    type: Literal["execution_failed"]
    status: Literal["failed", "interrupted"]


class ExecutionHalted(_EndedWithError):
    """The kill switch went to HALT: running nodes cancelled, the rest skipped."""

    type: Literal["execution_halted"]
    status: Literal["halted"]


class ExecutionCancelled(_EndedWithError):
    """Cancelled by request (`cancel`) or by shutdown."""

    type: Literal["execution_cancelled"]
    status: Literal["cancelled"]


# -- system and emergency ----------------------------------------------------------------

class _Circuit(SequencedEvent):
    """A breaker (shared by all nodes with the same `breaker` key) changed state.

    - `breaker`: its key; `failures`: consecutive failed runs counted;
      `state`: `open`, `half_open` or `closed` after the change.
    """

    breaker: str
    failures: int
    state: NotRequired[Literal["open", "half_open", "closed"]]


class CircuitOpened(_Circuit):
    """`breaker_failure_threshold` consecutive failures (or a failed trial run)."""

    type: Literal["circuit_opened"]


class CircuitHalfOpen(_Circuit):
    """`breaker_reset_timeout_s` passed: one trial run is let through."""

    type: Literal["circuit_half_open"]


class CircuitClosed(_Circuit):
    """The trial run succeeded."""

    type: Literal["circuit_closed"]


class EmergencyStateChanged(SequencedEvent):
    """The kill switch changed state (published on `emergency/...`).

    - `state`, `previous_state`: NORMAL, ALERT, REDUCE_ONLY, HALT; `reason`: free text.
    - `source`: why: `manual`, `risk_limit`, `journal` (a failed write), `stale_feed`.
    - `origin`: who asked: `api`, `control`, `cli`, `web`, `engine`.
    """

    type: Literal["emergency_state_changed"]
    state: EmergencyStateName
    previous_state: EmergencyStateName
    reason: str | None
    source: Literal["manual", "risk_limit", "journal", "stale_feed"]
    origin: Literal["api", "control", "cli", "web", "engine"]


class _RiskLimit(SequencedEvent):
    """A risk limit crossed a line (published on `emergency/...`).

    - `limit`: its name; `kind`: daily_loss, position_size, drawdown_pct, action_rate, custom.
    - `value` (signed, as given), `threshold`; `utilization`: value / threshold, for a
      `position_size` limit |value| / threshold (a short is judged by its size).
    """

    limit: str
    value: float
    threshold: float
    utilization: float
    kind: NotRequired[str]


class RiskLimitWarning(_RiskLimit):
    """An upward crossing of `warn_at` x threshold (once per crossing; no state change)."""

    type: Literal["risk_limit_warning"]


class RiskLimitExceeded(_RiskLimit):
    """The value reached the threshold; with `auto_halt` an `emergency_state_changed` to
    HALT (`source: "risk_limit"`) follows in the same batch."""

    type: Literal["risk_limit_exceeded"]


class _Daemon(SequencedEvent):
    """The daemon's lifecycle. `version`: tradeloom's; `pid`: the daemon's process."""

    version: str
    pid: int


class DaemonStarted(_Daemon):
    """The daemon recovered its journal and is accepting work. `events` / `control`: the
    bound endpoints (with the ports the OS picked)."""

    type: Literal["daemon_started"]
    events: NotRequired[str]
    control: NotRequired[str]


class DaemonStopping(_Daemon):
    """SIGTERM/SIGINT or stop: no new execution is admitted from here on."""

    type: Literal["daemon_stopping"]


class Heartbeat(BaseEvent):
    """`system/heartbeat`, every `heartbeat_s` and when a subscriber connects. No `seq`.

    - `last_seq`: the last committed seq; `epoch`: changes each time the daemon starts;
      `state`: the emergency state.
    """

    type: Literal["heartbeat"]
    last_seq: int
    epoch: int | str
    state: EmergencyStateName


class Gap(BaseEvent):
    """In-process only, never published: a subscription fell behind the in-memory log and
    the events `first_missing_seq`..`last_missing_seq` (inclusive) are lost to it. Goes to
    the subscription's `on_gap`, or its callback, whatever its filters. No `seq`."""

    type: Literal["gap"]
    first_missing_seq: int
    last_missing_seq: int


# -- the registry ------------------------------------------------------------------------

_ALL = (ExecutionStarted, NodeStarted, NodeCompleted, NodeFailed, NodeRetrying, NodeSkipped,
        Progress, ExecutionCompleted, ExecutionFailed, ExecutionHalted, ExecutionCancelled,
        CircuitOpened, CircuitHalfOpen, CircuitClosed, EmergencyStateChanged,
        RiskLimitWarning, RiskLimitExceeded, DaemonStarted, DaemonStopping, Heartbeat, Gap)

#: Every event `type` -> its TypedDict.
EVENT_TYPES: dict[str, type] = {get_args(get_type_hints(cls)["type"])[0]: cls for cls in _ALL}

#: The types that never get a `seq`: not journaled, not replayed, not in the ordered log.
#: A filter for one of them on a stream of sequenced events (a webhook's `events`,
#: `tradeloom tail --type`) would match nothing.
UNSEQUENCED_TYPES = frozenset({"heartbeat", "gap"})

#: The types of the ordered log: what a subscriber, a webhook or a replay can be given.
SEQUENCED_TYPES = frozenset(EVENT_TYPES) - UNSEQUENCED_TYPES
