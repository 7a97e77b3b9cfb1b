"""transport/_zmq_direct.py: sends through pyzmq's own libzmq with the GIL held.

The direct path must exist on the platform the daemon ships for (a pyzmq upgrade that moves
or statically links libzmq fails here, loudly, instead of silently costing throughput), and
it must keep exactly the contract of pyzmq's `send_multipart(..., NOBLOCK)`: the same frames
in order, False (nothing queued) when the first frame is refused, the same exceptions."""

from __future__ import annotations

import ctypes
import errno
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import zmq

from transport import _zmq_direct
from transport._zmq_direct import FrameSender, direct_available, frame_sender

LOCAL = "tcp://127.0.0.1:*"


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.term()


def _send_once_connected(send: FrameSender, frames: Sequence[bytes],
                         pull: zmq.Socket[Any]) -> None:
    """Refused (EAGAIN, nothing queued) until the PUSH has connected; then sent."""
    deadline = time.monotonic() + 5.0
    while not send(frames):
        assert time.monotonic() < deadline, "the PUSH socket never connected"
        assert pull.poll(5) == 0  # (a short wait that would also see a stray message)


def _pair(context: zmq.Context[Any]) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
    pull = context.socket(zmq.PULL)
    pull.linger = 0
    pull.bind(LOCAL)
    push = context.socket(zmq.PUSH)
    push.linger = 0
    push.connect(pull.getsockopt(zmq.LAST_ENDPOINT).decode())
    return push, pull


def test_the_direct_path_is_available_on_this_platform() -> None:
    assert direct_available()
    with zmq.Context() as ctx, ctx.socket(zmq.PUSH) as sock:
        sock.linger = 0
        assert type(frame_sender(sock)).__name__ == "_DirectSender"
        assert type(frame_sender(sock, direct=False)).__name__ == "partial"


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "pyzmq"])
def test_frames_arrive_intact_and_in_order(context: zmq.Context[Any], direct: bool) -> None:
    push, pull = _pair(context)
    try:
        send = frame_sender(push, direct=direct)
        sent = [[b"topic/%d" % i, bytes([i % 256]) * (i * 37 % 5000), b""]
                for i in range(500)]
        for frames in sent:
            _send_once_connected(send, frames, pull)
        assert send([bytearray(b"a"), memoryview(b"bc")])  # other buffers: copied as bytes
        got = []
        for _ in range(501):
            assert pull.poll(5000), "a message went missing"
            got.append(pull.recv_multipart())
        assert got[:500] == sent
        assert got[500] == [b"a", b"bc"]
    finally:
        push.close()
        pull.close()


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "pyzmq"])
def test_a_refused_first_frame_returns_false_and_queues_nothing(
        context: zmq.Context[Any], direct: bool) -> None:
    push = context.socket(zmq.PUSH)
    push.linger = 0
    try:
        send = frame_sender(push, direct=direct)
        assert send([b"lost", b"with its second frame"]) is False  # no peer: EAGAIN
        pull = context.socket(zmq.PULL)
        pull.linger = 0
        pull.bind(LOCAL)
        push.connect(pull.getsockopt(zmq.LAST_ENDPOINT).decode())
        _send_once_connected(send, [b"kept", b"2"], pull)
        assert pull.poll(5000)
        assert pull.recv_multipart() == [b"kept", b"2"]  # no half of the refused message
        pull.close()
    finally:
        push.close()


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "pyzmq"])
def test_other_errors_raise_as_pyzmq_would(context: zmq.Context[Any], direct: bool) -> None:
    sub = context.socket(zmq.SUB)
    sub.linger = 0
    try:
        with pytest.raises(zmq.ZMQError) as raised:
            frame_sender(sub, direct=direct)([b"a SUB cannot send"])
        assert raised.value.errno == errno.ENOTSUP
    finally:
        sub.close()


def test_a_closed_socket_raises_instead_of_touching_freed_memory(
        context: zmq.Context[Any]) -> None:
    push = context.socket(zmq.PUSH)
    send = frame_sender(push)
    push.close(linger=0)
    with pytest.raises(zmq.ZMQError) as raised:
        send([b"x"])
    assert raised.value.errno == errno.ENOTSOCK


def test_no_usable_libzmq_falls_back_to_pyzmq(monkeypatch: pytest.MonkeyPatch,
                                              context: zmq.Context[Any]) -> None:
    monkeypatch.setattr(_zmq_direct, "_libzmq", lambda: None)
    assert not direct_available()
    push, pull = _pair(context)
    try:
        send = frame_sender(push)
        assert type(send).__name__ == "partial"
        _send_once_connected(send, [b"via", b"pyzmq"], pull)
        assert pull.poll(5000) and pull.recv_multipart() == [b"via", b"pyzmq"]
    finally:
        push.close()
        pull.close()


def test_the_library_found_is_the_one_pyzmq_loaded() -> None:
    lib = _zmq_direct._libzmq()
    assert lib is not None
    parts = [ctypes.c_int() for _ in range(3)]
    lib.zmq_version(*(ctypes.byref(p) for p in parts))
    assert tuple(p.value for p in parts) == zmq.zmq_version_info()
