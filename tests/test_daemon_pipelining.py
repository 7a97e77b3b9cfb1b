"""A DEALER pipelining submits to the real daemon: each is answered once, in order, and
none is refused `overloaded` while the admission queue has room (past the submits awaiting
their commit, a connection's next ones wait their turn instead)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from tests.daemon_fixture import DaemonFleet

N = 3000


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[DaemonFleet]:
    with DaemonFleet(tmp_path) as fleet:
        yield fleet


@pytest.mark.timeout(120)
def test_three_thousand_pipelined_submits_are_all_accepted_in_order(fleet: DaemonFleet) -> None:
    daemon = fleet.daemon(workflows=("fast",)).start()
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvhwm = sock.sndhwm = 0
    sock.connect(daemon.control)
    try:
        for i in range(N):
            sock.send_multipart([b"", msgpack.packb({"v": 1, "op": "submit",
                                                     "workflow": "fast", "id": i})])
        replies: list[dict[str, Any]] = []
        while len(replies) < N:
            assert sock.poll(30_000), f"{len(replies)} of {N} replies within 30 s"
            replies.append(msgpack.unpackb(sock.recv_multipart()[-1], raw=False))
        refused = [r for r in replies if not r["ok"]]
        assert refused == [], refused[:3]
        assert [r["id"] for r in replies] == list(range(N))
        assert len({r["result"]["execution_id"] for r in replies}) == N
    finally:
        sock.close()
    assert daemon.terminate() == 0
