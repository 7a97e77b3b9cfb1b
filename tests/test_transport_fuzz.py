"""10,000 malformed, truncated, oversized and random multi-frame messages at the control
socket (a seeded generator), plus raw TCP garbage, while another client keeps pinging.
Afterwards the server answers, every answerable message got exactly one reply, and the
executions accepted before the storm are intact."""

from __future__ import annotations

import random
import socket
import threading
import time
from typing import Any

import msgpack
import zmq

from tests.transport_fakes import FakeHandler
from transport import ControlServer
from transport.client import ControlClient
from transport.codec import MAX_MESSAGE_BYTES
from transport.ops import OPS

MESSAGES = 10_000
SEED = 20240611
FIELDS = ["v", "op", "id", "workflow", "inputs", "bot_id", "strategy_id", "priority",
          "execution_id", "status", "limit", "reason", "force", "origin", "unresolved",
          "idempotency_key", "outcome", "note", "value", "delta", "since_seq", "topic_prefix"]


class Fuzz:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def value(self, depth: int = 0) -> Any:
        r = self.rng
        pick = r.randrange(12 if depth < 3 else 8)
        if pick == 0:
            return None
        if pick == 1:
            return r.random() < 0.5
        if pick == 2:
            return r.choice([0, 1, -1, 2**31, -(2**63), 2**64 - 1, r.randrange(-1000, 1000)])
        if pick == 3:
            return r.choice([0.0, -0.0, 1.5, float("nan"), float("inf"), float("-inf"), 1e308])
        if pick == 4:
            return "".join(chr(r.randrange(1, 0x2FFF)) for _ in range(r.randrange(0, 20)))
        if pick == 5:
            return r.randbytes(r.randrange(0, 20))
        if pick in (6, 7):
            return r.choice(["w", "arb", "NORMAL", "filled", "", "x" * 300, "exec_w_00000001"])
        if pick in (8, 9):
            return [self.value(depth + 1) for _ in range(r.randrange(0, 4))]
        return {self.key(): self.value(depth + 1) for _ in range(r.randrange(0, 4))}

    def key(self) -> Any:
        r = self.rng
        return r.choice(FIELDS) if r.random() < 0.8 else self.value(3)

    def request(self) -> dict[Any, Any]:
        r = self.rng
        req: dict[Any, Any] = {"v": 1 if r.random() < 0.8 else self.value(2),
                               "op": r.choice(list(OPS)) if r.random() < 0.8 else self.value(2)}
        for _ in range(r.randrange(0, 5)):
            req[r.choice(FIELDS) if r.random() < 0.97 else self.value(3)] = self.value(1)
        return req

    def pack(self, obj: Any) -> bytes:
        try:
            return bytes(msgpack.packb(obj, use_bin_type=True))
        except (TypeError, ValueError, OverflowError):
            return bytes(msgpack.packb({"v": 1, "op": "ping"}))  # unhashable keys etc.

    def message(self, index: int) -> list[bytes]:
        """Frames as a DEALER sends them (the ROUTER adds the identity)."""
        r = self.rng
        kind = r.randrange(9)
        if index % 2000 == 1999:  # oversized: over 1 MiB, under the 16 MiB hard cap
            return [b"", b"\x81\xa1v\x01" + b"x" * (MAX_MESSAGE_BYTES + r.randrange(1, 1000))]
        if kind == 0:
            return [b"", r.randbytes(r.randrange(0, 200))]
        if kind == 1:
            return [b"", self.pack(self.value())]
        if kind in (2, 3):
            return [b"", self.pack(self.request())]
        if kind == 4:
            data = self.pack(self.request())
            return [b"", data[:r.randrange(0, len(data))]]
        if kind == 5:
            flipped = bytearray(self.pack(self.request()))
            for _ in range(r.randrange(1, 4)):
                flipped[r.randrange(len(flipped))] = r.randrange(256)
            return [b"", bytes(flipped)]
        if kind == 6:
            return [b"", b"\x91" * r.randrange(100, 5000) + b"\xc0"]  # deep nesting
        # random multi-frame: no delimiter, several delimiters, a missing body...
        return [r.choice([b"", r.randbytes(r.randrange(1, 30)), self.pack(self.request())])
                for _ in range(r.randrange(1, 24))]


def test_ten_thousand_bad_messages_leave_the_server_answering_and_state_intact() -> None:
    handler = FakeHandler()
    server = ControlServer("tcp://127.0.0.1:*", handler)
    server.start()
    try:
        with ControlClient(server.endpoint, timeout=10.0) as good:
            accepted = [good.submit("w", {"i": i})["execution_id"] for i in range(20)]
            before = {e: good.execution(e) for e in accepted}

            stop = threading.Event()
            pings: list[bool] = []
            failures: list[BaseException] = []

            def keep_pinging() -> None:
                with ControlClient(server.endpoint, timeout=10.0) as other:
                    while not stop.is_set():
                        try:
                            pings.append(other.ping()["pong"])
                        except BaseException as exc:  # noqa: BLE001 - checked below
                            failures.append(exc)
                            return

            pinger = threading.Thread(target=keep_pinging)
            pinger.start()
            dealer: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
            dealer.linger = 0
            dealer.sndhwm = dealer.rcvhwm = 0
            dealer.connect(server.endpoint)
            fuzz = Fuzz(SEED)
            replies = sent = 0
            deadline = time.monotonic() + 120
            try:
                for index in range(MESSAGES):
                    assert time.monotonic() < deadline, f"only {index} sent in time"
                    dealer.send_multipart(fuzz.message(index))
                    sent += 1
                    if index % 500 == 0:
                        tcp_garbage(server.endpoint, fuzz.rng)
                    while dealer.poll(0):
                        dealer.recv_multipart()
                        replies += 1
                # every answerable message gets exactly one reply
                while replies < sent - server.stats()["dropped"]:
                    assert dealer.poll(int(max(0.0, deadline - time.monotonic()) * 1000)), (
                        f"{replies} replies for {sent} sent, stats {server.stats()}")
                    dealer.recv_multipart()
                    replies += 1
                assert not dealer.poll(200)  # and no more than one
            finally:
                dealer.close()
                stop.set()
                pinger.join(30)

            assert not failures, failures
            assert pings and all(pings)
            assert good.ping()["pong"] is True
            assert {e: good.execution(e) for e in accepted} == before
            stats = server.stats()
            assert stats["requests"] >= MESSAGES and stats["errors"] > MESSAGES // 2
            assert stats["dropped"] < MESSAGES // 10
            assert server.running
    finally:
        server.stop()


def tcp_garbage(endpoint: str, rng: random.Random) -> None:
    """Bytes that are not even ZMTP: libzmq must drop that connection and nothing else."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(rng.randbytes(rng.randrange(1, 300)))
