"""A raw pyzmq + msgpack subscriber in its own process, for the transport tests.

    python tests/stream_probe.py ENDPOINT COUNT DEADLINE_S

Subscribes to everything, prints `live <last_seq>` at the first heartbeat, then reads until
it has COUNT events (or the deadline passes) and prints one JSON line: the seqs in arrival
order, how many heartbeats came, and how many topics did not match their payload.
"""

from __future__ import annotations

import json
import sys
import time

import msgpack
import zmq


def main() -> None:
    endpoint, count, deadline_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.rcvhwm = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    deadline = time.monotonic() + deadline_s
    seqs: list[int] = []
    heartbeats = bad_topics = 0
    while time.monotonic() < deadline and len(seqs) < count:
        if not sub.poll(100):
            continue
        topic, payload = sub.recv_multipart()
        event = msgpack.unpackb(payload, raw=False)
        if topic == b"system/heartbeat":
            if heartbeats == 0:
                print("live", event["last_seq"], flush=True)
            heartbeats += 1
            continue
        expected = f"workflow/{event.get('workflow_id')}/{event['type']}"
        if "execution_id" not in event:
            expected = topic.decode()
        bad_topics += topic.decode() != expected
        seqs.append(event["seq"])
    print(json.dumps({"seqs": seqs, "heartbeats": heartbeats, "bad_topics": bad_topics}),
          flush=True)
    sub.close(linger=0)
    context.term()


if __name__ == "__main__":
    main()
