"""Non-blocking sends on a pyzmq socket that keep the GIL.

Why: pyzmq releases the GIL around every `zmq_msg_send`, even a `NOBLOCK` one that returns in
a microsecond. In the daemon, where the supervisors, node actors, journal writer and control
server all want the GIL, each release is a hand-off: another thread takes the GIL and the
sender waits to get it back. The publisher sends two frames per event, so it paid about
25 µs of CPU per event in hand-offs and the daemon's workflow throughput was 15 % lower
(docs/benchmarks-notes.md). A `DONTWAIT` send never blocks, so calling libzmq's `zmq_send`
through `ctypes.PyDLL`, which keeps the GIL for the call, is safe and costs about 1 µs.

The libzmq called is the one pyzmq already has loaded: the only `libzmq*` file mapped into
this process, opened with `RTLD_NOLOAD` (so a second copy can never be picked up) and checked
against `zmq.zmq_version_info()`. Where that does not hold (not Linux, a pyzmq with libzmq
linked in statically, two copies mapped), `frame_sender` falls back to pyzmq's own send with
the same contract. This is the only module that calls libzmq directly;
tests/test_zmq_direct.py fails loudly if a pyzmq upgrade takes the direct path away.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import zmq

__all__ = ["Frame", "FrameSender", "direct_available", "frame_sender"]

#: A frame: bytes, or another buffer (copied as bytes on the direct path, as pyzmq would).
Frame = bytes | bytearray | memoryview
#: `frames -> sent`: True once every frame is queued, False if the first was refused with
#: EAGAIN (a full queue, or no peer to route to: nothing was queued); other errors raise
#: `zmq.ZMQError` (`zmq.ContextTerminated` for ETERM), as pyzmq's `send_multipart` would.
FrameSender = Callable[[Sequence[Frame]], bool]

_DONTWAIT = int(zmq.DONTWAIT)
_SNDMORE = int(zmq.SNDMORE)


@functools.cache
def _libzmq() -> ctypes.CDLL | None:
    """pyzmq's libzmq, opened without releasing the GIL on calls; None if it cannot be
    identified for certain."""
    if not sys.platform.startswith("linux") or not hasattr(os, "RTLD_NOLOAD"):
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            mapped = {fields[5] for fields in (line.split(None, 5) for line in maps)
                      if len(fields) == 6}
    except OSError:
        return None
    found = {path.strip() for path in mapped if os.path.basename(path.strip())
             .startswith("libzmq")}
    if len(found) != 1:
        return None
    try:
        lib = ctypes.PyDLL(found.pop(), mode=os.RTLD_NOLOAD | os.RTLD_NOW)
        version = [ctypes.c_int(), ctypes.c_int(), ctypes.c_int()]
        lib.zmq_version(*(ctypes.byref(part) for part in version))
        lib.zmq_send.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                 ctypes.c_int]
        lib.zmq_send.restype = ctypes.c_int
        lib.zmq_errno.argtypes = []
        lib.zmq_errno.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    if tuple(part.value for part in version) != zmq.zmq_version_info():
        return None
    return lib


def direct_available() -> bool:
    """True when `frame_sender` sends through libzmq with the GIL held."""
    return _libzmq() is not None


def frame_sender(socket: zmq.Socket[Any], *, direct: bool = True) -> FrameSender:
    """A `FrameSender` for `socket`, to be called only in the thread that owns it, and only
    while it is open. `direct=False` (or no usable libzmq) gives pyzmq's send."""
    lib = _libzmq() if direct else None
    if lib is None:
        return functools.partial(_pyzmq_send, socket)
    return _DirectSender(socket, lib)


def _pyzmq_send(socket: zmq.Socket[Any], frames: Sequence[Frame]) -> bool:
    try:
        socket.send_multipart(frames, zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True


class _DirectSender:
    """Calls `zmq_send` on the socket's libzmq handle; the GIL stays with the caller."""

    __slots__ = ("_errno", "_handle", "_send", "_socket")

    def __init__(self, socket: zmq.Socket[Any], lib: ctypes.CDLL) -> None:
        self._socket = socket
        self._handle = socket.underlying
        self._send = lib.zmq_send
        self._errno = lib.zmq_errno

    def __call__(self, frames: Sequence[Frame]) -> bool:
        if self._socket.closed:  # the handle would be freed memory
            raise zmq.ZMQError(errno.ENOTSOCK)
        last = len(frames) - 1
        for index, frame in enumerate(frames):
            data = frame if type(frame) is bytes else bytes(frame)
            flags = (_DONTWAIT | _SNDMORE) if index < last else _DONTWAIT
            while self._send(self._handle, data, len(data), flags) < 0:
                code = self._errno()
                if code == errno.EINTR:
                    continue
                if code == errno.EAGAIN and index == 0:
                    return False
                if code == zmq.ETERM:
                    raise zmq.ContextTerminated(code)
                raise zmq.ZMQError(code)
        return True
