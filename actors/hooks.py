"""On-halt hooks: workflows run each time HALT is entered (e.g. cancel every resting order).

Configured as `[[emergency.on_halt]] ref = "module:Workflow"` and/or passed in-process as
`Engine.start(config, on_halt=[workflow, ...])`. The kill switch calls `HaltHooks` once HALT
is entered and every supervisor has acknowledged it; each hook is submitted as an execution
exempt from the halt (it starts in HALT, the halt broadcast does not end it, its actions
count as `reduces_risk`). Nothing waits for a hook, and a hook that cannot start or fails is
logged as `on_halt_hook_failed`: it can never block or delay the halt itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from actors.config import Config
from actors.ending import ExecutionStatus
from actors.engine_workflows import entry_workflow
from actors.errors import EngineStopped
from actors.execution import ExecutionHandle
from actors.workflow import Workflow

log = structlog.get_logger("tradeloom.emergency")

#: Starts one hook execution with these inputs; returns its handle at once.
SubmitHook = Callable[[Workflow, Mapping[str, Any]], ExecutionHandle]


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

    def __call__(self, reason: str, source: str, origin: str) -> None:
        """Submit every hook once; the halt's reason, source and origin are its inputs."""
        inputs = {"halt_reason": reason, "halt_source": source, "halt_origin": origin}
        for workflow in self.workflows:
            try:
                handle = self._submit(workflow, inputs)
            except EngineStopped:
                log.warning("on_halt_hook_skipped", workflow_id=workflow.id,
                            why="the engine is stopping")
            except Exception as exc:  # noqa: BLE001 - one hook must not keep the others
                log.error("on_halt_hook_failed", workflow_id=workflow.id, error=repr(exc))
            else:
                handle.add_done_callback(_hook_done)


def _hook_done(handle: ExecutionHandle) -> None:
    result = handle.result(0)
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
