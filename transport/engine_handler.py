"""The control socket's ops, answered by an engine (the daemon's `ControlHandler`).

Each method maps one op of the control protocol onto the in-process API: the same calls,
the same refusal rules, the same exceptions (which the control server turns into error
codes by class). `submit` replies only once the execution's record is committed to the
journal, so an execution id a client was given survives a `kill -9`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.engine import Engine
from actors.errors import EngineStopped, Halted, NotFound, Overloaded
from actors.version import VERSION
from transport.ops import SUBMIT_RECORD_TIMEOUT_S, DeferredReply

if TYPE_CHECKING:
    from actors.webhook import WebhookManager

#: The fields of `status` the protocol promises (the engine's own map has more).
STATUS_FIELDS = ("state", "running", "queued", "workflows", "breakers", "limits", "last_seq",
                 "uptime_s")


class EngineControlHandler:
    """`transport.ops.ControlHandler` over an `Engine`; called from the server's workers."""

    def __init__(self, engine: Engine, webhooks: WebhookManager | None = None, *,
                 heartbeat_s: float | None = None) -> None:
        self._engine = engine
        self._webhooks = webhooks
        #: The event stream's heartbeat period, for `status` (None: not said).
        self._heartbeat_s = heartbeat_s

    def ping(self) -> dict[str, Any]:
        return {"pong": True, "version": VERSION}

    def status(self) -> dict[str, Any]:
        status = self._engine.status()
        reply = {key: status[key] for key in STATUS_FIELDS} | {
            key: value for key, value in status.items() if key not in STATUS_FIELDS}
        if self._heartbeat_s is not None:  # (when a client may call the daemon silent)
            reply["heartbeat_s"] = self._heartbeat_s
        return reply

    def submit(self, *, workflow: str, inputs: dict[str, Any], bot_id: str | None,
               strategy_id: str | None, priority: int) -> dict[str, Any]:
        answer = self.submit_nowait(workflow=workflow, inputs=inputs, bot_id=bot_id,
                                    strategy_id=strategy_id, priority=priority)
        if isinstance(answer, DeferredReply):
            if not answer.recording.wait(answer.timeout_s):
                raise answer.failed() if answer.recording.error else answer.timed_out()
            return answer.result
        return answer

    def submit_nowait(self, *, workflow: str, inputs: dict[str, Any], bot_id: str | None,
                      strategy_id: str | None,
                      priority: int) -> dict[str, Any] | DeferredReply:
        """The execution starts at once (nothing here blocks); the reply waits for its
        record's commit, so an execution id a client was given survives a `kill -9`."""
        try:
            handle = self._engine.submit(workflow, inputs, bot_id=bot_id,
                                         strategy_id=strategy_id, priority=priority)
        except EngineStopped:  # a refusal like a full queue's (exit 4), not a bug
            raise Overloaded("the daemon is stopping: no new execution is admitted") from None
        result = handle.outcome()
        if result is not None and result.status == "refused":
            refusal = Overloaded if result.error_type == Overloaded.__name__ else Halted
            raise refusal(result.error or "submit refused")
        reply = {"execution_id": handle.execution_id}
        if handle.recorded is None:  # no journal
            return reply
        journal = self._engine.journal
        return DeferredReply(reply, handle.recorded, SUBMIT_RECORD_TIMEOUT_S, handle.execution_id,
                             journal.write_error if journal is not None else lambda: None)

    def execution(self, *, execution_id: str) -> dict[str, Any]:
        found = self._engine.execution(execution_id)
        if found is None:
            raise NotFound(f"no execution {execution_id!r}")
        return found

    def executions(self, *, workflow: str | None, status: str | None,
                   limit: int) -> list[dict[str, Any]]:
        return self._engine.executions(workflow=workflow, status=status, limit=limit)

    def cancel(self, *, execution_id: str) -> dict[str, Any]:
        return {"status": self._engine.cancel(execution_id)}

    def halt(self, *, reason: str, origin: str) -> dict[str, Any]:
        return self._engine.halt(reason, origin=origin)

    def alert(self, *, reason: str, force: bool, origin: str) -> dict[str, Any]:
        return self._engine.alert(reason, force=force, origin=origin)

    def reduce_only(self, *, reason: str, origin: str) -> dict[str, Any]:
        return self._engine.reduce_only(reason, origin=origin)

    def resume(self, *, reason: str | None, force: bool, origin: str) -> dict[str, Any]:
        return self._engine.resume(reason, force=force, origin=origin)

    def intents(self, *, unresolved: bool) -> list[dict[str, Any]]:
        return self._engine.intents(unresolved=unresolved)

    def resolve_intent(self, *, idempotency_key: str, outcome: str,
                       note: str | None) -> dict[str, Any]:
        return self._engine.resolve_intent(idempotency_key, outcome, note, origin="control")

    def risk_update(self, *, limit: str, value: float | None,
                    delta: float | None) -> dict[str, Any]:
        return self._engine.risk_update(limit, value, delta)

    def replay(self, *, since_seq: int, limit: int, topic_prefix: str) -> dict[str, Any]:
        engine = self._engine
        if engine.journal is None:
            # An in-process engine without data_dir keeps no event for later: an empty page
            # whose `first_seq` says so. A Subscriber counts the seqs `lost` and goes on
            # (an error here ended it at the first heartbeat past its last seq).
            last = engine.sink.log.committed_seq
            return {"events": [], "next_seq": last + 1, "last_seq": last,
                    "first_seq": last + 1}
        return engine.replay(since_seq, limit=limit, topic_prefix=topic_prefix)

    # -- webhooks (docs/protocol.md: webhooks_*) ------------------------------------------

    def _hooks(self) -> WebhookManager:
        if self._webhooks is None:
            raise NotFound("no [[webhooks]] are configured")
        return self._webhooks

    def webhooks_failed(self, *, name: str | None, limit: int) -> list[dict[str, Any]]:
        return self._hooks().failed(name, limit)

    def webhooks_retry(self, *, name: str | None, ids: list[int]) -> dict[str, Any]:
        return self._hooks().retry(name, tuple(ids))

    def webhooks_delete(self, *, name: str | None, ids: list[int]) -> dict[str, Any]:
        return self._hooks().delete(name, tuple(ids))

    def webhooks_log(self, *, name: str | None, limit: int) -> dict[str, Any]:
        hooks = self._hooks()
        return {"endpoints": hooks.status(name), "deliveries": hooks.log(name, limit)}
