"""The requests a dashboard may make over its WebSocket, answered like the control socket's.

A request is a JSON object `{"id": ..., "op": NAME, ...args}`; the reply is
`{"msg": "reply", "id": ..., "ok": true, "result": ...}` or `{..., "ok": false, "error":
{"code", "message"}}` with the control protocol's codes. Arguments are validated by the
control socket's own rules (`transport.ops.parse_request`) and answered by the same handler
(`EngineControlHandler`), so a resume from the page is refused with `limit_exceeded` exactly
when the CLI's would be. Emergency changes carry `origin: "web"` whatever the request says.

Only the ops a dashboard needs are open here: queries (`ping`, `status`, `executions`,
`execution`) and the kill switch (`halt`, `resume`, `alert`, `reduce_only`). No submit, no
cancel, no risk update, no intent resolution: the page is a view and a brake, not a way in.
"""

from __future__ import annotations

from typing import Any

from actors.engine import Engine
from actors.errors import EngineStopped, JournalClosed
from actors.logs import get_logger
from transport.engine_handler import EngineControlHandler
from transport.errors import INTERNAL, BadRequest, UnknownOp, code_of
from transport.ops import parse_request

log = get_logger("tradeloom.transport.web")

#: Ops a page may call.
WEB_OPS = frozenset({"ping", "status", "executions", "execution", "halt", "resume", "alert",
                     "reduce_only"})
#: Ops that take an `origin` (set to "web" here, never taken from the request).
EMERGENCY_OPS = frozenset({"halt", "resume", "alert", "reduce_only"})
ORIGIN = "web"


class WebActions:
    """Answers one request map; safe to call from many connection threads at once."""

    def __init__(self, engine: Engine, *, warn_at: float) -> None:
        self._handler = EngineControlHandler(engine)
        self._warn_at = warn_at

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """`{"ok": True, "result": ...}` or `{"ok": False, "error": {"code", "message"}}`."""
        try:
            op = request.get("op")
            if op is None:
                raise BadRequest("missing field 'op'")
            if not isinstance(op, str):  # a list or map op is not even hashable
                raise BadRequest(f"field 'op' must be a string, not {type(op).__name__}")
            if op not in WEB_OPS:
                raise UnknownOp(f"unknown op {str(op)[:64]!r} for the web gateway; known: "
                                f"{', '.join(sorted(WEB_OPS))}")
            fields = {k: v for k, v in request.items() if k not in ("v", "origin")}
            _op, kwargs = parse_request({**fields, "v": 1})
            if op in EMERGENCY_OPS:
                kwargs["origin"] = ORIGIN
            result = getattr(self._handler, op)(**kwargs)
            if op == "status":
                result = {**result, "warn_at": self._warn_at}
            return {"ok": True, "result": result}
        except Exception as exc:
            code = code_of(exc)
            if isinstance(exc, EngineStopped | JournalClosed):  # a stop under way: expected
                log.warning("web_request_refused_stopping", op=request.get("op"),
                            error_type=type(exc).__name__)
            elif code == INTERNAL:
                log.exception("web_request_failed", op=request.get("op"))
            return {"ok": False, "error": {"code": code, "message": str(exc)}}
