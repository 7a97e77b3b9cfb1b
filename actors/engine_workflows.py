"""The engine's workflows: registering them by id, and resolving what `submit` is given.

A part of `Engine` (a mixin it inherits), kept apart so each file reads as one concern.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from actors.config import Config, OnHaltEntry, WorkflowEntry
from actors.errors import ConfigError, UnknownWorkflow
from actors.workflow import Workflow

if TYPE_CHECKING:
    import threading

__all__ = ["WorkflowRegistry", "check_optional_str", "entry_workflow", "loaded_workflows"]


class WorkflowRegistry:
    """register / workflows and the lookup behind `submit`, for `Engine`."""

    _lock: threading.RLock
    #: By id: (workflow, default bot_id, default strategy_id).
    _workflows: dict[str, tuple[Workflow, str | None, str | None]]
    #: Ids given by `register()` (or the config): a different Workflow may not take them.
    #: An id first seen in `submit(workflow)` is taken by whichever Workflow came last, so
    #: a program may build its workflow afresh for each submit.
    _registered: set[str]

    def _register_entries(self, config: Config) -> None:
        """Start the registry with the config's `[[workflows]]` (loaded: `loaded_workflows`)."""
        self._workflows, self._registered = {}, set()
        for entry in config.workflows:
            assert entry.workflow is not None  # (loaded_workflows imported every ref)
            self.register(entry.workflow, bot_id=entry.bot_id, strategy_id=entry.strategy_id)

    def register(self, workflow: Workflow, *, bot_id: str | None = None,
                 strategy_id: str | None = None) -> None:
        """Make `workflow` submittable by id, with default bot and strategy ids.

        Registering the same Workflow again updates its defaults; a different Workflow
        under a registered id is refused (ValueError), by `register` and by `submit`: a
        submit by id must never silently run something else."""
        if not isinstance(workflow, Workflow):
            raise TypeError(f"workflow must be a Workflow, not {type(workflow).__name__}")
        check_optional_str(bot_id, "bot_id")
        check_optional_str(strategy_id, "strategy_id")
        with self._lock:
            self._check_free(workflow)
            self._workflows[workflow.id] = (workflow, bot_id, strategy_id)
            self._registered.add(workflow.id)

    def _check_free(self, workflow: Workflow) -> None:
        entry = self._workflows.get(workflow.id)
        if (entry is not None and entry[0] is not workflow
                and workflow.id in self._registered):
            raise ValueError(f"workflow id {workflow.id!r} is registered to another "
                             "Workflow object")

    @property
    def workflows(self) -> list[str]:
        return sorted(self._workflows)

    def _resolve_workflow(self, workflow: Workflow | str,
                          ) -> tuple[Workflow, str | None, str | None]:
        if isinstance(workflow, str):
            entry = self._workflows.get(workflow)
            if entry is None:
                known = sorted(self._workflows)
                shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
                raise UnknownWorkflow(f"no workflow registered as {workflow!r} (registered: "
                                      f"{shown or 'none'})")
            return entry
        if not isinstance(workflow, Workflow):
            raise TypeError(f"workflow must be a Workflow or a registered workflow id, not "
                            f"{type(workflow).__name__}")
        entry = self._workflows.get(workflow.id)
        if entry is not None and entry[0] is workflow:
            return entry
        with self._lock:
            self._check_free(workflow)
            self._workflows[workflow.id] = entry = (workflow, None, None)
        return entry


def check_optional_str(value: Any, name: str) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a string or None, not {type(value).__name__}")


def loaded_workflows(config: Config) -> Config:
    """`config` with every `[[workflows]]` entry's Workflow (`entry_workflow`): a Config
    built by hand once failed with "workflow must be a Workflow, not NoneType", leaving
    the engine's actors running, and the daemon's triggers would have skipped it."""
    return dataclasses.replace(config, workflows=tuple(
        dataclasses.replace(entry, workflow=entry_workflow(entry, f"workflows[{i}].ref"))
        for i, entry in enumerate(config.workflows)))


def entry_workflow(entry: WorkflowEntry | OnHaltEntry, key: str) -> Workflow:
    """A config entry's Workflow: a loaded config has it; one built by hand
    (`WorkflowEntry(ref=...)`) has only the ref, imported now."""
    from actors.config_parse import import_ref  # (it imports the workflow modules)

    workflow = entry.workflow if entry.workflow is not None else import_ref(entry.ref, key=key)
    if not isinstance(workflow, Workflow):
        raise ConfigError(f"{key}: {entry.ref!r} is a {type(workflow).__name__}, not a "
                          "Workflow")
    return workflow
