"""Errors of the transport and the one table between exception classes and wire codes.

    TradeloomError (actors.errors)
    ├── TransportError              a socket could not be set up or a reply was malformed
    │   └── DaemonUnreachable       no reply within the client's timeout (client side)
    ├── BadRequest                  a request the server refuses to run (`bad_request`)
    ├── UnknownOp                   a request naming no known op (`unknown_op`)
    ├── Unauthorized                the caller may not do this (`unauthorized`)
    └── ControlError                an error reply, client side; `.code`, `.message`
        ├── BadRequestError         `bad_request`
        ├── UnknownOpError          `unknown_op`
        ├── UnknownWorkflowError    `unknown_workflow`  (also an actors UnknownWorkflow)
        ├── NotFoundError           `not_found`         (also an actors NotFound)
        ├── HaltedError             `halted`            (also an actors Halted)
        ├── OverloadedError         `overloaded`        (also an actors Overloaded)
        ├── LimitExceededError      `limit_exceeded`    (also an actors LimitExceeded)
        ├── UnauthorizedError       `unauthorized`
        └── InternalServerError     `internal`

Server side, `code_of(exc)` walks `SERVER_CODES` in order and the first class the exception
is an instance of gives the code; anything else is `internal`. Client side, `error_for(code,
message)` builds the `CLIENT_ERRORS` class for a code. Each client class that has an
in-process twin also derives from it, so `except NotFound` catches a missing execution
whether the engine is in the process or behind a socket.
"""

from __future__ import annotations

from actors.errors import (
    Halted,
    LimitExceeded,
    NotFound,
    Overloaded,
    TradeloomError,
    UnknownWorkflow,
)


class TransportError(TradeloomError):
    """A socket could not be set up (bind refused, port in use, bad key file), or a peer
    sent something that is not the protocol. The message names the endpoint or file."""


class DaemonUnreachable(TransportError):
    """No reply from the daemon within the client's timeout (nothing listening, the daemon
    is down, or CURVE refused the client's key: a refused handshake looks like silence)."""


class BadRequest(TradeloomError):
    """A request that is not well-formed or has an ill-typed field; the message names it."""


class UnknownOp(TradeloomError):
    """A request whose `op` is not one the server knows."""


class Unauthorized(TradeloomError):
    """The caller is not allowed to run this request."""


#: Exception class -> wire code, most specific first: the first match wins. Handlers raise
#: these (or TypeError/ValueError for bad arguments, as the engine's API does).
SERVER_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (BadRequest, "bad_request"),
    (UnknownOp, "unknown_op"),
    (UnknownWorkflow, "unknown_workflow"),
    (NotFound, "not_found"),
    (Halted, "halted"),
    (Overloaded, "overloaded"),
    (LimitExceeded, "limit_exceeded"),
    (Unauthorized, "unauthorized"),
    (TypeError, "bad_request"),
    (ValueError, "bad_request"),
)
INTERNAL = "internal"


def code_of(exc: BaseException) -> str:
    """The wire code for an exception a handler raised (`internal` when none matches)."""
    for cls, code in SERVER_CODES:
        if isinstance(exc, cls):
            return code
    return INTERNAL


class ControlError(TradeloomError):
    """An error reply from the control socket: `code` is the wire code, `message` the text."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadRequestError(ControlError):
    code = "bad_request"


class UnknownOpError(ControlError):
    code = "unknown_op"


class UnknownWorkflowError(ControlError, UnknownWorkflow):
    code = "unknown_workflow"


class NotFoundError(ControlError, NotFound):
    code = "not_found"


class HaltedError(ControlError, Halted):
    code = "halted"


class OverloadedError(ControlError, Overloaded):
    code = "overloaded"


class LimitExceededError(ControlError, LimitExceeded):
    code = "limit_exceeded"


class UnauthorizedError(ControlError):
    code = "unauthorized"


class InternalServerError(ControlError):
    code = "internal"


#: Wire code -> the client's exception class.
CLIENT_ERRORS: dict[str, type[ControlError]] = {
    cls.code: cls for cls in (
        BadRequestError, UnknownOpError, UnknownWorkflowError, NotFoundError, HaltedError,
        OverloadedError, LimitExceededError, UnauthorizedError, InternalServerError)
}

#: Every code a server may send.
WIRE_CODES = frozenset(CLIENT_ERRORS)


def error_for(code: str, message: str) -> ControlError:
    """The typed client exception for an error reply (the base class for a code we do not
    know, so a newer server's codes still surface with their text)."""
    cls = CLIENT_ERRORS.get(code)
    if cls is None:
        return ControlError(message, code=code)
    return cls(message)
