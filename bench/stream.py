"""Stream benchmark, part (a): the publisher vs a bare pyzmq + msgpack PUB/SUB pair.

Each round sends N synthetic workflow events to a subscriber in another process, which
receives every one, unpacks it and checks that `seq` has no gap. Measured: events/s from the
first commit to the last event received (end to end), with zero loss required (N is at most
the publisher's send high-water mark, so nothing may be dropped; any loss fails the run).

  - bare: one process packs each event with msgpack and sends `[topic, payload]` on a PUB
    socket in a loop (what a hand-written publisher would do);
  - publisher (packed): `transport.Publisher` following an in-memory committed log that is
    fed batches of 1,000 events; the log hands out already-packed bytes, as the journal does
    (`read_packed`);
  - publisher (dicts): the same, but the log hands out event dicts that the publisher packs.

The subscriber process is the same raw pyzmq + msgpack loop for all three; it waits for the
publisher's first heartbeat (bare: for a sync message) before the sender starts. Modes are
interleaved, `--rounds` of each; medians and median ratios are printed. Target: publisher
>= 0.7x bare, with zero loss.

Part (b), the daemon under workflow load: delivered events/s, committed -> received latency
p50/p99 at 10,000 events/s, CURVE on as a ratio (bench/stream_daemon.py says how).

    .venv/bin/python bench/stream.py             # (a) 3 rounds of 100,000 events per mode, (b)
    .venv/bin/python bench/stream.py --quick     # smoke run of both (< 60 s)
    .venv/bin/python bench/stream.py --part b    # one part only
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import structlog
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                    logger_factory=structlog.PrintLoggerFactory(sys.stderr))

from actors.events import topic_of  # noqa: E402
from bench import stream_daemon  # noqa: E402
from transport import Publisher  # noqa: E402
from transport.codec import encode  # noqa: E402

TARGET_RATIO = 0.7
BATCH = 1000
SYNC_TOPIC = b"bench/sync"


def make_events(count: int) -> list[dict[str, Any]]:
    execution_id = "exec_bench_0000abcd"
    return [{"v": 1, "seq": seq, "type": "node_completed", "timestamp": "2024-01-01T00:00:00.000Z",
             "execution_id": execution_id, "correlation_id": execution_id,
             "workflow_id": "bench", "bot_id": "bot_001", "strategy_id": "s1", "wseq": seq,
             "state": "NORMAL", "node_id": "price", "duration_ms": 0.05, "status": "success",
             "outputs": {"price": 50_000.0 + seq}, "attempt": 1}
            for seq in range(1, count + 1)]


class BenchLog:
    """An in-memory committed log; `commit()` makes the next batch visible."""

    def __init__(self, events: list[dict[str, Any]], *, packed: bool) -> None:
        self.events = events
        self.rows = [(e["seq"], topic_of(e), encode(e)) for e in events] if packed else None
        self.committed = 0
        self.cond = threading.Condition()

    def commit(self, count: int) -> None:
        with self.cond:
            self.committed = min(self.committed + count, len(self.events))
            self.cond.notify_all()

    def committed_seq(self) -> int:
        return self.committed

    def wait_committed(self, after_seq: int, timeout: float) -> int:
        with self.cond:
            self.cond.wait_for(lambda: self.committed > after_seq, timeout)
            return self.committed

    def read(self, since_seq: int, limit: int) -> list[dict[str, Any]]:
        end = min(since_seq - 1 + limit, self.committed)
        return self.events[since_seq - 1:end]


class PackedBenchLog(BenchLog):
    def read_packed(self, since_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        assert self.rows is not None
        end = min(since_seq - 1 + limit, self.committed)
        return self.rows[since_seq - 1:end]


def spawn_subscriber(endpoint: str, count: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--subscriber", endpoint, str(count),
                             mode], stdout=subprocess.PIPE, text=True)


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("the subscriber process exited early")
    return line.strip()


def run_publisher(count: int, *, packed: bool) -> dict[str, Any]:
    events = make_events(count)
    log: BenchLog = PackedBenchLog(events, packed=True) if packed else BenchLog(events,
                                                                               packed=False)
    publisher = Publisher("tcp://127.0.0.1:*", log, heartbeat_s=1.0)
    publisher.start()
    proc = spawn_subscriber(publisher.endpoint, count, "heartbeat")
    try:
        assert read_line(proc) == "live"
        started = time.time()
        for _ in range(0, count, BATCH):
            log.commit(BATCH)
        result: dict[str, Any] = json.loads(read_line(proc))
    finally:
        proc.wait(60)
        publisher.stop()
    result["started"] = started
    result["sender_dropped"] = publisher.stats()["dropped"]
    return result


def run_bare(count: int) -> dict[str, Any]:
    events = make_events(count)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    proc = spawn_subscriber(f"tcp://127.0.0.1:{port}", count, "sync")
    ready = threading.Event()

    def sync() -> None:  # until the subscriber says it hears us (the slow-joiner problem)
        while not ready.is_set():
            pub.send_multipart([SYNC_TOPIC, b""])
            ready.wait(0.01)

    syncer = threading.Thread(target=sync)
    syncer.start()
    try:
        assert read_line(proc) == "live"
        ready.set()
        syncer.join()
        started = time.time()
        send = pub.send_multipart
        packb = msgpack.packb
        for event in events:
            send([topic_of(event).encode(), packb(event, use_bin_type=True)])
        result: dict[str, Any] = json.loads(read_line(proc))
    finally:
        ready.set()
        proc.wait(60)
        pub.close()
    result["started"] = started
    result["sender_dropped"] = 0
    return result


def subscriber_main(endpoint: str, count: int, mode: str) -> None:
    """The receiving process: every event, unpacked, seq checked; one JSON line at the end."""
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    live_topic = b"system/heartbeat" if mode == "heartbeat" else SYNC_TOPIC
    while sub.recv_multipart()[0] != live_topic:
        pass
    print("live", flush=True)
    expected, gaps, received = 1, 0, 0
    first = last = 0.0
    unpackb = msgpack.unpackb
    recv = sub.recv_multipart
    while received < count:
        if not sub.poll(10_000):
            break  # lost events never come: report what arrived
        topic, payload = recv()
        if topic == live_topic:
            continue
        event = unpackb(payload, raw=False)
        if received == 0:
            first = time.time()
        received += 1
        if event["seq"] != expected:
            gaps += 1
        expected = event["seq"] + 1
    last = time.time()
    print(json.dumps({"received": received, "gaps": gaps, "first": first, "last": last}),
          flush=True)
    sub.close(0)
    context.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (smoke test)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--part", choices=["a", "b", "both"], default="both")
    parser.add_argument("--daemon-executions", type=int, default=1000,
                        help="(b) wide executions (151 events each) per throughput round")
    parser.add_argument("--paced-seconds", type=float, default=10.0,
                        help="(b) seconds of paced load per latency round")
    parser.add_argument("--subscriber", nargs=3, metavar=("ENDPOINT", "COUNT", "MODE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--daemon-subscriber", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        endpoint, count, mode = args.subscriber
        subscriber_main(endpoint, int(count), mode)
        return
    if args.daemon_subscriber:
        endpoint, mode, count, secret, server = args.daemon_subscriber
        stream_daemon.subscriber_main(endpoint, mode, int(count), secret, server)
        return
    bare_rate = None
    ok = True
    if args.part in ("a", "both"):
        bare_rate, ok = run_part_a(args)
    if args.part in ("b", "both"):
        rounds = 1 if args.quick else args.rounds
        executions, seconds = ((100, 1.5) if args.quick
                               else (args.daemon_executions, args.paced_seconds))
        ok = stream_daemon.run(rounds, executions, seconds, bare_rate) and ok
    if not ok:
        sys.exit(1)


MODES = ("bare pyzmq + msgpack", "publisher (packed)", "publisher (dicts)")


def measure_part_a(rounds: int, count: int) -> dict[str, Any]:
    """Part (a): events/s per mode and round, and whether nothing was lost."""
    count = min(count, 100_000)  # within the send high-water mark: loss would be a bug
    runs: dict[str, Callable[[int], dict[str, Any]]] = {
            MODES[0]: run_bare, MODES[1]: lambda n: run_publisher(n, packed=True),
            MODES[2]: lambda n: run_publisher(n, packed=False)}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    losses: list[str] = []
    for _ in range(rounds):
        for name, run in runs.items():
            result = run(count)
            if result["received"] != count or result["gaps"] or result["sender_dropped"]:
                losses.append(f"LOSS in {name}: {result}")
            rates[name].append(count / max(result["last"] - result["started"], 1e-9))
    return {"count": count, "rounds": rounds, "rates": rates, "losses": losses}


def run_part_a(args: argparse.Namespace) -> tuple[float, bool]:
    """Part (a); the bare pair's median events/s and whether nothing was lost."""
    rounds, count = (1, 20_000) if args.quick else (args.rounds, args.events)
    part = measure_part_a(rounds, count)
    rates, count = part["rates"], part["count"]
    for loss in part["losses"]:
        print(loss)
    lossless = not part["losses"]
    print(f"{count:,} events per round, {rounds} round(s) per mode, interleaved\n")
    print(f"{'mode':<24}{'events/s (median)':>20}{'ratio to bare':>16}")
    bare = rates[MODES[0]]
    for name, values in rates.items():
        ratio = statistics.median(v / b for v, b in zip(values, bare, strict=True))
        print(f"{name:<24}{statistics.median(values):>20,.0f}{ratio:>15.2f}x")
    packed = statistics.median(v / b for v, b in zip(rates[MODES[1]], bare, strict=True))
    print(f"\nzero loss: {'yes' if lossless else 'NO'}; target publisher (packed) >= "
          f"{TARGET_RATIO}x bare: {'met' if packed >= TARGET_RATIO else 'NOT met'}")
    return statistics.median(bare), lossless


def run_for_report(quick: bool) -> dict[str, Any]:
    """Structured results for `python -m bench` (bench/results.py): parts (a) and (b)."""
    from bench.results import figure, paired, result, target

    rounds = 1 if quick else 3
    part_a = measure_part_a(rounds, 5_000 if quick else 100_000)
    executions, seconds = (40, 1.0) if quick else (1000, 10.0)
    part_b = stream_daemon.measure(rounds, executions, seconds)
    rates = part_a["rates"]
    figures = [figure(f"(a) {name}", "events/s", values) for name, values in rates.items()]
    figures += [figure("(a) publisher (packed) / bare pair", "x",
                       paired(rates[MODES[1]], rates[MODES[0]])),
                figure("(a) publisher (dicts) / bare pair", "x",
                       paired(rates[MODES[2]], rates[MODES[0]])),
                figure("(a) rounds that lost an event", "rounds",
                       float(len(part_a["losses"])))]
    figures += stream_daemon.figures_of(part_b, rates[MODES[0]])
    targets = [target(10, "publisher >= 0.7x a bare pyzmq + msgpack pair",
                      "(a) publisher (packed) / bare pair", ">=", TARGET_RATIO),
               target(10, "publisher: zero loss", "(a) rounds that lost an event", "<=", 0),
               target(10, "daemon: >= 50,000 events/s to an outside subscriber",
                      "(b) plain: events/s delivered", ">=", stream_daemon.TARGET_RATE),
               target(10, "daemon: zero loss", "(b) rounds that lost an event", "<=", 0),
               target(10, "committed -> received p99 <= 2 ms at 10,000 events/s",
                      "(b) plain: committed -> received p99 at 10,000 events/s", "<=",
                      stream_daemon.TARGET_P99_MS)]
    notes = [f"(a) {part_a['count']:,} events per round; (b) {executions} `wide` executions "
             f"per throughput round, {seconds:g} s paced per latency round, a fresh daemon "
             "per round; p50/p99 per round are over that round's events"]
    notes += part_a["losses"] + part_b["losses"]
    return result("stream", "Event stream", "python bench/stream.py", rounds, figures,
                  targets, notes)


if __name__ == "__main__":
    main()
