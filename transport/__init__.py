"""tradeloom's wire: the msgpack codec, the event publisher, the control server, CURVE, and
the client library (`transport.client`). docs/protocol.md describes the protocol itself."""

from transport.codec import MAX_MESSAGE_BYTES, CodecError, decode_map, encode, event_frames
from transport.control import ControlServer
from transport.errors import TransportError
from transport.ops import ControlHandler
from transport.publisher import EventSource, PackedEventSource, Publisher
from transport.security import ClientKeys, CurveServer, is_loopback

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
