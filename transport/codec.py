"""msgpack encoding of events (`[topic, payload]` frames) and control messages.

Events and replies are maps with string keys. Packing is `actors.packing.pack`, the same
bytes the in-process event log hands its subscribers: anything msgpack cannot carry
natively (a Decimal, a datetime in a node's output) is sent as its string form rather than
failing the event.
"""

from __future__ import annotations

import re
from typing import Any

import msgpack

from actors.events import topic_of
from actors.packing import pack

#: Control messages over this size are refused with `bad_request` (docs/protocol.md (control ops)).
MAX_MESSAGE_BYTES = 1024 * 1024
#: What `ControlClient` takes in one frame; libzmq drops the connection of a peer that
#: sends more, before the bytes are buffered (the call raises `DaemonUnreachable`). A
#: daemon's largest replies: a replay page (16 MiB and one event more) and an `execution`
#: (its inputs, its results and the same outputs again in `nodes`, each cut at `[journal]
#: max_event_bytes`, at most 256 MiB): under 800 MiB. A peer that is not a daemon could
#: otherwise make the client buffer any number of gigabytes.
MAX_RECEIVED_FRAME_BYTES = 1024 * 1024 * 1024
#: msgpack's refusal of a non-string key in a nested map (`strict_map_key`).
#: (The C extension names the type, `int`; the pure-Python fallback its class.)
_BAD_KEY = re.compile(r"(?:<class '(\w+)'>|(\w+)) is not allowed for map key when "
                      r"strict_map_key=True")


class CodecError(ValueError):
    """A frame that is not a msgpack map with string keys, or is too large."""


def encode(obj: Any) -> bytes:
    """msgpack bytes of a map; never raises (see `actors.packing.pack`)."""
    return pack(obj)


def event_frames(event: dict[str, Any]) -> list[bytes]:
    """The two frames of a published event: UTF-8 topic and msgpack payload."""
    return [topic_of(event).encode(), encode(event)]


def decode_map(frame: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Decode one frame that must be a msgpack map with string keys."""
    if len(frame) > max_bytes:
        raise CodecError(f"message of {len(frame)} bytes is over the {max_bytes} byte limit")
    try:
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types
        # Some msgpack errors (e.g. the reserved byte 0xc1) have an empty str().
        text = str(exc) or type(exc).__name__
        key = _BAD_KEY.fullmatch(text)
        if key is not None:  # valid msgpack: a nested map's key is not a string
            raise CodecError(f"map keys must be strings, not {key[1] or key[2]}") from None
        raise CodecError(f"not msgpack: {text}") from None
    if not isinstance(obj, dict):
        raise CodecError(f"expected a map, got {type(obj).__name__}")
    if not all(isinstance(k, str) for k in obj):
        raise CodecError("map keys must be strings")
    return obj
