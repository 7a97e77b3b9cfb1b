"""One exception root for everything tradeloom raises on purpose.

TradeloomError
├── ConfigError                 bad config: unknown key, wrong type, unimportable ref
├── WorkflowDefinitionError     a Workflow that is not a DAG, or has a bad node
├── UnknownWorkflow             submit by id of a workflow that is not registered
├── NotFound                    no such execution or intent
├── ResumeRefused               resume while a risk limit is still exceeded
├── EngineStopped               the engine is stopped or stopping
├── JournalError                the durable journal (actors/journal.py)
│   ├── JournalLocked           data_dir is held by another process (names its pid)
│   ├── NotAJournal             journal.db is not a tradeloom journal (nothing overwritten)
│   ├── JournalTooNew           journal.db has a newer schema than this version knows
│   ├── JournalCorrupt          journal.db is a tradeloom journal SQLite finds damaged
│   ├── JournalWriteFailed      a commit failed (disk full, I/O error, file removed)
│   └── JournalClosed           the journal is closed; a record was never written
└── NodeError                   outcomes the supervisor gives a node run
    ├── NodeTimeout             the node overran its timeout_s
    ├── CircuitOpen             the node's breaker is open
    ├── ExecutionTimeout        the workflow's timeout_s passed
    ├── Halted                  the kill switch is in HALT
    ├── Cancelled               cancelled by request or shutdown
    └── Overloaded              the admission queue is full

An event's `error_type` is the exception's class name, so these names are part of the
wire contract.
"""

from __future__ import annotations


class TradeloomError(Exception):
    """Root of every exception tradeloom raises on purpose."""


class ConfigError(TradeloomError):
    """The configuration is invalid; the message names the key."""


class WorkflowDefinitionError(TradeloomError):
    """A workflow is not a valid DAG; the message names the node."""

    def __init__(self, message: str, *, node_id: str | None = None) -> None:
        super().__init__(message)
        self.node_id = node_id


class UnknownWorkflow(TradeloomError):
    """No workflow with that id is registered."""


class NotFound(TradeloomError):
    """No execution (or action intent) with that id is known."""


class ResumeRefused(TradeloomError):
    """Resume was refused because a risk limit is still exceeded (use force to override)."""


class EngineStopped(TradeloomError):
    """The engine has been stopped."""


class JournalError(TradeloomError):
    """Base for the durable journal's errors."""


class JournalLocked(JournalError):
    """Another process (or another Journal in this one) holds the data_dir."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class NotAJournal(JournalError):
    """journal.db exists but is not a tradeloom journal; it is left untouched."""


class JournalTooNew(JournalError):
    """journal.db was written by a newer tradeloom (its schema version is higher)."""


class JournalCorrupt(JournalError):
    """journal.db is a tradeloom journal but SQLite finds it damaged; it is left as is."""


class JournalWriteFailed(JournalError):
    """A journal commit failed; the cause is chained. The writer keeps the data and retries."""


class JournalClosed(JournalError):
    """The journal is closed (or closed before a record could be written)."""


class NodeError(TradeloomError):
    """Base for outcomes the engine itself assigns to a node or an execution."""


class NodeTimeout(NodeError):
    """A node did not reply within its timeout_s."""


class CircuitOpen(NodeError):
    """The node's circuit breaker is open; the node was not run."""


class ExecutionTimeout(NodeError):
    """The whole execution overran the workflow's timeout_s."""


class Halted(NodeError):
    """The emergency state is HALT."""


class Cancelled(NodeError):
    """The execution was cancelled."""


class Overloaded(NodeError):
    """The admission queue is full."""
