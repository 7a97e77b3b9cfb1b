"""`Subscriber` against a daemon whose event stream or replies are broken or hostile: each
bad message is skipped (and counted), the good ones after it still come, in seq order,
each once, and no call waits past its timeout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.engine_journal_helpers import eventually
from tests.hostile_daemon import HostileDaemon, Replies, ok, pack, topic, workflow_event
from tests.test_transport_client import take
from transport.client import Subscriber, TransportError

Event = dict[str, Any]


@pytest.fixture
def daemon() -> Iterator[HostileDaemon]:
    d = HostileDaemon()
    yield d
    d.stop()


def live(d: HostileDaemon, **kwargs: Any) -> Subscriber:
    kwargs.setdefault("since_seq", 1)
    sub = Subscriber(d.events, d.control, timeout=2.0, **kwargs)
    sub.wait_live(10)
    return sub


def nothing_more(sub: Subscriber, wait: float = 0.3) -> None:
    extra = sub.next(wait)
    assert extra is None, f"delivered {extra!r}"


def with_seq(seq: Any) -> bytes:
    event = workflow_event(2)
    event["seq"] = seq
    return pack(event)


def without_seq() -> bytes:
    event = workflow_event(2)
    del event["seq"]
    return pack(event)


def bad_utf8() -> bytes:
    event = workflow_event(2)
    event["node_id"] = "\x01\x02"
    return pack(event).replace(b"\xa2\x01\x02", b"\xa2\xff\xfe")


def nested(depth: int) -> bytes:
    """An event whose `outputs` nest `depth` maps deep (past what msgpack's packer makes)."""
    event = workflow_event(2)
    event["outputs"] = "HERE"
    return pack(event).replace(b"\xa4HERE", b"\x81\xa1k" * depth + b"\xc0")


TOPIC = topic(workflow_event(2))
BAD_MESSAGES = {
    "not msgpack": [TOPIC, b"\xc1\xc1 not msgpack"],
    "truncated msgpack": [TOPIC, with_seq(2)[:-3]],
    "a list": [TOPIC, pack([1, 2])],
    "an int": [TOPIC, pack(2)],
    "a workflow event without seq": [TOPIC, without_seq()],
    "seq nil": [TOPIC, with_seq(None)],
    "seq a string": [TOPIC, with_seq("2")],
    "seq negative": [TOPIC, with_seq(-1)],
    "seq zero": [TOPIC, with_seq(0)],
    "seq a bool": [TOPIC, with_seq(True)],
    "seq a float": [TOPIC, with_seq(2.0)],
    "seq a NaN": [TOPIC, with_seq(float("nan"))],
    "invalid UTF-8": [TOPIC, bad_utf8()],
    "nested past msgpack's stack": [TOPIC, nested(5000)],
    "three frames": [TOPIC, with_seq(2), b"extra"],
    "one frame": [with_seq(2)],
    "64 MiB of garbage": [TOPIC, b"\xc1" * (64 << 20)],
}


@pytest.mark.parametrize("frames", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_a_bad_stream_message_is_skipped_and_the_next_good_one_comes(
        daemon: HostileDaemon, frames: list[bytes]) -> None:
    daemon.publish(workflow_event(1))
    sub = live(daemon)
    try:
        assert [e["seq"] for e in take(sub, 1)] == [1]
        daemon.send_raw(*frames)
        good = workflow_event(2, kind="node_failed")
        daemon.publish(good)
        assert take(sub, 1) == [good]
        nothing_more(sub)
        assert sub.malformed + sub.duplicates >= 1
    finally:
        sub.close()


@pytest.mark.parametrize("seq", [True, 0, -3, "2", 2.5])
def test_an_event_with_an_ill_typed_seq_is_counted_as_malformed(
        daemon: HostileDaemon, seq: Any) -> None:
    sub = live(daemon)
    try:
        daemon.send_raw(TOPIC, with_seq(seq))
        daemon.publish(workflow_event(1))
        assert [e["seq"] for e in take(sub, 1)] == [1]
        assert sub.malformed == 1
    finally:
        sub.close()


def test_legal_odd_values_arrive_as_they_were_sent(daemon: HostileDaemon) -> None:
    sub = live(daemon)
    try:
        odd = workflow_event(1)
        odd["duration_ms"] = float("nan")
        odd["outputs"] = {"deep": {"k": {"k": None}}, 7: "int key"}
        daemon.publish(odd)
        [got] = take(sub, 1)
        assert got["duration_ms"] != got["duration_ms"]  # NaN is a number on the wire
        assert isinstance(got["outputs"], dict) and got["outputs"][7] == "int key"
    finally:
        sub.close()


def test_a_seq_going_backwards_or_repeating_is_dropped(daemon: HostileDaemon) -> None:
    sub = live(daemon)
    try:
        events = [workflow_event(seq) for seq in (1, 2, 3)]
        daemon.publish(*events)
        daemon.send_raw(TOPIC, pack(events[1]))
        daemon.send_raw(TOPIC, pack(events[2]))
        daemon.publish(workflow_event(4))
        assert [e["seq"] for e in take(sub, 4)] == [1, 2, 3, 4]
        nothing_more(sub)
        assert sub.duplicates == 2
    finally:
        sub.close()


def test_a_topic_that_does_not_match_the_payload_is_not_delivered_to_a_filter(
        daemon: HostileDaemon) -> None:
    sub = live(daemon, topics=("workflow/wf/",))
    try:
        daemon.publish(workflow_event(1))
        assert [e["seq"] for e in take(sub, 1)] == [1]
        stranger = workflow_event(2, workflow_id="other")
        daemon.send_raw(TOPIC, pack(stranger))  # says workflow/wf/, is workflow "other"
        daemon.publish(workflow_event(3))
        got = take(sub, 1)
        assert [(e["seq"], e["workflow_id"]) for e in got] == [(3, "wf")]
        nothing_more(sub)
    finally:
        sub.close()


def test_a_gap_the_replay_cannot_fill_is_counted_lost_and_the_stream_goes_on(
        daemon: HostileDaemon) -> None:
    def empty_replay(request: Event) -> Replies | None:
        if request["op"] != "replay":
            return None
        return [(0, ok({"events": [], "next_seq": request["since_seq"], "last_seq": 9,
                        "first_seq": 1}))]

    sub = live(daemon)
    try:
        daemon.publish(workflow_event(1))
        assert [e["seq"] for e in take(sub, 1)] == [1]
        daemon.responder = empty_replay
        daemon.publish(workflow_event(5))
        assert [e["seq"] for e in take(sub, 1)] == [5]
        assert sub.lost == 3
    finally:
        sub.close()


@pytest.mark.parametrize("claim", ["event", "heartbeat"])
def test_a_seq_past_the_journals_end_does_not_swallow_the_stream(
        daemon: HostileDaemon, claim: str) -> None:
    """An event or heartbeat claiming a seq the journal does not have (the replay's
    `last_seq` says so) must not move the subscriber past every real event to come."""
    sub = live(daemon)
    try:
        daemon.publish(workflow_event(1))
        assert [e["seq"] for e in take(sub, 1)] == [1]
        if claim == "event":
            daemon.send_raw(TOPIC, with_seq(2**64 - 1))
        else:
            daemon.send_raw(*daemon.heartbeat(claimed=2**63))
        nothing_more(sub)  # its replay answered: the journal ends at 1
        daemon.publish(workflow_event(2), workflow_event(3))
        assert [e["seq"] for e in take(sub, 2)] == [2, 3]
        nothing_more(sub)
    finally:
        sub.close()


def test_a_replay_that_advances_for_ever_does_not_hold_next_past_its_timeout(
        daemon: HostileDaemon) -> None:
    give_up = time.monotonic() + 30.0

    def creeping(request: Event) -> Replies | None:
        if request["op"] != "replay":
            return None
        since = request["since_seq"]
        # Each page one seq further and empty, for ever; after 30 s (an unfixed client's
        # only way out of `next`) the range's end.
        next_seq = since + 1 if time.monotonic() < give_up else 2**62
        return [(0, ok({"events": [], "next_seq": next_seq, "last_seq": 2**62,
                        "first_seq": 1}))]

    sub = live(daemon)
    try:
        daemon.publish(workflow_event(1))
        assert [e["seq"] for e in take(sub, 1)] == [1]
        daemon.responder = creeping
        daemon.send_raw(TOPIC, with_seq(2**61))
        started = time.monotonic()
        assert sub.next(0.5) is None
        assert time.monotonic() - started < 2.0
    finally:
        sub.close()


@pytest.mark.parametrize("since_seq", [1, None])
@pytest.mark.parametrize("seq", [-5, 0, True])
def test_a_bad_seq_held_back_before_the_first_heartbeat_does_not_wedge_the_start(
        daemon: HostileDaemon, seq: Any, since_seq: int | None) -> None:
    daemon.before_heartbeat = [[TOPIC, with_seq(seq)]]
    if since_seq is not None:
        daemon.publish(workflow_event(1))
    sub = live(daemon, since_seq=since_seq)  # (None: from the heartbeat's last_seq, 0)
    try:
        if since_seq is None:
            daemon.publish(workflow_event(1))
        daemon.publish(workflow_event(2))
        assert [e["seq"] for e in take(sub, 2)] == [1, 2]
    finally:
        sub.close()


def replying(result: Any) -> Any:
    def responder(request: Event) -> Replies | None:
        return [(0, ok(result))] if request["op"] == "replay" else None
    return responder


@pytest.mark.parametrize("result", [None, 5, [1, 2], "events", {"events": 5},
                                    {"events": "abc"}, {"events": {"seq": 2}}])
def test_a_replay_reply_that_is_not_the_protocol_is_a_transport_error(
        daemon: HostileDaemon, result: Any) -> None:
    sub = live(daemon)
    try:
        daemon.publish(workflow_event(1))
        assert [e["seq"] for e in take(sub, 1)] == [1]
        daemon.responder = replying(result)
        daemon.send_raw(TOPIC, with_seq(5))  # a jump: replay [2, 4]
        with pytest.raises(TransportError, match="replay"):
            sub.next(5)
    finally:
        sub.close()


def test_bad_events_in_a_replay_are_skipped(daemon: HostileDaemon) -> None:
    sub = live(daemon, topics=("workflow/wf/",))
    try:
        daemon.publish(workflow_event(1))
        assert [e["seq"] for e in take(sub, 1)] == [1]
        unhashable = workflow_event(3)
        unhashable["type"] = ["node_completed"]
        daemon.responder = replying({
            "events": [5, None, {"seq": "2"}, {**workflow_event(2), "seq": True},
                       unhashable, workflow_event(2)],
            "next_seq": 5, "last_seq": 5, "first_seq": 1})
        daemon.send_raw(TOPIC, with_seq(5))
        assert [e["seq"] for e in take(sub, 2)] == [2, 5]
        assert sub.malformed == 5
    finally:
        sub.close()


def test_replayed_events_out_of_order_or_twice_come_out_in_order_once(
        daemon: HostileDaemon) -> None:
    sub = live(daemon)
    try:
        daemon.publish(workflow_event(1))
        assert [e["seq"] for e in take(sub, 1)] == [1]
        daemon.responder = replying({
            "events": [workflow_event(s) for s in (3, 2, 3, 6, 2)],
            "next_seq": 5, "last_seq": 6, "first_seq": 1})
        daemon.send_raw(TOPIC, with_seq(5))
        daemon.send_raw(TOPIC, with_seq(6))
        got = [e["seq"] for e in take(sub, 3)]
        assert got == [3, 5, 6]
        nothing_more(sub)
    finally:
        sub.close()


@pytest.mark.parametrize("next_seq", [2, 1, 0, -7, None, "9"])
def test_a_replay_whose_next_seq_does_not_advance_ends_the_gap(
        daemon: HostileDaemon, next_seq: Any) -> None:
    sub = live(daemon)
    try:
        daemon.publish(workflow_event(1))
        assert [e["seq"] for e in take(sub, 1)] == [1]
        daemon.responder = replying({"events": [], "next_seq": next_seq, "last_seq": 5,
                                     "first_seq": 1})
        daemon.send_raw(TOPIC, with_seq(5))
        assert [e["seq"] for e in take(sub, 1)] == [5]
        assert len([r for r in daemon.requests if r["op"] == "replay"]) == 1
    finally:
        sub.close()


def test_a_heartbeat_with_a_negative_last_seq_is_malformed_and_the_stream_goes_on(
        daemon: HostileDaemon) -> None:
    """Taken as a position, it made every later call ask `replay(since_seq < 0)`, which the
    daemon refuses: the stream stopped for good."""
    sub = live(daemon)
    try:
        daemon.publish(workflow_event(1))
        assert [e["seq"] for e in take(sub, 1)] == [1]
        daemon.send_raw(*daemon.heartbeat(claimed=-5))
        daemon.publish(workflow_event(2))
        assert [e["seq"] for e in take(sub, 1)] == [2]
        assert sub.malformed == 1
    finally:
        sub.close()


def test_next_0_returns_an_event_that_came_after_another_workflows_seqs() -> None:
    """A filtered subscriber's jump over other workflows' seqs is a replay that finds
    nothing: the event that made the jump is then ready, and `next(0)` returns it (it once
    returned None with the event waiting, cutting `events(timeout)` short)."""
    daemon = HostileDaemon(heartbeat_s=3600)  # the first heartbeat only: what arrives is seq 3
    sub = live(daemon, topics=["workflow/wf/"])
    try:
        daemon.publish(workflow_event(1))
        assert [e["seq"] for e in take(sub, 1)] == [1]
        # One heartbeat per subscription (its topic's and the heartbeats'), read first.
        eventually(lambda: sub.next(0) is None and sub.heartbeats >= 2, 10, "2 heartbeats")
        daemon.publish(workflow_event(2, workflow_id="other"), workflow_event(3))
        # (the subscriber's own socket: seq 3 has arrived, unread)
        eventually(lambda: sub._sub.poll(0) != 0, 10, "seq 3 at the socket")
        event = sub.next(0)
        assert event is not None and event["seq"] == 3
    finally:
        sub.close()
        daemon.stop()
