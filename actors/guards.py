"""Guards a supervisor consults around each node run (dramatiq's middleware shape).

Each guard owns one concern and the node options that drive it:

- `BreakerGuard` (`breaker`): may refuse a run before dispatch, marks the half-open trial,
  and records every run's outcome with the shared breaker.
- `CacheGuard` (`cache_ttl_s`): may answer a provider from its cache before dispatch, and
  stores a fresh output after a run.
- `RestartGuard` (`timeout_s`, `max_restarts`, `restart_within_s`, `restart_on`,
  `backoff_*`): each node's timeout, and whether and when a failed node runs again.

`before_dispatch(run)` returns None to go on or a `Verdict`; `after_run(run, error)` sees
every run that was dispatched, including runs the gate refused (`run.denied`) and runs
abandoned on timeout (`error` is then the NodeTimeout; the abandoned thread still owns
`run.error`). The supervisor keeps the first two in a
fixed tuple: the hot path is one loop over two objects.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from actors.breaker import Admit, BreakerRegistry
from actors.cache import ProviderCache
from actors.config import ResilienceConfig
from actors.copies import deep_copy
from actors.events import Event
from actors.logs import get_logger
from actors.machine import NodeRun
from actors.packing import event_form
from actors.restart import RestartPolicy, policy_for
from actors.workflow import Node

log = get_logger("tradeloom.guards")


@dataclass(frozen=True, slots=True)
class Verdict:
    """A guard's answer before dispatch: the node's output is `value` (cache hit; `shown`
    its event form), or, when `refused`, it must not run at all (open breaker)."""

    refused: bool
    value: Any = None
    shown: Any = None


_REFUSED = Verdict(refused=True)


class BreakerGuard:
    """Circuit breakers shared by every execution, keyed by `Node.breaker`."""

    def __init__(self, breakers: BreakerRegistry) -> None:
        self._breakers = breakers
        #: State changes a run's outcome caused, for the supervisor to publish right after
        #: that run's own event (`take_held`).
        self._held: list[Event] = []

    def take_held(self) -> list[Event]:
        """The breaker events `after_run` held back (empty: none), and forget them."""
        held = self._held
        if held:
            self._held = []
        return held

    def before_dispatch(self, run: NodeRun) -> Verdict | None:
        key = run.node.breaker
        if key is None:
            return None
        verdict = self._breakers.get(key).admit()
        if verdict is Admit.REJECT:
            return _REFUSED
        run.trial = verdict is Admit.TRIAL
        return None

    def refuses_retry(self, node: Node, delay_s: float) -> bool:
        """Whether `node`'s breaker would refuse a retry `delay_s` from now: it is open (the
        failure just recorded may have opened it) and stays so until then."""
        return node.breaker is not None and self._breakers.get(node.breaker).refuses_for(
            delay_s)

    def after_run(self, run: NodeRun, error: BaseException | None) -> None:
        key = run.node.breaker
        if key is None:
            return
        breaker = self._breakers.get(key)
        exe = run.execution
        if run.denied is not None or (exe.closed and not exe.past_deadline):
            # It never ran, or its execution was ended under it (halt, cancel, another
            # node's failure): what it did after being told to cancel is no outcome of the
            # venue's (a halt's cancelled runs opened a breaker; a cancelled trial that
            # returned closed one). A trial's turn goes to the next caller. One cut by the
            # workflow's deadline counts: the venue was too slow (`_still_running`).
            if run.trial:
                breaker.release_trial()
            return
        breaker.record(error is None, trial=run.trial, held=self._held)


class CacheGuard:
    """Reuses a provider's output across executions for its TTL when it would compute the
    same thing: the same function (a workflow rebuilt under the same id with another one,
    e.g. a `functools.partial` for another venue, does not share), the same inputs, and
    the same outputs of the nodes it depends on (a provider of the order book of the
    symbol an upstream node picked: ETH's book was served for a BTC pick)."""

    def __init__(self, cache: ProviderCache) -> None:
        self._cache = cache

    def before_dispatch(self, run: NodeRun) -> Verdict | None:
        node = run.node
        if node.cache_ttl_s is None or run.trial:  # a breaker trial must really run
            return None
        key = _cache_key(run)
        if key is None:
            return None
        hit, entry = self._cache.get(run.workflow_id, node.id, key)
        # The entry holds the function it was made by: its id in the key cannot be another
        # function's while the entry lives (`is`, not `==`: no user code here).
        if not hit or entry[0] is not node.fn:
            return None
        # Each hit its own copy: the output goes on to this execution's nodes and its
        # caller's `results`, and one that changed it would change every later hit's.
        copied = private_copy(entry[1][0])
        return Verdict(refused=False, value=copied[0], shown=entry[1][1]) if copied else None

    def after_run(self, run: NodeRun, error: BaseException | None) -> None:
        node = run.node
        if (node.cache_ttl_s is None or error is not None or run.denied is not None
                or run.execution.closed  # a cancelled run's output is not to be trusted
                or run.cache_copy is None):  # (one that cannot be copied is not kept)
            return
        key = _cache_key(run)
        if key is not None:
            self._cache.put(run.workflow_id, node.id, key, (node.fn, run.cache_copy),
                            node.cache_ttl_s)


def _cache_key(run: NodeRun) -> str | None:
    """The run's cache key: its function's id, its execution's inputs and the outputs of
    the nodes it depends on, all in their event forms (plain data: no user `__repr__` runs
    on the supervisor's thread); None when there is none."""
    exe = run.execution
    inputs = _inputs_key(exe.shown_inputs)
    ancestors = exe.workflow.closure.ancestor_ids(run.index)
    if inputs is None:
        return None
    if not ancestors:
        return f"{id(run.node.fn)}:{inputs}"
    shown = exe.shown_outputs if exe.shown_outputs is not None else exe.outputs
    upstream = _inputs_key({node_id: shown.get(node_id) for node_id in ancestors})
    return None if upstream is None else f"{id(run.node.fn)}:{inputs}:{upstream}"


#: A cached output is copied again on every hit, on the supervisor's thread: one whose copy
#: took longer than this on the node's thread (a book of 300,000 price levels took ~1 s a
#: copy; 5 ms is about 4,000 levels of plain dicts) is not cached, so a hit never holds up
#: the other executions or a halt for long.
MAX_CACHE_COPY_S = 0.005
#: Nodes whose output was not kept, already logged (the set is bounded).
_NOT_KEPT_TOLD: set[str] = set()


def cache_entry(value: Any, node_id: str) -> tuple[Any, Any] | None:
    """What a cached provider's output is kept as: a deep copy and its event form, made
    on the node's thread; None if it cannot be copied, or not quickly enough."""
    started = time.perf_counter()
    copied = private_copy(value)
    took = time.perf_counter() - started
    if copied is None or took > MAX_CACHE_COPY_S:
        if node_id not in _NOT_KEPT_TOLD:  # once per node, not once per run
            if len(_NOT_KEPT_TOLD) < 10_000:
                _NOT_KEPT_TOLD.add(node_id)
            log.info("cache_output_not_kept", node_id=node_id, copy_ms=round(took * 1000, 3),
                     why="not copyable" if copied is None else "too big to copy per hit")
        return None
    return copied[0], event_form(copied[0])


def private_copy(value: Any) -> tuple[Any] | None:
    """`(a deep copy of value,)`, or None when it cannot be copied (user code raised, or
    a reference cycle or nesting too deep for the plain-data copy)."""
    try:
        return (deep_copy(value),)
    except BaseException:  # noqa: BLE001 - an object's __deepcopy__ may raise anything
        log.debug("cache_copy_unavailable")
        return None


def _inputs_key(inputs: Any) -> str | None:
    """A cache key for an execution's inputs in their event form (plain data the engine
    made at submit: no user `__repr__` runs on the supervisor's thread), or None when
    there is none. Keys of mixed types sort by their repr."""
    if not isinstance(inputs, Mapping):
        return None
    try:
        key = repr(sorted((repr(k), repr(v)) for k, v in inputs.items()))
    except Exception:  # noqa: BLE001 - (plain data: not expected)
        log.debug("cache_key_unavailable")
        return None
    # An input whose text could not be taken reads the same for every such object: two
    # different inputs must never share an output.
    return None if "<unprintable " in key else key


class RestartGuard:
    """Each node's restart policy (its options over `[resilience]`), resolved once per node
    and kept as long as the node lives."""

    def __init__(self, defaults: ResilienceConfig) -> None:
        self._defaults = defaults
        #: id(node) -> (a weak reference to the node, its policy); the entry goes with the
        #: node (before its id can be another's). A WeakKeyDictionary made a weak reference
        #: on every lookup, once per node run.
        self._policies: dict[int, tuple[weakref.ref[Node], RestartPolicy]] = {}

    def policy(self, node: Node) -> RestartPolicy:
        entry = self._policies.get(id(node))
        if entry is not None and entry[0]() is node:
            return entry[1]
        policy = policy_for(node, self._defaults)
        self._policies[id(node)] = (weakref.ref(node, functools.partial(
            _forget, self._policies, id(node))), policy)
        return policy

    def timeout_s(self, node: Node) -> float:
        return self.policy(node).timeout_s

    def retry_delay_s(self, node: Node, error: BaseException, restarts: list[float],
                      now: float) -> float | None:
        """The wait before running the node again, or None when this failure is final.
        `restarts` (this node's restart times in this execution) is updated."""
        policy = self.policy(node)
        if not (policy.restartable(error) and policy.allows_restart(restarts, now)):
            return None
        restarts.append(now)
        return policy.delay_s(len(restarts))


def _forget(policies: dict[int, Any], key: int, _ref: object) -> None:
    policies.pop(key, None)
