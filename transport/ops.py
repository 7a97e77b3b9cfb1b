"""The control socket's ops: the handler Protocol and strict validation of each request.

A request is a msgpack map `{"v": 1, "op": NAME, ...args}`. `parse_request` checks `v`, `op`
and every argument's type, fills defaults, and returns the op and the keyword arguments of
the handler method of the same name; anything else raises `BadRequest` (naming the field) or
`UnknownOp`. Keys a request carries beyond its op's arguments are ignored, so newer clients
can send more; `id`, when present, is echoed in the reply (see `control.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from actors.errors import InternalError, describe
from transport.errors import BadRequest, UnknownOp

#: Where an emergency change came from, as `origin` on `emergency_state_changed`.
ORIGINS = ("cli", "web", "control")
DEFAULT_ORIGIN = "control"
EXECUTION_STATUSES = ("queued", "running", "completed", "failed", "halted", "cancelled",
                      "interrupted", "refused")
INTENT_OUTCOMES = ("filled", "not_filled", "unknown")
EXECUTIONS_DEFAULT_LIMIT = 100
REPLAY_DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_TEXT = 4096
MAX_ID = 256
#: Inputs nested deeper than this are refused: the event form (actors/packing.py) keeps 64
#: levels and writes a repr below them (one level is kept spare).
MAX_INPUT_DEPTH = 63
#: How long the daemon holds a `submit`'s reply for its record's commit before it answers
#: `internal` (the execution runs either way). A client that waits less for a submit's
#: reply cannot tell a slow disk from a lost daemon.
SUBMIT_RECORD_TIMEOUT_S = 10.0

#: Ops answered on the urgent lane (one dedicated worker): quick, and never queued behind a
#: replay or a submit waiting for its commit. Every other op runs on the worker pool.
URGENT_OPS = frozenset({"ping", "status", "halt", "alert", "reduce_only", "resume",
                        "risk_update"})


class ControlHandler(Protocol):
    """What the control server calls: one method per op, keyword arguments already
    validated, returning the op's `result` (msgpack-able). Raise `UnknownWorkflow`,
    `NotFound`, `Halted`, `Overloaded`, `LimitExceeded`, `BadRequest`/`TypeError`/
    `ValueError` (bad argument) or `Unauthorized` for the matching error code; anything else
    is answered `internal` and logged. Methods are called from worker threads, several at
    once (one urgent op and up to `workers` others)."""

    def ping(self) -> dict[str, Any]:
        """{"pong": True, "version": str}"""
        ...

    def status(self) -> dict[str, Any]: ...

    def submit(self, *, workflow: str, inputs: dict[str, Any], bot_id: str | None,
               strategy_id: str | None, priority: int) -> dict[str, Any]:
        """{"execution_id"}, after the execution's record is committed."""
        ...

    def execution(self, *, execution_id: str) -> dict[str, Any]: ...

    def executions(self, *, workflow: str | None, status: str | None,
                   limit: int) -> list[dict[str, Any]]: ...

    def cancel(self, *, execution_id: str) -> dict[str, Any]: ...

    def halt(self, *, reason: str, origin: str) -> dict[str, Any]: ...

    def alert(self, *, reason: str, force: bool, origin: str) -> dict[str, Any]: ...

    def reduce_only(self, *, reason: str, origin: str) -> dict[str, Any]: ...

    def resume(self, *, reason: str | None, force: bool, origin: str) -> dict[str, Any]: ...

    def intents(self, *, unresolved: bool) -> list[dict[str, Any]]: ...

    def resolve_intent(self, *, idempotency_key: str, outcome: str,
                       note: str | None) -> dict[str, Any]: ...

    def risk_update(self, *, limit: str, value: float | None,
                    delta: float | None) -> dict[str, Any]: ...

    def replay(self, *, since_seq: int, limit: int, topic_prefix: str) -> dict[str, Any]: ...

    def webhooks_failed(self, *, name: str | None, limit: int) -> list[dict[str, Any]]: ...

    def webhooks_retry(self, *, name: str | None, ids: list[int]) -> dict[str, Any]: ...

    def webhooks_log(self, *, name: str | None, limit: int) -> dict[str, Any]: ...

    def webhooks_delete(self, *, name: str | None, ids: list[int]) -> dict[str, Any]: ...


class Recording(Protocol):
    """What a deferred reply waits for (the journal's `Ticket`): `done` once committed,
    `error` once it never can be; `add_done_callback(fn)` calls `fn(self)` at either, from
    any thread (at once if it already happened), and `fn` must be quick."""

    done: bool
    error: BaseException | None

    def add_done_callback(self, fn: Callable[[Any], None], /) -> None: ...

    def wait(self, timeout: float | None = None) -> bool:
        """True once committed; False on timeout or if it failed for good."""
        ...


@dataclass(frozen=True)
class DeferredReply:
    """A result the control server sends once `recording` is done. If it fails, or is not
    done within `timeout_s`, the client gets an `internal` error naming `subject` instead."""

    result: dict[str, Any]
    recording: Recording
    timeout_s: float
    subject: str
    #: The journal's error while its writes fail, else None: asked while waiting, so a
    #: submit met by a full disk is answered at once, not after `timeout_s`.
    write_error: Callable[[], str | None] = lambda: None

    def writes_failing(self, error: str) -> InternalError:
        """The answer while the journal cannot write, at once rather than at `timeout_s`:
        accepted, its record maybe not on disk. The failure put the engine in HALT, so no
        action of it starts from now on; what it did before is in its execution, listed
        once the journal writes again. Not `halted`: it was not refused, and may have
        completed (a client that read it as refused could run it twice)."""
        return InternalError(f"{self.subject} was accepted, but the journal's writes are "
                             f"failing ({error}): its record may not be on disk; the engine "
                             "is in HALT, so none of its actions starts from now on; look "
                             "it up once the journal writes again, before submitting again")

    def timed_out(self) -> InternalError:
        return InternalError(f"{self.subject} was accepted but its record was not committed "
                             f"within {self.timeout_s:g} s")

    def failed(self) -> InternalError:
        error = self.recording.error
        return InternalError(f"{self.subject} was accepted but its record could not be "
                             f"committed: {describe(error) if error else 'unknown error'}")


@runtime_checkable
class NowaitSubmit(Protocol):
    """A handler whose `submit` can run on the control server's own thread: it never
    blocks, and hands back the reply now (a dict) or what to wait for (`DeferredReply`).
    It saves the hop to a worker thread and back for the daemon's most frequent op."""

    def submit_nowait(self, *, workflow: str, inputs: dict[str, Any], bot_id: str | None,
                      strategy_id: str | None,
                      priority: int) -> dict[str, Any] | DeferredReply: ...


_MISSING = object()


def _field(req: dict[str, Any], name: str) -> Any:
    value = req.get(name, _MISSING)
    return _MISSING if value is None else value


def _text(req: dict[str, Any], name: str, *, required: bool, max_len: int = MAX_TEXT,
          choices: tuple[str, ...] | None = None) -> str | None:
    value = _field(req, name)
    if value is _MISSING:
        if required:
            raise BadRequest(f"missing field {name!r}")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"field {name!r} must be a string, not {_kind(value)}")
    if not value:
        raise BadRequest(f"field {name!r} must not be empty")
    if len(value) > max_len:
        raise BadRequest(f"field {name!r} is longer than {max_len} characters")
    if choices is not None and value not in choices:
        raise BadRequest(f"field {name!r} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _required_text(req: dict[str, Any], name: str, max_len: int = MAX_TEXT,
                   choices: tuple[str, ...] | None = None) -> str:
    value = _text(req, name, required=True, max_len=max_len, choices=choices)
    assert value is not None
    return value


def _int(req: dict[str, Any], name: str, *, default: int | None, minimum: int,
         maximum: int) -> int:
    value = _field(req, name)
    if value is _MISSING:
        if default is None:
            raise BadRequest(f"missing field {name!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"field {name!r} must be an integer, not {_kind(value)}")
    if not minimum <= value <= maximum:
        raise BadRequest(f"field {name!r} must be between {minimum} and {maximum}; got {value}")
    return value


def _bool(req: dict[str, Any], name: str, default: bool) -> bool:
    value = _field(req, name)
    if value is _MISSING:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"field {name!r} must be a boolean, not {_kind(value)}")
    return value


def _number(req: dict[str, Any], name: str) -> float | None:
    value = _field(req, name)
    if value is _MISSING:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"field {name!r} must be a number, not {_kind(value)}")
    if not math.isfinite(value):
        raise BadRequest(f"field {name!r} must be a finite number; got {value}")
    if isinstance(value, int) and abs(value) > 2**53:
        raise BadRequest(f"field {name!r} is out of range")
    return float(value)


def _kind(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


def _inputs(req: dict[str, Any]) -> dict[str, Any]:
    value = _field(req, "inputs")
    if value is _MISSING:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"field 'inputs' must be a map, not {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise BadRequest("field 'inputs' must have string keys")
    problem = _inputs_problem(value)
    if problem is not None:
        raise BadRequest(f"field 'inputs' {problem}")
    return value


def _inputs_problem(value: Any) -> str | None:
    """What makes `value` unfit as inputs: a NaN or infinite float anywhere, or nesting
    deeper than the events and the journal keep (they would hold a repr string below
    MAX_INPUT_DEPTH, not the data the node ran with). Without recursion: msgpack reads
    nesting about 1,000 deep, past Python's own recursion limit."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return "holds a NaN or infinite number"
        elif isinstance(item, dict | list):
            if depth > MAX_INPUT_DEPTH:
                return f"is nested deeper than {MAX_INPUT_DEPTH} levels"
            stack.extend((child, depth + 1) for child in
                         (item.values() if isinstance(item, dict) else item))
    return None


def _origin(req: dict[str, Any]) -> str:
    value = _text(req, "origin", required=False, max_len=16, choices=ORIGINS)
    return value if value is not None else DEFAULT_ORIGIN


def _none(req: dict[str, Any]) -> dict[str, Any]:
    return {}


def _submit(req: dict[str, Any]) -> dict[str, Any]:
    return {"workflow": _required_text(req, "workflow", MAX_ID), "inputs": _inputs(req),
            "bot_id": _text(req, "bot_id", required=False, max_len=MAX_ID),
            "strategy_id": _text(req, "strategy_id", required=False, max_len=MAX_ID),
            # int64, as the engine, the journal and `tradeloom submit --priority` take it
            "priority": _int(req, "priority", default=0, minimum=-(2**63), maximum=2**63 - 1)}


def _execution_id(req: dict[str, Any]) -> dict[str, Any]:
    return {"execution_id": _required_text(req, "execution_id", MAX_ID)}


def _executions(req: dict[str, Any]) -> dict[str, Any]:
    return {"workflow": _text(req, "workflow", required=False, max_len=MAX_ID),
            "status": _text(req, "status", required=False, max_len=32,
                            choices=EXECUTION_STATUSES),
            "limit": _int(req, "limit", default=EXECUTIONS_DEFAULT_LIMIT, minimum=1,
                          maximum=MAX_LIMIT)}


def _reason_origin(req: dict[str, Any]) -> dict[str, Any]:
    return {"reason": _required_text(req, "reason"), "origin": _origin(req)}


def _alert(req: dict[str, Any]) -> dict[str, Any]:
    return {**_reason_origin(req), "force": _bool(req, "force", False)}


def _resume(req: dict[str, Any]) -> dict[str, Any]:
    return {"reason": _text(req, "reason", required=False), "force": _bool(req, "force", False),
            "origin": _origin(req)}


def _intents(req: dict[str, Any]) -> dict[str, Any]:
    return {"unresolved": _bool(req, "unresolved", True)}


def _resolve_intent(req: dict[str, Any]) -> dict[str, Any]:
    return {"idempotency_key": _required_text(req, "idempotency_key", 2 * MAX_ID + 1),
            "outcome": _required_text(req, "outcome", 16, INTENT_OUTCOMES),
            "note": _text(req, "note", required=False)}


def _risk_update(req: dict[str, Any]) -> dict[str, Any]:
    args = {"limit": _required_text(req, "limit", MAX_ID), "value": _number(req, "value"),
            "delta": _number(req, "delta")}
    if (args["value"] is None) == (args["delta"] is None):
        raise BadRequest("give exactly one of 'value' and 'delta'")
    return args


def _replay(req: dict[str, Any]) -> dict[str, Any]:
    prefix = _field(req, "topic_prefix")
    if prefix is _MISSING:
        prefix = ""
    elif not isinstance(prefix, str):
        raise BadRequest(f"field 'topic_prefix' must be a string, not {_kind(prefix)}")
    elif len(prefix) > MAX_TEXT:
        raise BadRequest(f"field 'topic_prefix' is longer than {MAX_TEXT} characters")
    return {"since_seq": _int(req, "since_seq", default=None, minimum=0, maximum=2**63 - 1),
            "limit": _int(req, "limit", default=REPLAY_DEFAULT_LIMIT, minimum=1,
                          maximum=MAX_LIMIT),
            "topic_prefix": prefix}


def _webhooks_list(req: dict[str, Any]) -> dict[str, Any]:
    return {"name": _text(req, "name", required=False, max_len=MAX_ID),
            "limit": _int(req, "limit", default=EXECUTIONS_DEFAULT_LIMIT, minimum=1,
                          maximum=MAX_LIMIT)}


def _webhooks_retry(req: dict[str, Any]) -> dict[str, Any]:
    ids = _field(req, "ids")
    if ids is _MISSING:
        ids = []  # every dead letter (of `name`)
    elif not isinstance(ids, list) or not all(
            type(i) is int and 0 < i < 2**63 for i in ids) or len(ids) > MAX_LIMIT:
        raise BadRequest(f"field 'ids' must be a list of up to {MAX_LIMIT} positive integers")
    elif not ids:
        # Left out, it means all: given empty (a script's filter that matched nothing),
        # it re-queued or deleted every dead letter.
        raise BadRequest("field 'ids' is empty; leave it out to mean every dead letter")
    return {"name": _text(req, "name", required=False, max_len=MAX_ID), "ids": ids}


def _webhooks_delete(req: dict[str, Any]) -> dict[str, Any]:
    args = _webhooks_retry(req)
    if args["name"] is None and not args["ids"]:  # every endpoint's letters: name each
        raise BadRequest("field 'name' or 'ids' is required")
    return args


#: op -> validator returning the handler's keyword arguments.
OPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ping": _none, "status": _none, "submit": _submit, "execution": _execution_id,
    "executions": _executions, "cancel": _execution_id, "halt": _reason_origin,
    "alert": _alert, "reduce_only": _reason_origin, "resume": _resume, "intents": _intents,
    "resolve_intent": _resolve_intent, "risk_update": _risk_update, "replay": _replay,
    "webhooks_failed": _webhooks_list, "webhooks_retry": _webhooks_retry,
    "webhooks_log": _webhooks_list, "webhooks_delete": _webhooks_delete,
}


def parse_request(req: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """`(op, handler kwargs)` for a decoded request map, or `BadRequest`/`UnknownOp`."""
    version = req.get("v", _MISSING)
    if version is _MISSING:
        raise BadRequest("missing field 'v' (protocol version, 1)")
    if type(version) is not int or version != 1:
        raise BadRequest(f"unsupported protocol version {version!r}; this server speaks v 1")
    op = req.get("op", _MISSING)
    if op is _MISSING:
        raise BadRequest("missing field 'op'")
    if not isinstance(op, str):
        raise BadRequest(f"field 'op' must be a string, not {_kind(op)}")
    validate = OPS.get(op)
    if validate is None:
        shown = op if len(op) <= 64 else op[:64] + "..."
        raise UnknownOp(f"unknown op {shown!r}; known: {', '.join(sorted(OPS))}")
    return op, validate(req)
