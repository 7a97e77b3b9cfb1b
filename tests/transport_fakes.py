"""In-test stand-ins for what the daemon gives the transport: a committed event log
(`FakeLog`, an `EventSource` that also answers `replay` like the journal) and a control
handler (`FakeHandler`) with a little state, so tests need no engine and no journal."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

from actors.errors import Halted, LimitExceeded, NotFound, UnknownWorkflow
from actors.events import iso_utc, topic_of
from transport.codec import encode

Event = dict[str, Any]
#: Scan cap of a filtered replay, small so tests exercise the `next_seq` continuation.
REPLAY_SCAN = 50
#: How long a held `replay` (FakeHandler.replay_gate) waits for its gate to open.
REPLAY_GATE_S = 15.0


class FakeLog:
    """An in-memory committed log: `append()` commits events (giving seq/wseq/timestamp)."""

    def __init__(self, first_seq: int = 1) -> None:
        self._events: list[Event] = []
        self._first = first_seq
        self._cond = threading.Condition()
        self._wseq: dict[str, int] = {}
        self.fail_reads = 0

    def append(self, events: list[Event]) -> list[Event]:
        with self._cond:
            seq = self._first + len(self._events) - 1
            for event in events:
                seq += 1
                event.setdefault("v", 1)
                event["seq"] = seq
                event["timestamp"] = iso_utc(time.time())
                wf = event.get("workflow_id")
                if wf is not None and "execution_id" in event:
                    self._wseq[wf] = event["wseq"] = self._wseq.get(wf, 0) + 1
                self._events.append(event)
            self._cond.notify_all()
        return events

    def committed_seq(self) -> int:
        with self._cond:
            return self._first + len(self._events) - 1

    def wait_committed(self, after_seq: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._first + len(self._events) - 1 > after_seq,
                                timeout)
            return self._first + len(self._events) - 1

    def read(self, since_seq: int, limit: int) -> list[Event]:
        with self._cond:
            if self.fail_reads:
                self.fail_reads -= 1
                raise OSError("disk on fire")
            start = max(since_seq - self._first, 0)
            return [dict(e) for e in self._events[start:start + limit]]

    def replay(self, since_seq: int, limit: int = 1000, topic_prefix: str = "") -> Event:
        """The journal's shape: a filtered replay scans at most REPLAY_SCAN events."""
        with self._cond:
            last = self._first + len(self._events) - 1
            start = max(since_seq, self._first)
            out: list[Event] = []
            next_seq = max(start, last + 1)
            for scanned, event in enumerate(self._events[start - self._first:], 1):
                if topic_of(event).startswith(topic_prefix):
                    out.append(dict(event))
                if len(out) >= limit or (topic_prefix and scanned >= REPLAY_SCAN):
                    next_seq = event["seq"] + 1
                    break
            return {"events": out, "next_seq": next_seq, "last_seq": last,
                    "first_seq": self._first}


class PackedLog(FakeLog):
    """A FakeLog that also hands out packed bytes (the publisher prefers them)."""

    def __init__(self) -> None:
        super().__init__()
        self.packed_reads = 0

    def read_packed(self, since_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        self.packed_reads += 1
        return [(e["seq"], topic_of(e), encode(e)) for e in self.read(since_seq, limit)]


def workflow_events(workflow_id: str, count: int, *, kind: str = "node_completed",
                    pad: int = 0) -> list[Event]:
    """`count` workflow events of one execution (not yet committed: no seq)."""
    execution_id = f"exec_{workflow_id}_0000abcd"
    return [{"type": kind, "execution_id": execution_id, "correlation_id": execution_id,
             "workflow_id": workflow_id, "bot_id": None, "strategy_id": None,
             "node_id": f"n{i}", "duration_ms": 1.0, "status": "success",
             "outputs": {"i": i, "pad": "x" * pad}, "attempt": 1} for i in range(count)]


def emergency_event(state: str = "HALT") -> Event:
    return {"type": "emergency_state_changed", "state": state, "previous_state": "NORMAL",
            "reason": "test", "source": "manual", "origin": "control"}


class FakeHandler:
    """A `ControlHandler` with a kill switch, executions and intents, all in memory.

    `replay_gate`: when set, `replay` waits for it (a slow replay); `replay_started` is set
    when a replay begins."""

    version = "9.9.9"

    def __init__(self, log: FakeLog | None = None) -> None:
        self.log = log or FakeLog()
        self.lock = threading.Lock()
        self.state = "NORMAL"
        self.limit_exceeded = False
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.executions_by_id: dict[str, Event] = {}
        self.intents_by_key: dict[str, Event] = {
            "exec_w_00000001:trade": {"execution_id": "exec_w_00000001", "node_id": "trade",
                                      "idempotency_key": "exec_w_00000001:trade",
                                      "attempt": 1, "outcome": None,
                                      "started_at": "2024-01-01T00:00:00.000Z"}}
        self.limits = {"daily_loss": 0.0}
        self.workflows = ["w", "arb"]
        self.replay_gate: threading.Event | None = None
        self.replay_started = threading.Event()
        #: When set, `risk_update` waits for it (the urgent lane's worker held).
        self.risk_gate: threading.Event | None = None
        self.fail_with: BaseException | None = None
        self._n = 0

    def _record(self, op: str, **kwargs: Any) -> None:
        with self.lock:
            self.calls.append((op, kwargs))
        if self.fail_with is not None:
            raise self.fail_with

    def ping(self) -> Event:
        self._record("ping")
        return {"pong": True, "version": self.version}

    def status(self) -> Event:
        self._record("status")
        return {"state": self.state, "running": 0, "queued": 0, "workflows": self.workflows,
                "breakers": {}, "limits": {k: {"value": v, "threshold": 100.0,
                                               "utilization": v / 100.0}
                                           for k, v in self.limits.items()},
                "last_seq": self.log.committed_seq(), "uptime_s": 1.0}

    def submit(self, *, workflow: str, inputs: Event, bot_id: str | None,
               strategy_id: str | None, priority: int) -> Event:
        self._record("submit", workflow=workflow, inputs=inputs, bot_id=bot_id,
                     strategy_id=strategy_id, priority=priority)
        if workflow not in self.workflows:
            raise UnknownWorkflow(f"no workflow registered as {workflow!r}")
        if self.state == "HALT":
            raise Halted("submit refused: the engine is in HALT")
        with self.lock:
            self._n += 1
            execution_id = f"exec_{workflow}_{self._n:08x}"
            self.executions_by_id[execution_id] = {
                "execution_id": execution_id, "workflow_id": workflow, "status": "completed",
                "nodes": {}, "results": {"inputs": inputs}, "started_at": "t0",
                "ended_at": "t1", "duration_ms": 1.0}
        self.log.append([{"type": "execution_started", "execution_id": execution_id,
                          "correlation_id": execution_id, "workflow_id": workflow,
                          "bot_id": bot_id, "strategy_id": strategy_id, "node_count": 0,
                          "inputs": inputs}])
        return {"execution_id": execution_id}

    def execution(self, *, execution_id: str) -> Event:
        self._record("execution", execution_id=execution_id)
        try:
            return dict(self.executions_by_id[execution_id])
        except KeyError:
            raise NotFound(f"no execution {execution_id!r}") from None

    def executions(self, *, workflow: str | None, status: str | None,
                   limit: int) -> list[Event]:
        self._record("executions", workflow=workflow, status=status, limit=limit)
        rows = [e for e in reversed(self.executions_by_id.values())
                if (workflow is None or e["workflow_id"] == workflow)
                and (status is None or e["status"] == status)]
        return [{k: e[k] for k in ("execution_id", "workflow_id", "status", "started_at",
                                   "ended_at", "duration_ms")} for e in rows[:limit]]

    def cancel(self, *, execution_id: str) -> Event:
        self._record("cancel", execution_id=execution_id)
        if execution_id not in self.executions_by_id:
            raise NotFound(f"no execution {execution_id!r}")
        return {"status": self.executions_by_id[execution_id]["status"]}

    def _move(self, state: str, force: bool = False) -> Event:
        if state in ("NORMAL", "ALERT") and self.limit_exceeded and not force:
            raise LimitExceeded("daily_loss is exceeded; use force")
        with self.lock:
            previous, self.state = self.state, state
        return {"state": state, "previous_state": previous}

    def halt(self, *, reason: str, origin: str) -> Event:
        self._record("halt", reason=reason, origin=origin)
        return self._move("HALT")

    def alert(self, *, reason: str, force: bool, origin: str) -> Event:
        self._record("alert", reason=reason, force=force, origin=origin)
        return self._move("ALERT", force)

    def reduce_only(self, *, reason: str, origin: str) -> Event:
        self._record("reduce_only", reason=reason, origin=origin)
        return self._move("REDUCE_ONLY")

    def resume(self, *, reason: str | None, force: bool, origin: str) -> Event:
        self._record("resume", reason=reason, force=force, origin=origin)
        return self._move("NORMAL", force)

    def intents(self, *, unresolved: bool) -> list[Event]:
        self._record("intents", unresolved=unresolved)
        return [dict(i) for i in self.intents_by_key.values()
                if not unresolved or i["outcome"] is None]

    def resolve_intent(self, *, idempotency_key: str, outcome: str,
                       note: str | None) -> Event:
        self._record("resolve_intent", idempotency_key=idempotency_key, outcome=outcome,
                     note=note)
        intent = self.intents_by_key.get(idempotency_key)
        if intent is None:
            raise NotFound(f"no intent {idempotency_key!r}")
        intent["outcome"] = outcome
        return {"idempotency_key": idempotency_key, "outcome": outcome}

    def risk_update(self, *, limit: str, value: float | None,
                    delta: float | None) -> Event:
        self._record("risk_update", limit=limit, value=value, delta=delta)
        if self.risk_gate is not None and not self.risk_gate.wait(REPLAY_GATE_S):
            raise TimeoutError("risk gate never opened")
        if limit not in self.limits:
            raise NotFound(f"no risk limit named {limit!r}")
        new = value if value is not None else self.limits[limit] + (delta or 0.0)
        self.limits[limit] = new
        return {"limit": limit, "value": new, "utilization": new / 100.0}

    def replay(self, *, since_seq: int, limit: int, topic_prefix: str) -> Event:
        self._record("replay", since_seq=since_seq, limit=limit, topic_prefix=topic_prefix)
        self.replay_started.set()
        if self.replay_gate is not None and not self.replay_gate.wait(REPLAY_GATE_S):
            raise TimeoutError("replay gate never opened")
        return self.log.replay(since_seq, limit, topic_prefix)

    # The webhooks ops answer as the daemon's handler does with no [[webhooks]] configured
    # (transport/engine_handler.py), so this fake is a whole `ControlHandler`.

    def webhooks_failed(self, *, name: str | None, limit: int) -> list[Event]:
        self._record("webhooks_failed", name=name, limit=limit)
        raise NotFound("no [[webhooks]] are configured")

    def webhooks_retry(self, *, name: str | None, ids: list[int]) -> Event:
        self._record("webhooks_retry", name=name, ids=ids)
        raise NotFound("no [[webhooks]] are configured")

    def webhooks_log(self, *, name: str | None, limit: int) -> Event:
        self._record("webhooks_log", name=name, limit=limit)
        raise NotFound("no [[webhooks]] are configured")

    def webhooks_delete(self, *, name: str | None, ids: list[int]) -> Event:
        self._record("webhooks_delete", name=name, ids=ids)
        raise NotFound("no [[webhooks]] are configured")

    def ops(self) -> Iterator[str]:
        with self.lock:
            return iter([op for op, _ in self.calls])


class Child:
    """A child process whose stdout lines are read with deadlines (never a bare sleep)."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))

    def line(self, timeout: float) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"no line from the child within {timeout}s; "
                                 f"stderr: {stderr[-2000:]}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
