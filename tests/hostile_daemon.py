"""A fake daemon that can misbehave: a real XPUB and ROUTER on 127.0.0.1 (OS-picked ports),
both created, used and closed (linger 0) by the one thread that owns them.

It keeps a tiny journal of the events it publishes and answers `ping`, `status`, `submit`
and `replay` from it the way docs/protocol.md says, unless a test swaps in a `responder`
that answers something else (garbage, a late reply, two replies, none). Bad stream
messages go out through `send_raw`, in order with the good ones (one socket, one thread).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

Event = dict[str, Any]
#: What a responder returns: the reply bodies to send, each after its delay in seconds
#: (each body is one frame, or a list of frames for a malformed multi-frame reply).
Replies = list[tuple[float, bytes | list[bytes]]]
Responder = Callable[[Event], Replies | None]

EPOCH = "0123456789abcdef"
EXECUTION_ID = "exec_wf_0000abcd"


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def ok(result: Any) -> bytes:
    return pack({"v": 1, "ok": True, "result": result})


def workflow_event(seq: int, kind: str = "node_completed", workflow_id: str = "wf") -> Event:
    execution_id = f"exec_{workflow_id}_0000abcd"
    return {"v": 1, "seq": seq, "type": kind, "timestamp": "2024-06-11T09:30:00.123Z",
            "execution_id": execution_id, "correlation_id": execution_id,
            "workflow_id": workflow_id, "bot_id": None, "strategy_id": None,
            "node_id": "n", "duration_ms": 1.0, "status": "success", "outputs": {},
            "attempt": 1}


def topic(event: Event) -> bytes:
    return f"workflow/{event['workflow_id']}/{event['type']}".encode()


class HostileDaemon:
    """See the module docstring."""

    def __init__(self, heartbeat_s: float = 0.2) -> None:
        self.journal: list[Event] = []
        self.responder: Responder | None = None
        #: Sent to a new subscriber just before its first heartbeat (held back by it).
        self.before_heartbeat: list[list[bytes]] = []
        self.requests: list[Event] = []
        self._heartbeat_s = heartbeat_s
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._outbox: queue.SimpleQueue[list[bytes]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._bound = threading.Event()
        self.events = self.control = ""
        self._thread = threading.Thread(target=self._run, name="hostile-daemon", daemon=True)
        self._thread.start()
        assert self._bound.wait(10), "the fake daemon did not bind"

    # -- driving it, from the test's thread ----------------------------------------------

    def publish(self, *events: Event) -> None:
        """Journal and send well-formed events."""
        with self._lock:
            self.journal.extend(events)
        for event in events:
            self._outbox.put([topic(event), pack(event)])

    def send_raw(self, *frames: bytes) -> None:
        self._outbox.put(list(frames))

    def wait_requests(self, count: int, timeout: float = 10.0) -> list[Event]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.requests) >= count, timeout), (
                f"{len(self.requests)} of {count} requests within {timeout}s")
            return list(self.requests)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    # -- the daemon's side ---------------------------------------------------------------

    def heartbeat(self, claimed: int | None = None) -> list[bytes]:
        with self._lock:
            last = self.journal[-1]["seq"] if self.journal else 0
        beat = {"v": 1, "type": "heartbeat", "epoch": EPOCH, "state": "NORMAL",
                "timestamp": "2024-06-11T09:30:00.123Z",
                "last_seq": last if claimed is None else claimed}
        return [b"system/heartbeat", pack(beat)]

    def answer(self, request: Event) -> Replies:
        """What the real daemon would reply."""
        op = request.get("op")
        with self._lock:
            journal = list(self.journal)
        last = journal[-1]["seq"] if journal else 0
        if op == "replay":
            since, limit = request["since_seq"], request["limit"]
            if since < 0 or not 1 <= limit <= 10_000:
                return [(0, pack({"v": 1, "ok": False, "error": {
                    "code": "bad_request", "message": "since_seq or limit out of range"}}))]
            prefix = request.get("topic_prefix", "")
            found = [e for e in journal if e["seq"] >= since
                     and topic(e).decode().startswith(prefix)][:limit]
            next_seq = found[-1]["seq"] + 1 if len(found) == limit else max(since, last + 1)
            return [(0, ok({"events": found, "next_seq": next_seq, "last_seq": last,
                            "first_seq": 1}))]
        if op == "status":
            return [(0, ok({"state": "NORMAL", "running": 0, "queued": 0,
                            "workflows": ["wf"], "last_seq": last}))]
        if op == "submit":
            return [(0, ok({"execution_id": EXECUTION_ID}))]
        return [(0, ok({"pong": True}))]

    def _run(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context.instance()
        pub, router = ctx.socket(zmq.XPUB), ctx.socket(zmq.ROUTER)
        try:
            for sock in (pub, router):
                sock.linger = 0
            pub.sndhwm = 0
            events = pub.bind_to_random_port("tcp://127.0.0.1")
            control = router.bind_to_random_port("tcp://127.0.0.1")
            self.events = f"tcp://127.0.0.1:{events}"
            self.control = f"tcp://127.0.0.1:{control}"
            self._bound.set()
            self._loop(pub, router)
        finally:
            pub.close(linger=0)
            router.close(linger=0)

    def _loop(self, pub: zmq.Socket[Any], router: zmq.Socket[Any]) -> None:
        poller = zmq.Poller()
        poller.register(pub, zmq.POLLIN)
        poller.register(router, zmq.POLLIN)
        pending: list[tuple[float, list[bytes]]] = []
        next_beat = time.monotonic() + self._heartbeat_s
        while not self._stop.is_set():
            ready = dict(poller.poll(10))
            if pub in ready:
                message = pub.recv()
                if message[:1] == b"\x01":  # a subscription: a heartbeat at once, as promised
                    for early in self.before_heartbeat:
                        pub.send_multipart(early)
                    pub.send_multipart(self.heartbeat())
            if router in ready:
                frames = router.recv_multipart()
                cut = frames.index(b"", 1) + 1  # the envelope, echoed as the daemon does
                envelope, body = frames[:cut], frames[cut]
                request = msgpack.unpackb(body, raw=False)
                replies = (self.responder(request) if self.responder is not None else None)
                if replies is None:
                    replies = self.answer(request)
                now = time.monotonic()
                for delay, reply in replies:
                    parts = reply if isinstance(reply, list) else [reply]
                    pending.append((now + delay, [*envelope, *parts]))
                with self._changed:
                    self.requests.append(request)
                    self._changed.notify_all()
            now = time.monotonic()
            for item in [p for p in pending if p[0] <= now]:
                pending.remove(item)
                router.send_multipart(item[1])
            while True:
                try:
                    pub.send_multipart(self._outbox.get_nowait())
                except queue.Empty:
                    break
            if now >= next_beat:
                pub.send_multipart(self.heartbeat())
                next_beat = now + self._heartbeat_s
