"""WebSocket gateway benchmark: events/s to a WebSocket client, beside a ZeroMQ subscriber.

One engine (in memory) with both a `Publisher` (ZeroMQ XPUB) and a `WebGateway`
(websockets, `[web]`) following its log. Two client processes, started and live before
the first event: bench/stream.py's raw pyzmq + msgpack subscriber, and a websockets sync
client here (`--ws-client`) that parses every JSON `events` message and checks `seq`. Then
N synthetic `node_completed` events are emitted through the engine's sink in batches of
1,000, and each client reports when its last event arrived. Measured per client: events/s
from the first emit to its last event received, with zero loss required (any gap or a
missing event fails the run). Both figures come from the same run, the same events.

Second figure: the in-process throughput (events emitted through the sink until an
in-process subscription has them all) with a stalled WebSocket client connected (another
process that sent its hello and then reads nothing) over the same without one, rounds
interleaved: the ratio shows what a slow client costs the daemon (target: within 10 %).

    .venv/bin/python bench/web.py               # 3 rounds of 100,000 events
    .venv/bin/python bench/web.py --quick       # smoke run (one round of 5,000)
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import statistics
import subprocess
import sys
import threading
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


def in_process_rate(count: int, *, stalled: bool) -> float:
    """Events/s from the first emit until an in-process subscription has the last one, with
    (or without) a stalled WebSocket client on the gateway."""
    engine = Engine.start()
    gateway = WebGateway(WebConfig(listen="127.0.0.1:0"), engine,
                         env={"TRADELOOM_WEB_TOKEN": TOKEN})
    gateway.start()
    stalled_proc = None
    if stalled:
        stalled_proc = subprocess.Popen([sys.executable, __file__, "--stalled-client",
                                         str(gateway.port), gateway.ws_url],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        assert read_line(stalled_proc, "stalled client") == "live"
    done = threading.Event()
    seen = [0]

    def count_events(event: dict[str, Any]) -> None:
        seen[0] += 1
        if seen[0] >= count:
            done.set()

    engine.subscribe(count_events)
    try:
        started = time.perf_counter()
        for start in range(0, count, BATCH):
            engine.sink.emit(make_batch(start, min(BATCH, count - start)))
        if not done.wait(120):
            raise RuntimeError("the in-process subscription did not get every event")
        return count / (time.perf_counter() - started)
    finally:
        if stalled_proc is not None:
            stalled_proc.kill()
            stalled_proc.wait(10)
        gateway.stop()
        engine.stop()


def stalled_client_main(port: int, url: str) -> None:
    """Hello, then read nothing (a tiny receive buffer, one queued message) until killed."""
    from websockets.sync.client import connect

    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    with connect(url, sock=raw, max_size=None, max_queue=1, compression=None) as ws:
        ws.send(json.dumps({"token": TOKEN}))
        print("live", flush=True)
        sys.stdin.read()  # until the parent kills us


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


def run_for_report(quick: bool) -> dict[str, Any]:
    """For `python -m bench` (bench/results.py): both figures, rounds interleaved."""
    from bench.results import figure, paired, result, target

    rounds, count = (1, 5_000) if quick else (3, 100_000)
    rates: dict[str, list[float]] = {"zeromq": [], "websocket": []}
    lost: list[float] = []
    alone: list[float] = []
    stalled: list[float] = []
    for i in range(rounds):
        results = run_round(count)
        for name, one in results.items():
            rates[name].append(one["rate"])
        lost.append(float(sum(count - r["received"] + r["gaps"] for r in results.values())))
        for with_stalled in ((False, True) if i % 2 == 0 else (True, False)):
            (stalled if with_stalled else alone).append(
                in_process_rate(count, stalled=with_stalled))
    figures = [figure("events/s to a WebSocket client", "events/s", rates["websocket"]),
               figure("events/s to a ZeroMQ subscriber (same run)", "events/s",
                      rates["zeromq"]),
               figure("WebSocket / ZeroMQ events/s", "x",
                      paired(rates["websocket"], rates["zeromq"])),
               figure("events lost (both clients)", "events", lost),
               figure("in-process events/s, stalled WebSocket client / none", "x",
                      paired(stalled, alone))]
    targets = [target(13, "events/s to a WebSocket client with zero loss",
                      "events lost (both clients)", "<=", 0, stat="max"),
               target(13, "a slow WebSocket client: in-process throughput within 10 %",
                      "in-process events/s, stalled WebSocket client / none", ">=", 0.90)]
    notes = [f"{count:,} node_completed events per round, emitted in batches of {BATCH:,}; "
             "both clients are other processes, live before the first event"]
    return result("web", "WebSocket gateway", "python bench/web.py", rounds, figures,
                  targets, notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--ws-client", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--stalled-client", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ws_client:
        ws_client_main(args.ws_client[0], int(args.ws_client[1]))
        return
    if args.stalled_client:
        stalled_client_main(int(args.stalled_client[0]), args.stalled_client[1])
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
    ratios = []
    for _ in range(rounds):
        alone = in_process_rate(count, stalled=False)
        with_stalled = in_process_rate(count, stalled=True)
        ratios.append(with_stalled / alone)
    print(f"in-process events/s with a stalled WebSocket client / without: median ratio "
          f"{statistics.median(ratios):.2f} over {rounds} interleaved rounds (target >= 0.90)")
    if not lossless:
        sys.exit(1)


if __name__ == "__main__":
    main()
