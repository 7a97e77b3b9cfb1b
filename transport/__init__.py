"""tradeloom's wire: the msgpack codec for events and control messages (CONTRACT §5-6)."""

from transport.codec import MAX_MESSAGE_BYTES, CodecError, decode_map, encode, event_frames

__all__ = ["MAX_MESSAGE_BYTES", "CodecError", "decode_map", "encode", "event_frames"]
