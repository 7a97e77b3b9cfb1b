"""tradeloom's actor engine: workflows, supervisors, node actors, the kill switch."""

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
    ConfigError,
    EngineStopped,
    ExecutionTimeout,
    Halted,
    InternalError,
    LimitExceeded,
    NodeError,
    NodeTimeout,
    NotFound,
    Overloaded,
    ResumeRefused,
    TradeloomError,
    UnknownWorkflow,
    WorkflowDefinitionError,
)
from actors.events import Subscription
from actors.execution import ExecutionHandle, ExecutionResult
from actors.workflow import Node, NodeContext, Workflow

__all__ = [
    "Cancelled",
    "CircuitOpen",
    "Clock",
    "Config",
    "ConfigError",
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
    "LimitConfig",
    "LimitExceeded",
    "ManualClock",
    "Node",
    "NodeContext",
    "NodeError",
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
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowEntry",
]
