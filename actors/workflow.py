"""Workflows: DAGs of nodes, validated when built and compiled once for the hot path."""

from __future__ import annotations

import inspect
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from actors.closure import Closure
from actors.config_ranges import COUNT_RANGES
from actors.errors import NodeTimeout, WorkflowDefinitionError, shown, valid_text
from actors.logs import node_logger

Category = Literal["provider", "condition", "action", "transform"]
CATEGORIES: frozenset[str] = frozenset({"provider", "condition", "action", "transform"})
ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
#: Guards making a NodeContext's cancel Event on first use (rare: once per context that
#: reads it), so every thread of a node gets the same one.
_MAKING_CANCEL_EVENT = threading.Lock()
DEFAULT_RESTART_ON: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, NodeTimeout)
#: A node's `max_restarts` at most, as `[resilience] max_restarts`: more is a typo's sign.
MAX_RESTARTS_MAX = COUNT_RANGES["resilience.max_restarts"][1]

RiskFn = Callable[..., dict[str, Any]]


class Node:
    """One step of a workflow: `fn(ctx)` runs in its own node actor's thread.

    Resilience options left as None take the engine's `[resilience]` defaults, except that a
    non-idempotent `action` defaults to `max_restarts=0` (at most once).
    """

    __slots__ = (
        "__weakref__",
        "backoff_max_s",
        "backoff_min_s",
        "breaker",
        "cache_ttl_s",
        "category",
        "depends_on",
        "fn",
        "id",
        "idempotent",
        "max_restarts",
        "name",
        "reduces_risk",
        "restart_on",
        "restart_within_s",
        "timeout_s",
    )

    def __init__(
        self,
        id: str,
        fn: Callable[[NodeContext], Any],
        *,
        category: str = "transform",
        depends_on: Iterable[str] = (),
        name: str | None = None,
        timeout_s: float | None = None,
        max_restarts: int | None = None,
        restart_within_s: float | None = None,
        backoff_min_s: float | None = None,
        backoff_max_s: float | None = None,
        restart_on: type[BaseException] | Iterable[type[BaseException]] | None = None,
        breaker: str | None = None,
        reduces_risk: bool = False,
        idempotent: bool = False,
        cache_ttl_s: float | None = None,
    ) -> None:
        if not isinstance(id, str) or not ID_PATTERN.fullmatch(id):
            raise WorkflowDefinitionError(
                f"node id {id!r} must match [A-Za-z0-9_.-]{{1,128}}", node_id=str(id))
        if not callable(fn):
            raise WorkflowDefinitionError(f"node {id!r}: fn must be callable", node_id=id)
        if _is_async(fn):  # would return a coroutine that nothing awaits: nothing would run
            raise WorkflowDefinitionError(
                f"node {id!r}: fn is an async function; node functions run in threads and "
                "are never awaited: use a plain def", node_id=id)
        if not isinstance(category, str) or category not in CATEGORIES:
            raise WorkflowDefinitionError(
                f"node {id!r}: category {category!r} is not one of "
                f"{', '.join(sorted(CATEGORIES))}", node_id=id)
        if isinstance(depends_on, str):
            depends_on = (depends_on,)
        if name is not None and not isinstance(name, str):  # events carry it as a string
            raise WorkflowDefinitionError(
                f"node {id!r}: name must be a string, not {type(name).__name__}", node_id=id)
        self.id = id
        self.fn = fn
        self.category = category
        self.depends_on = _tuple_of(depends_on, "depends_on", id)
        for dep in self.depends_on:
            if not isinstance(dep, str):
                raise WorkflowDefinitionError(
                    f"node {id!r}: depends_on must hold node ids (strings), not "
                    f"{type(dep).__name__}", node_id=id)
        self.name = name or _fn_name(fn) or id
        self.timeout_s = _positive(timeout_s, "timeout_s", id)
        self.restart_within_s = _positive(restart_within_s, "restart_within_s", id)
        self.backoff_min_s = _non_negative(backoff_min_s, "backoff_min_s", id)
        self.backoff_max_s = _non_negative(backoff_max_s, "backoff_max_s", id)
        if (self.backoff_min_s is not None and self.backoff_max_s is not None
                and self.backoff_min_s > self.backoff_max_s):  # as the config's rule
            raise WorkflowDefinitionError(
                f"node {id!r}: backoff_min_s ({self.backoff_min_s:g}) must be <= "
                f"backoff_max_s ({self.backoff_max_s:g})", node_id=id)
        self.cache_ttl_s = _positive(cache_ttl_s, "cache_ttl_s", id)
        if breaker is not None and not (isinstance(breaker, str) and breaker
                                        and valid_text(breaker) == breaker):
            # A lone surrogate: UTF-8 (the metrics' label, the journal) has no form for it.
            raise WorkflowDefinitionError(
                f"node {id!r}: breaker must be a non-empty string with no lone surrogates, "
                f"not {breaker!r}", node_id=id)
        for flag, value in (("reduces_risk", reduces_risk), ("idempotent", idempotent)):
            if not isinstance(value, bool):  # "no" or 0 must not quietly mean something
                raise WorkflowDefinitionError(
                    f"node {id!r}: {flag} must be True or False, not {value!r}", node_id=id)
        self.breaker = breaker
        self.reduces_risk = reduces_risk
        self.idempotent = idempotent
        if max_restarts is not None and (isinstance(max_restarts, bool)
                                         or not isinstance(max_restarts, int)
                                         or not 0 <= max_restarts <= MAX_RESTARTS_MAX):
            too_many = type(max_restarts) is int and max_restarts > MAX_RESTARTS_MAX
            # (the value is not printed then: an int of 4300+ digits has no str())
            raise WorkflowDefinitionError(
                f"node {id!r}: max_restarts must be an int from 0 to {MAX_RESTARTS_MAX}"
                + ("" if too_many else f", not {max_restarts!r}"), node_id=id)
        if category == "action" and not idempotent:
            if max_restarts:
                raise WorkflowDefinitionError(
                    f"node {id!r}: an action is run at most once; max_restarts needs "
                    "idempotent=True", node_id=id)
            max_restarts = 0
        self.max_restarts = max_restarts
        if isinstance(restart_on, type):  # one type, as `except` takes it
            restart_on = (restart_on,)
        if restart_on is not None:
            restart_on = _tuple_of(restart_on, "restart_on", id)
            if not all(isinstance(t, type) and issubclass(t, BaseException) for t in restart_on):
                raise WorkflowDefinitionError(
                    f"node {id!r}: restart_on must list exception types", node_id=id)
        self.restart_on = restart_on
        if cache_ttl_s is not None and category != "provider":
            raise WorkflowDefinitionError(
                f"node {id!r}: cache_ttl_s is for provider nodes only", node_id=id)

    def __repr__(self) -> str:
        return f"Node({self.id!r}, category={self.category!r})"


def _is_async(fn: Callable[..., Any]) -> bool:
    """An `async def` (or async generator) function, partial, or object whose `__call__`
    is one."""
    try:
        call = type(fn).__call__ if not inspect.isroutine(fn) else None  # a callable object
        return any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)
                   for f in (fn, call))
    except Exception:  # noqa: BLE001 - a user __getattr__ raised; a coroutine it returns
        return False  # at run time still fails its node (CoroutineReturned)


def _tuple_of(items: Any, key: str, node_id: str) -> tuple[Any, ...]:
    try:
        return tuple(items)
    except Exception:  # noqa: BLE001 - not iterable, or a user iterable that raised
        raise WorkflowDefinitionError(
            f"node {node_id!r}: {key} must be an iterable, not {type(items).__name__}",
            node_id=node_id) from None


def _fn_name(fn: Any) -> str | None:
    """`fn.__name__` when it is a string; None when there is none (a callable object whose
    `__getattr__` raises, or a `__name__` that is not a string)."""
    try:
        name = getattr(fn, "__name__", None)
    except Exception:  # noqa: BLE001 - user code
        return None
    return name if isinstance(name, str) else None


def finite_seconds(value: Any) -> bool:
    """A real number (not a bool) that is finite as a float: an int past the float range
    is not (`math.isfinite` raises OverflowError on it)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _positive(value: float | None, key: str, node_id: str) -> float | None:
    return _seconds(value, key, node_id, allow_zero=False)


def _non_negative(value: float | None, key: str, node_id: str) -> float | None:
    return _seconds(value, key, node_id, allow_zero=True)


def _seconds(value: Any, key: str, node_id: str, *, allow_zero: bool) -> float | None:
    if value is None:
        return None
    bound = ">= 0" if allow_zero else "> 0"
    if not finite_seconds(value) or value < 0 or (value == 0 and not allow_zero):
        raise WorkflowDefinitionError(
            f"node {node_id!r}: {key} must be a finite number {bound}, not {shown(value)}",
            node_id=node_id)
    return float(value)


class Workflow:
    """A validated DAG of nodes.

    Compiled once: nodes get integer indices, their dependents and transitive closure
    (`actors.closure`) are precomputed, so a supervisor drives an execution with lookups.
    """

    def __init__(self, id: str, nodes: Iterable[Node], *,
                 timeout_s: float | None = None, description: str = "") -> None:
        if not isinstance(id, str) or not ID_PATTERN.fullmatch(id):
            raise WorkflowDefinitionError(f"workflow id {id!r} must match [A-Za-z0-9_.-]{{1,128}}")
        if isinstance(nodes, str | bytes | Node) or not isinstance(nodes, Iterable):
            raise WorkflowDefinitionError(
                f"workflow {id!r}: nodes must be a list of Node, not {type(nodes).__name__}")
        nodes = tuple(nodes)
        if not nodes:
            raise WorkflowDefinitionError(f"workflow {id!r} has no nodes")
        if timeout_s is not None and (not finite_seconds(timeout_s) or timeout_s <= 0):
            raise WorkflowDefinitionError(
                f"workflow {id!r}: timeout_s must be a finite number > 0, not "
                f"{shown(timeout_s)}")
        self.id = id
        self.nodes = nodes
        self.timeout_s = timeout_s
        self.description = description
        index: dict[str, int] = {}
        for i, node in enumerate(nodes):
            if not isinstance(node, Node):
                raise WorkflowDefinitionError(f"workflow {id!r}: item {i} is not a Node")
            if node.id in index:
                raise WorkflowDefinitionError(
                    f"workflow {id!r}: duplicate node id {node.id!r}", node_id=node.id)
            index[node.id] = i
        self.index = index
        for node in nodes:
            for dep in node.depends_on:
                if dep not in index:
                    raise WorkflowDefinitionError(
                        f"workflow {id!r}: node {node.id!r} depends on unknown node {dep!r}",
                        node_id=node.id)
                if dep == node.id:
                    raise WorkflowDefinitionError(
                        f"workflow {id!r}: node {node.id!r} depends on itself", node_id=node.id)
        self.deps: tuple[tuple[int, ...], ...] = tuple(
            tuple(index[d] for d in dict.fromkeys(n.depends_on)) for n in nodes)
        dependents: list[list[int]] = [[] for _ in nodes]
        for i, deps in enumerate(self.deps):
            for d in deps:
                dependents[d].append(i)
        self.dependents: tuple[tuple[int, ...], ...] = tuple(tuple(x) for x in dependents)
        self.order = self._topological_order()
        self.roots: tuple[int, ...] = tuple(i for i, d in enumerate(self.deps) if not d)
        #: `ancestor_ids(i)` (what node i's ctx.upstream holds) and `descendants(i)`.
        self.closure = Closure(tuple(n.id for n in nodes), self.deps, self.dependents,
                               self.order)

    def _topological_order(self) -> tuple[int, ...]:
        indegree = [len(d) for d in self.deps]
        ready = [i for i, n in enumerate(indegree) if n == 0]
        order: list[int] = []
        while ready:
            i = ready.pop()
            order.append(i)
            for j in self.dependents[i]:
                indegree[j] -= 1
                if indegree[j] == 0:
                    ready.append(j)
        if len(order) != len(self.nodes):
            # What Kahn's algorithm leaves is cycles plus what hangs below them; walking
            # dependency edges among the leftovers must come back to a node on a cycle.
            left = {i for i, n in enumerate(indegree) if n > 0}
            i = min(left)
            seen: set[int] = set()
            while i not in seen:
                seen.add(i)
                i = next(d for d in self.deps[i] if d in left)
            stuck = self.nodes[i].id
            raise WorkflowDefinitionError(
                f"workflow {self.id!r} is not a DAG: node {stuck!r} is on a cycle", node_id=stuck)
        return tuple(order)

    def __repr__(self) -> str:
        return f"Workflow({self.id!r}, nodes={[n.id for n in self.nodes]})"


class NodeContext:
    """What a node function sees of its execution.

    `upstream` maps every node this one depends on, directly or through others, to its
    output, so an action can read the prices its condition looked at.

    In a run, `inputs` and `upstream` are the node's own top-level dicts: adding, replacing
    or deleting a key changes nothing another node, an event or the journal sees. The
    values inside are not copied (copying every output for every reader would cost every
    node run): they are the upstream nodes' own objects, shared with later nodes (a
    cached provider's later executions get copies of their own; events, the journal and
    `handle.result()` carry a copy of the plain data made as the output was returned).
    Treat them as read-only; copy one to change it (`dict(...)`, `copy.deepcopy`).
    """

    __slots__ = ("_cancel_requested", "_cancelled", "_log", "_risk", "attempt", "execution_id",
                 "inputs", "node_id", "upstream", "workflow_id")

    def __init__(self, *, inputs: Mapping[str, Any], upstream: Mapping[str, Any],
                 execution_id: str, workflow_id: str, node_id: str, attempt: int,
                 cancelled: threading.Event | None = None, risk: RiskFn | None = None) -> None:
        self.inputs = inputs
        self.upstream = upstream
        self.execution_id = execution_id
        self.workflow_id = workflow_id
        self.node_id = node_id
        self.attempt = attempt
        # The Event is made on first use: most nodes never look at it.
        self._cancelled = cancelled
        self._cancel_requested = cancelled is not None and cancelled.is_set()
        self._risk = risk
        self._log: Any = None

    @property
    def cancelled(self) -> threading.Event:
        """Set when the node should stop: cancel, halt, fail-fast or its timeout."""
        event = self._cancelled
        if event is None:
            # Under a lock: two threads of one node (a pool of its own) reading it first at
            # once made two Events, and a cancel set only one of them.
            with _MAKING_CANCEL_EVENT:
                event = self._cancelled
                if event is None:
                    event = threading.Event()
                    self._cancelled = event
                    # Paired with cancel(): whichever runs second sees the other's write.
                    if self._cancel_requested:
                        event.set()
        return event

    def cancel(self) -> None:
        """Ask the node to stop (the engine calls this; nodes read `cancelled`)."""
        event = self.request_cancel()
        if event is not None:
            event.set()

    def request_cancel(self) -> threading.Event | None:
        """Mark the node cancelled without waking it: `cancelled` reads as set from now on
        unless a thread already holds the Event; that Event is returned, to be set (and its
        waiters woken) by the caller."""
        self._cancel_requested = True
        event = self._cancelled
        return None if event is None or event.is_set() else event

    @property
    def idempotency_key(self) -> str:
        """`<execution_id>:<node_id>`, the same on every attempt: pass it as client order id."""
        return f"{self.execution_id}:{self.node_id}"

    @property
    def log(self) -> Any:
        """A structlog logger bound with execution_id, workflow_id, node_id and attempt."""
        if self._log is None:
            self._log = node_logger("tradeloom.node").bind(
                execution_id=self.execution_id, workflow_id=self.workflow_id,
                node_id=self.node_id, attempt=self.attempt)
        return self._log

    def risk(self, limit: str, value: float | None = None, delta: float | None = None,
             *, equity: float | None = None) -> dict[str, Any]:
        """Report a risk figure to the kill switch; returns {limit, value, utilization}.

        `value` sets the figure, `delta` adds to it; for `drawdown_pct` limits `equity`
        may be given instead and the drawdown from peak equity is computed.
        """
        if self._risk is None:
            raise RuntimeError("this context is not attached to an engine")
        return self._risk(limit, value=value, delta=delta, equity=equity)
