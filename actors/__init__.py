"""tradeloom's actor engine: workflows, supervisors, node actors, the kill switch.

Every public name is imported from its module when first used (PEP 562), not when the
package is: `import actors.messages` or the `tradeloom` command do not load the whole engine
first, and a Ctrl-C while the command loads can be answered without a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actors.clock import Clock, ManualClock, SystemClock
    from actors.config import (
        Config,
        DaemonConfig,
        EmergencyConfig,
        LimitConfig,
        OnHaltEntry,
        ResilienceConfig,
        TransportConfig,
        WorkflowEntry,
    )
    from actors.emergency import EmergencyState
    from actors.engine import Engine
    from actors.errors import (
        Cancelled,
        CircuitOpen,
        ConditionError,
        ConfigError,
        CoroutineReturned,
        EngineStopped,
        ExecutionTimeout,
        Halted,
        InternalError,
        Interrupted,
        JournalError,
        JournalLocked,
        LimitExceeded,
        NodeError,
        NodeStuck,
        NodeThreadUnavailable,
        NodeTimeout,
        NoJournal,
        NotFound,
        Overloaded,
        ResumeRefused,
        TradeloomError,
        UnknownWorkflow,
        WaitInCallback,
        WorkflowDefinitionError,
    )
    from actors.events import Subscription
    from actors.execution import ExecutionHandle, ExecutionResult
    from actors.workflow import Node, NodeContext, Workflow

#: Each public name -> the module that defines it.
_DEFINED_IN = {
    "Cancelled": "actors.errors",
    "CircuitOpen": "actors.errors",
    "Clock": "actors.clock",
    "ConditionError": "actors.errors",
    "Config": "actors.config",
    "ConfigError": "actors.errors",
    "CoroutineReturned": "actors.errors",
    "DaemonConfig": "actors.config",
    "EmergencyConfig": "actors.config",
    "EmergencyState": "actors.emergency",
    "Engine": "actors.engine",
    "EngineStopped": "actors.errors",
    "ExecutionHandle": "actors.execution",
    "ExecutionResult": "actors.execution",
    "ExecutionTimeout": "actors.errors",
    "Halted": "actors.errors",
    "InternalError": "actors.errors",
    "Interrupted": "actors.errors",
    "JournalError": "actors.errors",
    "JournalLocked": "actors.errors",
    "LimitConfig": "actors.config",
    "LimitExceeded": "actors.errors",
    "ManualClock": "actors.clock",
    "NoJournal": "actors.errors",
    "Node": "actors.workflow",
    "NodeContext": "actors.workflow",
    "NodeError": "actors.errors",
    "NodeStuck": "actors.errors",
    "NodeThreadUnavailable": "actors.errors",
    "NodeTimeout": "actors.errors",
    "NotFound": "actors.errors",
    "OnHaltEntry": "actors.config",
    "Overloaded": "actors.errors",
    "ResilienceConfig": "actors.config",
    "ResumeRefused": "actors.errors",
    "Subscription": "actors.events",
    "SystemClock": "actors.clock",
    "TradeloomError": "actors.errors",
    "TransportConfig": "actors.config",
    "UnknownWorkflow": "actors.errors",
    "WaitInCallback": "actors.errors",
    "Workflow": "actors.workflow",
    "WorkflowDefinitionError": "actors.errors",
    "WorkflowEntry": "actors.config",
}

__all__ = [
    "Cancelled",
    "CircuitOpen",
    "Clock",
    "ConditionError",
    "Config",
    "ConfigError",
    "CoroutineReturned",
    "DaemonConfig",
    "EmergencyConfig",
    "EmergencyState",
    "Engine",
    "EngineStopped",
    "ExecutionHandle",
    "ExecutionResult",
    "ExecutionTimeout",
    "Halted",
    "InternalError",
    "Interrupted",
    "JournalError",
    "JournalLocked",
    "LimitConfig",
    "LimitExceeded",
    "ManualClock",
    "NoJournal",
    "Node",
    "NodeContext",
    "NodeError",
    "NodeStuck",
    "NodeThreadUnavailable",
    "NodeTimeout",
    "NotFound",
    "OnHaltEntry",
    "Overloaded",
    "ResilienceConfig",
    "ResumeRefused",
    "Subscription",
    "SystemClock",
    "TradeloomError",
    "TransportConfig",
    "UnknownWorkflow",
    "WaitInCallback",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowEntry",
]


if not TYPE_CHECKING:  # (for a type checker, a module __getattr__ would accept any name)
    from actors.lazy_names import lazy_names

    __getattr__, __dir__ = lazy_names('actors', _DEFINED_IN, globals(), __all__)
    del lazy_names  # (not a name of the package's)
