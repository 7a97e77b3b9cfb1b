"""On-halt hooks: workflows run each time HALT is entered (e.g. cancel every resting order).

Configured as `[[emergency.on_halt]] ref = "module:Workflow"` and/or passed in-process as
`Engine.start(config, on_halt=[workflow, ...])`. The kill switch calls `HaltHooks` once HALT
is entered and every supervisor has acknowledged it; each hook is submitted as an execution
exempt from the halt (it starts in HALT, the halt broadcast does not end it, its actions
count as `reduces_risk`). Nothing waits for a hook, and a hook that cannot start or fails is
logged as `on_halt_hook_failed`: it can never block or delay the halt itself.

With a journal, what a HALT owes its hooks is kept with the HALT (`EmergencyGate.hooks_owed`):
each hook execution's id is journaled before it starts, and the debt is cleared once every
hook has ended (completed or failed). A process killed in between (a kill -9 right after the
halt's reply) runs the owed hooks at its next start, except one whose action had started.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from actors.config import Config
from actors.ending import ExecutionStatus
from actors.engine_workflows import entry_workflow
from actors.errors import EngineStopped
from actors.execution import ExecutionHandle
from actors.logs import get_logger
from actors.workflow import Workflow

if TYPE_CHECKING:
    from actors.emergency import EmergencyGate

log = get_logger("tradeloom.emergency")

#: Starts one hook execution with these inputs, calling the third argument with its id
#: once it is recorded and before it starts; returns its handle at once.
SubmitHook = Callable[[Workflow, Mapping[str, Any], Callable[[str], None]], ExecutionHandle]

#: A hook that ended so has run: the HALT no longer owes it. (Cancelled, by a stop or an
#: operator, it may not have: a later start runs it again if its actions had not started.)
_RAN = (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED)


class HaltHooks:
    """The hook workflows of one engine, and the call that runs them."""

    def __init__(self, config: Config, extra: Sequence[Workflow], *,
                 submit: SubmitHook) -> None:
        hooks = [entry_workflow(entry, f"emergency.on_halt[{i}].ref")
                 for i, entry in enumerate(config.emergency.on_halt)]
        if isinstance(extra, Workflow | str) or not isinstance(extra, Sequence):
            raise TypeError(f"on_halt must be a list of Workflows, not {type(extra).__name__}")
        for i, workflow in enumerate(extra):
            if not isinstance(workflow, Workflow):
                raise TypeError(
                    f"on_halt[{i}] must be a Workflow, not {type(workflow).__name__}")
            hooks.append(workflow)
        self.workflows = tuple(hooks)
        self._submit = submit
        #: The kill switch whose HALT owes the hooks (the engine sets it).
        self.gate: EmergencyGate | None = None

    def __call__(self, reason: str, source: str, origin: str, *,
                 only: Sequence[Workflow] | None = None) -> None:
        """Submit every hook (or `only` these) once; the halt's reason, source and origin
        are its inputs."""
        inputs = {"halt_reason": reason, "halt_source": source, "halt_origin": origin}
        workflows = self.workflows if only is None else tuple(only)
        runs = _HookRuns(self.gate, len(workflows))
        for workflow in workflows:
            try:
                handle = self._submit(workflow, inputs, runs.submitted)
            except EngineStopped:
                log.warning("on_halt_hook_skipped", workflow_id=workflow.id,
                            why="the engine is stopping")
                runs.ended(ran=False)
            except Exception as exc:  # noqa: BLE001 - one hook must not keep the others
                log.error("on_halt_hook_failed", workflow_id=workflow.id, error=repr(exc))
                runs.ended(ran=True)  # (it would fail the same way again)
            else:
                handle.add_done_callback(runs.done)


class _HookRuns:
    """The hook executions one call submits, for the HALT that owes them."""

    def __init__(self, gate: EmergencyGate | None, count: int) -> None:
        self._gate = gate
        self._owed = gate.hooks_owed if gate is not None else None
        self._left, self._all_ran = count, True
        self._lock = threading.Lock()
        if count == 0:
            self._settle()

    def submitted(self, execution_id: str) -> None:
        if self._gate is not None and self._owed is not None:
            self._gate.hook_submitted(self._owed, execution_id)

    def done(self, handle: ExecutionHandle) -> None:
        _hook_done(handle)
        result = handle.outcome()
        self.ended(ran=result is not None and result.status in _RAN)

    def ended(self, *, ran: bool) -> None:
        with self._lock:
            self._left -= 1
            self._all_ran = self._all_ran and ran
            if self._left > 0 or not self._all_ran:
                return
        self._settle()

    def _settle(self) -> None:
        if self._gate is not None and self._owed is not None:
            self._gate.hooks_ended(self._owed)


def _hook_done(handle: ExecutionHandle) -> None:
    result = handle.outcome()
    assert result is not None  # (a done callback: the result is in)
    if result.status == ExecutionStatus.COMPLETED:
        log.info("on_halt_hook_completed", workflow_id=result.workflow_id,
                 execution_id=result.execution_id, duration_ms=result.duration_ms)
    elif result.status == ExecutionStatus.CANCELLED:
        log.warning("on_halt_hook_cancelled", workflow_id=result.workflow_id,
                    execution_id=result.execution_id, error=result.error)
    else:
        log.error("on_halt_hook_failed", workflow_id=result.workflow_id,
                  execution_id=result.execution_id, status=result.status,
                  error_type=result.error_type, error=result.error)
