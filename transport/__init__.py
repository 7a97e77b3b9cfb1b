"""tradeloom's wire: the msgpack codec, the event publisher, the control server, CURVE, and
the client library (`transport.client`). docs/protocol.md describes the protocol itself.

Each public name is imported from its module when first used (PEP 562), as in `actors`: a
client command (`tradeloom status`) loads the client's modules, not the control server's
and the publisher's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transport.codec import (
        MAX_MESSAGE_BYTES,
        CodecError,
        decode_map,
        encode,
        event_frames,
    )
    from transport.control import ControlServer
    from transport.errors import TransportError
    from transport.ops import ControlHandler
    from transport.publisher import EventSource, PackedEventSource, Publisher
    from transport.security import ClientKeys, CurveServer, is_loopback

#: Each public name -> the module that defines it.
_DEFINED_IN = {
    "MAX_MESSAGE_BYTES": "transport.codec",
    "ClientKeys": "transport.security",
    "CodecError": "transport.codec",
    "ControlHandler": "transport.ops",
    "ControlServer": "transport.control",
    "CurveServer": "transport.security",
    "EventSource": "transport.publisher",
    "PackedEventSource": "transport.publisher",
    "Publisher": "transport.publisher",
    "TransportError": "transport.errors",
    "decode_map": "transport.codec",
    "encode": "transport.codec",
    "event_frames": "transport.codec",
    "is_loopback": "transport.security",
}

__all__ = [
    "MAX_MESSAGE_BYTES",
    "ClientKeys",
    "CodecError",
    "ControlHandler",
    "ControlServer",
    "CurveServer",
    "EventSource",
    "PackedEventSource",
    "Publisher",
    "TransportError",
    "decode_map",
    "encode",
    "event_frames",
    "is_loopback",
]


if not TYPE_CHECKING:  # (for a type checker, a module __getattr__ would accept any name)
    from actors.lazy_names import lazy_names

    __getattr__, __dir__ = lazy_names('transport', _DEFINED_IN, globals(), __all__)
    del lazy_names  # (not a name of the package's)
