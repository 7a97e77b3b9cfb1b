import decimal
from typing import Any

import msgpack
import pytest

from transport import MAX_MESSAGE_BYTES, CodecError, decode_map, encode, event_frames


def test_workflow_event_frames_carry_topic_and_payload() -> None:
    event = {"v": 1, "seq": 7, "type": "node_completed", "execution_id": "exec_w_0000abcd",
             "workflow_id": "w", "outputs": {"price": decimal.Decimal("1.5")}}
    topic, payload = event_frames(event)
    assert topic == b"workflow/w/node_completed"
    decoded = msgpack.unpackb(payload, raw=False)
    assert decoded["seq"] == 7
    assert decoded["outputs"] == {"price": "1.5"}  # odd types travel as strings


@pytest.mark.parametrize(("event", "topic"), [
    ({"type": "emergency_state_changed", "state": "HALT"}, b"emergency/emergency_state_changed"),
    ({"type": "risk_limit_warning"}, b"emergency/risk_limit_warning"),
    ({"type": "circuit_opened", "breaker": "binance"}, b"system/circuit_opened"),
    ({"type": "heartbeat"}, b"system/heartbeat"),
])
def test_topics_by_type(event: dict[str, object], topic: bytes) -> None:
    assert event_frames(event)[0] == topic


def test_decode_map_accepts_a_request() -> None:
    assert decode_map(encode({"v": 1, "op": "ping"})) == {"v": 1, "op": "ping"}


@pytest.mark.parametrize("frame", [
    b"\xc1", encode([1, 2]), encode("x"), msgpack.packb({1: "int key"}),
])
def test_decode_map_rejects_what_is_not_a_string_keyed_map(frame: bytes) -> None:
    with pytest.raises(CodecError):
        decode_map(frame)


def test_decode_map_refuses_oversized_frames() -> None:
    with pytest.raises(CodecError, match="limit"):
        decode_map(b"\x80" + b" " * MAX_MESSAGE_BYTES)


def test_a_frame_that_is_not_msgpack_is_refused_with_a_reason() -> None:
    # 0xc1 is never used by msgpack; its error's str() is empty, the reply must not be.
    with pytest.raises(CodecError, match=r"^not msgpack: \S"):
        decode_map(b"\xc1garbage")


@pytest.mark.parametrize(("inner", "named"), [({1: 2}, "int"), ({(1, 2): 3}, "list"),
                                              ({b"k": 1}, None)])
def test_a_nested_map_with_a_key_that_is_not_a_string_says_so(inner: dict[Any, Any],
                                                              named: str | None) -> None:
    """Valid msgpack: the reason is the key, not "not msgpack"."""
    frame = msgpack.packb({"op": "submit", "inputs": inner}, use_bin_type=True)
    if named is None:  # bytes keys are msgpack's to allow (str keys' old raw form)
        assert decode_map(frame)["inputs"] == inner
        return
    with pytest.raises(CodecError, match=rf"^map keys must be strings, not {named}$"):
        decode_map(frame)
