"""One exception root for everything tradeloom raises on purpose.

TradeloomError
├── ConfigError                 bad config: unknown key, wrong type, unimportable ref
├── WorkflowDefinitionError     a Workflow that is not a DAG, or has a bad node
├── UnknownWorkflow             submit by id of a workflow that is not registered
├── NotFound                    no such execution, intent, risk limit, webhook or dead letter
├── NoJournal                   an in-process engine without data_dir: no history, replay
│                               or intents
├── LimitExceeded               resume/alert refused while an auto_halt limit is exceeded
│                               (wire code `limit_exceeded`; `ResumeRefused` is the same class)
├── EngineStopped               the engine is stopped or stopping
├── WaitInCallback              a waiting call from a subscriber callback's thread
├── JournalError                the durable journal (actors/journal.py)
│   ├── JournalLocked           data_dir is held by another process (names its pid)
│   ├── NotAJournal             journal.db is not a tradeloom journal (nothing overwritten)
│   ├── JournalTooNew           journal.db has a newer schema than this version knows
│   ├── JournalCorrupt          journal.db is a tradeloom journal SQLite finds damaged
│   ├── JournalWriteFailed      a commit failed (disk full, I/O error, file removed)
│   └── JournalClosed           the journal is closed; a record was never written
├── WebhookError                outbound webhooks (actors/webhook*.py)
│   ├── WebhookAddressRefused   the URL resolves to a private/loopback/link-local address
│   │                           and allow_private is off (checked at connect time)
│   ├── WebhookAttemptFailed    one POST failed: no response, or a non-2xx status
│   └── WebhookStopped          the deliverer is stopping (ends a backoff early)
└── NodeError                   outcomes the engine gives a node run or an execution
    ├── NodeTimeout             the node overran its timeout_s
    ├── NodeStuck               not run: too many of the node's runs are still stuck past
    │                           their timeout (threads that cannot be killed)
    ├── CircuitOpen             the node's breaker is open
    ├── ConditionError          a condition's result has no usable truth value (or is NaN)
    ├── CoroutineReturned       a node function returned a coroutine (never awaited, not run)
    ├── ExecutionTimeout        the workflow's timeout_s passed
    ├── Halted                  the kill switch is in HALT
    ├── Cancelled               cancelled by request or shutdown
    ├── Interrupted             the process died under the execution (found at recovery)
    ├── Overloaded              the admission queue is full
    └── InternalError           the engine failed while handling the execution (a bug)
        └── NodeThreadUnavailable   no thread could be started for a node actor

An event's `error_type` is the exception's class name, so these names are part of the
wire protocol.
"""

from __future__ import annotations

import traceback
from typing import Any


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
    """No execution, action intent, risk limit, webhook or dead letter with that name."""


class NoJournal(TradeloomError):
    """The engine runs in memory: history, replay and intents need `[daemon] data_dir`."""


class LimitExceeded(TradeloomError):
    """A move to NORMAL or ALERT was refused: an `auto_halt` risk limit is still exceeded.

    The rule is about the limit, not the state it comes from: `resume()` and `alert()` are
    refused from any state until the figure is back under the threshold, unless forced.
    """

    #: The control socket's error code for this refusal.
    code = "limit_exceeded"


#: The old name, kept so that `except ResumeRefused` keeps working: the same class.
ResumeRefused = LimitExceeded


class EngineStopped(TradeloomError):
    """The engine has been stopped."""


class WaitInCallback(TradeloomError):  # events: new class (subscriber cursors)
    """A call that waits for the engine (`handle.result()`, `halt()`, `cancel()` ...) was
    made from a subscriber callback's thread, which would then wait for itself."""


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


class WebhookError(TradeloomError):
    """An outbound webhook could not deliver (actors/webhook*.py)."""


class WebhookAddressRefused(WebhookError):
    """The SSRF guard refused to connect: every address the host resolved to is private,
    loopback, link-local or otherwise not public, and the endpoint has no
    `allow_private = true`. Raised at connect time, so a DNS answer that changes between
    a check and the connection (rebinding) is checked too."""


class WebhookAttemptFailed(WebhookError):
    """One delivery attempt failed. `status` is the HTTP status (None: no response at all:
    a connection error or a timeout); `retryable` says whether another attempt may
    succeed; `retry_after_s` is the receiver's Retry-After, when it gave one."""

    def __init__(self, message: str, *, status: int | None, retryable: bool,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class WebhookStopped(WebhookError):
    """The deliverer was asked to stop while it waited between attempts."""


class NodeError(TradeloomError):
    """Base for outcomes the engine itself assigns to a node or an execution."""


class NodeTimeout(NodeError):
    """A node did not reply within its timeout_s."""


class NodeStuck(NodeError):
    """A node was not run (its function not called): `[daemon] max_stuck_runs_per_node` of
    its earlier runs are still stuck past their timeout, each holding a thread that cannot
    be killed. Without this bound a node that hangs on every run (a dead venue, no socket
    timeout) leaked a thread per run until the OS refused threads and healthy workflows
    waited for ever. It runs again as soon as one of those returns."""


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


class ConditionError(NodeError):
    """A condition node returned a value whose truth test raised (e.g. a numpy array), or
    a NaN (a number unequal to itself: truthy to Python, neither true nor false here)."""


class CoroutineReturned(NodeError):
    """A node function returned a coroutine: an `async def` called through a plain function
    (an `async def` node itself is a WorkflowDefinitionError). Node functions run in
    threads and are never awaited, so its body never ran; it is closed, and the node fails
    rather than complete with an order that was never placed."""


class Interrupted(NodeError):
    """The daemon died while the execution was queued or running."""


class InternalError(NodeError):
    """The engine itself failed while handling a request or an execution. An execution
    is failed with it so that it never hangs (the failure is logged with its traceback);
    an asker gets it in place of a `BaseException` (SystemExit, KeyboardInterrupt) that
    user code raised inside an engine actor, which pykka would answer by stopping every
    actor in the process."""


class NodeThreadUnavailable(InternalError):
    """A node could not run because its pool has no node actor and the OS refused the
    thread for one (`can't start new thread`: RLIMIT_NPROC, a full thread table). The
    execution fails at once rather than start late, whenever a thread frees up."""


def describe(error: BaseException) -> str:
    """`str(error)`, or a stand-in when the exception's own `__str__` raises (user code).
    Lone surrogates (a path decoded with surrogateescape) are replaced with `?`, as on the
    wire: UTF-8 has no form for them, and a log line or a journal row holding one fails."""
    try:
        text = str(error)
        text = valid_text(text) if type(text) is str else ""  # (a str subclass: user code)
    except BaseException:  # noqa: BLE001 - anything user code throws here is contained
        return f"<unprintable {type_name(error)}>"
    return text or type_name(error)


def type_name(value: object) -> str:
    """The name of `value`'s class, read from the type itself: a metaclass's `__name__`
    property (user code) could raise, block, or return a non-str (an `error_type` of
    12345 on the wire), and the engine's threads must not run it."""
    name = _TYPE_NAME.__get__(type(value))
    return valid_text(name) if type(name) is str else "object"


_TYPE_NAME: Any = type.__dict__["__name__"]


def failure_fields(error: BaseException | None) -> dict[str, str]:
    """A log line's fields for an error that may be user code's: its type, text and
    traceback as text taken here, guarded. Not `exc_info=`: a renderer given the exception
    (structlog's default console one shows each frame's locals) runs user code, and a log
    call that raised inside an engine thread's handler would end that thread after all."""
    if error is None:
        return {}
    try:
        text = "".join(traceback.format_exception(error))
    except BaseException:  # noqa: BLE001 - user code in an exception's text
        text = "<unprintable traceback>"
    return {"error_type": type_name(error), "error": describe(error), "traceback": text}


def valid_text(text: str) -> str:
    """`text` with lone surrogates replaced by `?` (what UTF-8 encoding would refuse)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode(errors="replace").decode()
    return text


def shown(value: object) -> str:
    """`repr(value)` for an error message. An int past Python's 4,300-digit limit on
    decimal conversion has no repr (ValueError): it is shown by its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 14_000:
        return f"an int of {value.bit_length()} bits"
    return repr(value)
