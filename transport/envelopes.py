"""A control request's envelope and an error reply's shape, for the ROUTER socket
(`transport/control.py`).

The ROUTER prepends the peer's identity; a REQ adds an empty delimiter, and a DEALER client
sends one itself: `[identity, b"", request]`. Everything up to the first empty frame is the
envelope and is sent back as it came (so proxies' extra identities work); a DEALER that
sends no delimiter, `[identity, request]`, is answered `[identity, reply]`.
"""

from __future__ import annotations

from typing import Any

#: Frames an envelope may have before its delimiter; deeper ones are dropped, not answered.
MAX_ENVELOPE_FRAMES = 16
Envelope = list[bytes]


def error_reply(code: str, message: str, request_id: Any = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"v": 1, "ok": False, "error": {"code": code, "message": message}}
    if request_id is not None:
        reply["id"] = request_id
    return reply


def split_envelope(frames: list[bytes]) -> tuple[Envelope | None, list[bytes]]:
    """`(envelope, body)` of a message read from a ROUTER: the envelope runs up to and
    including the first empty frame after the identity (REQ, DEALER with a delimiter,
    proxies); with no empty frame it is the identity alone (a DEALER without a delimiter).
    `None` when there is nothing to answer to."""
    if not frames or not frames[0]:
        return None, []
    for index in range(1, min(len(frames), MAX_ENVELOPE_FRAMES + 1)):
        if not frames[index]:
            return frames[:index + 1], frames[index + 1:]
    if len(frames) > MAX_ENVELOPE_FRAMES and any(not f for f in frames):
        return None, []  # a delimiter too deep to be a real envelope
    return frames[:1], frames[1:]


def request_id_of(value: Any) -> Any:
    """The request's `id`, echoed in the reply when it is a short string or an integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return value
    if isinstance(value, str) and len(value) <= 128:
        return value
    return None
