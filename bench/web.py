"""WebSocket gateway benchmark: events/s to a WebSocket client, beside a ZeroMQ subscriber.

One engine (in memory) with both a `Publisher` (ZeroMQ XPUB) and a `WebGateway`
(websockets, `[web]`) following its log. Two client processes, started and live before
the first event: bench/stream.py's raw pyzmq + msgpack subscriber, and a websockets sync
client here (`--ws-client`) that parses every JSON `events` message and checks `seq`. Then
N synthetic `node_completed` events are emitted through the engine's sink in batches of
1,000, and each client reports when its last event arrived. Measured per client: events/s
from the first emit to its last event received, with zero loss required (any gap or a
missing event fails the run). Both figures come from the same run, the same events.

    .venv/bin/python bench/web.py               # 3 rounds of 100,000 events
    .venv/bin/python bench/web.py --quick       # smoke run (one round of 5,000)
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                    logger_factory=structlog.PrintLoggerFactory(sys.stderr))

from actors import Engine  # noqa: E402
from actors.web_config import WebConfig  # noqa: E402
from transport import Publisher  # noqa: E402
from transport.web.gateway import WebGateway  # noqa: E402

BATCH = 1000
TOKEN = "bench-token"
STREAM_SCRIPT = Path(__file__).with_name("stream.py")


def make_batch(start: int, count: int) -> list[dict[str, Any]]:
    execution_id = "exec_bench_0000abcd"
    return [{"v": 1, "type": "node_completed", "execution_id": execution_id,
             "correlation_id": execution_id, "workflow_id": "bench", "bot_id": "bot_001",
             "strategy_id": "s1", "node_id": "price", "duration_ms": 0.05,
             "status": "success", "outputs": {"price": 50_000.0 + i}, "attempt": 1}
            for i in range(start, start + count)]


def read_line(proc: subprocess.Popen[str], who: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the {who} process exited early")
    return line.strip()


def run_round(count: int) -> dict[str, dict[str, Any]]:
    engine = Engine.start()
    publisher = Publisher("tcp://127.0.0.1:*", engine.sink.log.reader(), heartbeat_s=1.0)
    publisher.start()
    gateway = WebGateway(WebConfig(listen="127.0.0.1:0"), engine,
                         env={"TRADELOOM_WEB_TOKEN": TOKEN}, max_lag=10 * count)
    gateway.start()
    assert engine.sink.log.committed_seq == 0, "a fresh engine's first event is seq 1"
    zmq_proc = subprocess.Popen([sys.executable, str(STREAM_SCRIPT), "--subscriber",
                                 publisher.endpoint, str(count), "heartbeat"],
                                stdout=subprocess.PIPE, text=True)
    ws_proc = subprocess.Popen([sys.executable, __file__, "--ws-client", gateway.ws_url,
                                str(count)], stdout=subprocess.PIPE, text=True)
    try:
        assert read_line(zmq_proc, "ZeroMQ subscriber") == "live"
        assert read_line(ws_proc, "WebSocket client") == "live"
        started = time.time()
        for start in range(0, count, BATCH):
            engine.sink.emit(make_batch(start, min(BATCH, count - start)))
        results = {"zeromq": json.loads(read_line(zmq_proc, "ZeroMQ subscriber")),
                   "websocket": json.loads(read_line(ws_proc, "WebSocket client"))}
    finally:
        for proc in (zmq_proc, ws_proc):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        gateway.stop()
        publisher.stop()
        engine.stop()
    for result in results.values():
        result["rate"] = result["received"] / max(result["last"] - started, 1e-9)
        result["lossless"] = result["received"] == count and result["gaps"] == 0
    return results


def ws_client_main(url: str, count: int) -> None:
    """The WebSocket client process: hello, then every event, seq checked; one JSON line."""
    from websockets.sync.client import connect

    with connect(url, max_size=None, compression=None) as ws:
        ws.send(json.dumps({"token": TOKEN}))
        welcome = json.loads(ws.recv(timeout=10))
        assert welcome["msg"] == "welcome", welcome
        print("live", flush=True)
        expected, gaps, received = welcome["next_seq"], 0, 0
        first = 0.0
        loads = json.loads
        while received < count:
            try:
                message = loads(ws.recv(timeout=10))
            except TimeoutError:
                break  # lost events never come: report what arrived
            if message["msg"] != "events":
                continue
            if received == 0:
                first = time.time()
            for event in message["events"]:
                if event["seq"] != expected:
                    gaps += 1
                expected = event["seq"] + 1
            received += len(message["events"])
        last = time.time()
    print(json.dumps({"received": received, "gaps": gaps, "first": first, "last": last}),
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--ws-client", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ws_client:
        ws_client_main(args.ws_client[0], int(args.ws_client[1]))
        return
    rounds, count = (1, 5_000) if args.quick else (args.rounds, min(args.events, 100_000))
    rates: dict[str, list[float]] = {"zeromq": [], "websocket": []}
    lossless = True
    for i in range(rounds):
        results = run_round(count)
        for name, result in results.items():
            rates[name].append(result["rate"])
            lossless &= result["lossless"]
        print(f"round {i + 1}: " + ", ".join(
            f"{name} {r['rate']:,.0f} events/s ({r['received']:,} received, {r['gaps']} gaps)"
            for name, r in results.items()), flush=True)
    zmq_rate, ws_rate = (statistics.median(rates[n]) for n in ("zeromq", "websocket"))
    print(f"median of {rounds} x {count:,} events: WebSocket {ws_rate:,.0f} events/s, "
          f"ZeroMQ {zmq_rate:,.0f} events/s, ratio {ws_rate / zmq_rate:.2f}; "
          f"zero loss: {'yes' if lossless else 'NO'}")
    if not lossless:
        sys.exit(1)


if __name__ == "__main__":
    main()
