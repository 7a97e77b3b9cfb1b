"""Daemon benchmark: submit over the control socket -> terminal event seen by a subscriber in
another process, against the in-process engine with its journal on, in the same run.

The daemon (`tradeloom daemon`, a subprocess, journal on) runs `chain` (provider ->
condition -> action, trivial functions: bench/workflows.py). A subscriber process (raw
pyzmq + msgpack) subscribes to the workflow's `execution_completed`/`execution_failed`
topics and prints each terminal event's execution id with `time.time()` at its arrival;
this process reads those lines.

- c=1: submit, wait until the subscriber has seen the terminal event; latency = its arrival
  time (in the subscriber) - the time just before the submit was sent. p50/p99.
- c=50: 50 threads, each with its own `ControlClient`, each submitting and waiting for its
  terminal event as above: executions/s.
- Baseline: the same workflow on an in-process `Engine` with `[daemon] data_dir` set (the
  journal on), c=1 latency (`submit().result()`) and c=50 closed-loop throughput, rounds
  interleaved with the daemon's. Ratios are daemon / in-process.
- `halt` beside a 10,000-event `replay`: another client (a DEALER) asks for a replay of
  10,000 events, then pings on the same connection: the ping's reply proves the server has
  read the replay (one connection is read in order). Then `halt` is timed on its own
  client; `resume` follows. Baseline: the same halt with no replay in flight. Target: the
  halt within 50 ms, and answered before the replay.
- Metrics on vs off: pairs of daemon rounds with the same c=50 workload, one started with
  `[metrics] listen` and one without, their order alternating pair by pair (9 pairs, or
  `--rounds` if more); the ratio is the median of the pairs' on / off. Measured only
  when the daemon supports `[metrics] listen` (a daemon started with it must come up);
  otherwise said and skipped.

Targets: p50 <= 1 ms at c=1; c=50 throughput >= 0.5x the in-process journal-on figure.

    .venv/bin/python bench/daemon.py             # 3 rounds
    .venv/bin/python bench/daemon.py --quick     # smoke run (< 60 s)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import structlog
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                    logger_factory=structlog.PrintLoggerFactory(sys.stderr))

from actors import Config, Engine  # noqa: E402
from bench.core import engine_throughput  # noqa: E402
from bench.daemon_proc import BenchDaemon, free_port  # noqa: E402
from bench.workflows import chain  # noqa: E402

TARGET_P50_MS = 1.0
TARGET_RATIO = 0.5
CONCURRENCY = 50
#: Metrics on / off pairs of c=CONCURRENCY daemon rounds (full runs).
METRICS_PAIRS = 9
WAIT_S = 30.0
TERMINAL_TOPICS = (b"workflow/chain/execution_completed", b"workflow/chain/execution_failed")


def subscriber_main(endpoint: str) -> None:
    """The other process: one line `<execution_id> <arrival time>` per terminal event."""
    import msgpack

    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    for topic in (*TERMINAL_TOPICS, b"system/heartbeat"):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(endpoint)
    while sub.recv_multipart()[0] != b"system/heartbeat":
        pass
    print("live", flush=True)
    out = sys.stdout
    while True:
        topic, payload = sub.recv_multipart()
        if topic == b"system/heartbeat":
            continue
        arrived = time.time()
        event = msgpack.unpackb(payload, raw=False)
        out.write(f"{event['execution_id']} {arrived:.6f} {event['status']}\n")
        out.flush()


class Arrivals:
    """The subscriber process's lines: execution id -> (arrival time, status)."""

    def __init__(self, events_endpoint: str) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--subscriber",
                                      events_endpoint], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "live":
            raise RuntimeError("the subscriber process did not go live")
        self._seen: dict[str, tuple[float, str]] = {}
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            execution_id, arrived, status = line.split()
            with self._cond:
                self._seen[execution_id] = (float(arrived), status)
                self._cond.notify_all()

    def wait(self, execution_id: str) -> float:
        with self._cond:
            if not self._cond.wait_for(lambda: execution_id in self._seen, WAIT_S):
                raise RuntimeError(f"the subscriber never saw {execution_id} end")
            arrived, status = self._seen.pop(execution_id)
        if status != "completed":
            raise RuntimeError(f"{execution_id} ended {status}")
        return arrived

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def daemon_latency(daemon: BenchDaemon, arrivals: Arrivals, n: int) -> list[float]:
    samples = []
    with daemon.client() as control:
        for _ in range(n):
            t0 = time.time()
            execution_id = control.submit("chain")["execution_id"]
            samples.append(arrivals.wait(execution_id) - t0)
    return samples


def daemon_throughput(daemon: BenchDaemon, arrivals: Arrivals, total: int) -> float:
    lock = threading.Lock()
    tickets = [total]
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with daemon.client() as control:
                while True:
                    with lock:
                        if tickets[0] == 0:
                            return
                        tickets[0] -= 1
                    arrivals.wait(control.submit("chain")["execution_id"])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(CONCURRENCY)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return total / elapsed


def inprocess(data_dir: Path, latency_n: int, total: int) -> tuple[list[float], float]:
    """The in-process engine, journal on: c=1 latencies and c=50 closed-loop workflows/s."""
    engine = Engine.start(Config.from_dict({"daemon": {"data_dir": str(data_dir)}}))
    try:
        engine.register(chain)
        samples = []
        for _ in range(latency_n):
            t0 = time.time()
            result = engine.submit("chain").result(timeout=WAIT_S)
            samples.append(time.time() - t0)
            assert result.status == "completed", result
        return samples, engine_throughput(engine, CONCURRENCY, total, "chain")
    finally:
        engine.stop()


def halt_latencies(daemon: BenchDaemon, rounds: int, *, beside_replay: bool
                   ) -> tuple[list[float], int]:
    """Halt round trips (s), and how many were answered before the replay beside them."""
    import msgpack

    from transport.codec import encode

    with daemon.client() as control:
        while control.status()["last_seq"] < 10_001:  # at least 10,000 events to replay
            control.submit("chain")
    context = zmq.Context()
    other = context.socket(zmq.DEALER)
    other.linger, other.rcvhwm = 0, 0
    other.connect(daemon.control)
    samples: list[float] = []
    first = 0
    try:
        with daemon.client() as halter:
            for n in range(rounds):
                if beside_replay:
                    other.send_multipart([b"", encode({"v": 1, "op": "replay", "id": n,
                                                       "since_seq": 1, "limit": 10_000})])
                other.send_multipart([b"", encode({"v": 1, "op": "ping", "id": "read"})])
                replies: dict[Any, float] = {}
                while "read" not in replies:
                    if not other.poll(int(WAIT_S * 1000)):
                        raise RuntimeError("no reply to the ping")
                    replies[msgpack.unpackb(other.recv_multipart()[-1])["id"]] = time.time()
                t0 = time.time()
                halter.halt("bench")
                halted = time.time()
                samples.append(halted - t0)
                while beside_replay and n not in replies:
                    if not other.poll(int(WAIT_S * 1000)):
                        raise RuntimeError("no reply to the replay")
                    replies[msgpack.unpackb(other.recv_multipart()[-1])["id"]] = time.time()
                first += not beside_replay or halted < replies[n]
                halter.resume("bench")
    finally:
        other.close(0)
        context.term()
    return samples, first


def percentiles(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49] * 1e3, q[98] * 1e3


def daemon_round(work: Path, latency_n: int, total: int, halt_rounds: int = 0,
                 metrics_listen: str | None = None) -> dict[str, Any]:
    with BenchDaemon(work, ["bench.workflows:chain"], metrics_listen=metrics_listen) as daemon:
        arrivals = Arrivals(daemon.events)
        try:
            daemon_latency(daemon, arrivals, min(latency_n, 50))  # warm-up
            result: dict[str, Any] = {"latency": daemon_latency(daemon, arrivals, latency_n),
                                      "rate": daemon_throughput(daemon, arrivals, total)}
        finally:
            arrivals.close()
        if halt_rounds:
            result["halt_alone"] = halt_latencies(daemon, halt_rounds, beside_replay=False)[0]
            result["halt"], result["halt_first"] = halt_latencies(daemon, halt_rounds,
                                                                  beside_replay=True)
        return result


def metrics_supported(work: Path) -> bool:
    try:
        with BenchDaemon(work, ["bench.workflows:chain"],
                         metrics_listen=f"127.0.0.1:{free_port()}"):
            return True
    except RuntimeError:
        return False


def measure(rounds: int, latency_n: int, total: int, halts: int) -> dict[str, Any]:
    """Rounds of the daemon interleaved with the in-process engine (journal on), halt beside
    a replay, and metrics on vs off when the daemon supports it."""
    out: dict[str, Any] = {"d_lat": [], "e_lat": [], "d_rate": [], "e_rate": [],
                           "d_p50": [], "e_p50": [], "halt_alone": [], "halt": [],
                           "halt_first": 0, "m_rate": [], "m_off_rate": [], "metrics": False}
    with tempfile.TemporaryDirectory(prefix="tradeloom-bench-daemon-") as tmp:
        work = Path(tmp)
        for r in range(rounds):
            result = daemon_round(work / f"daemon{r}", latency_n, total, halts)
            out["d_lat"] += result["latency"]
            out["d_p50"].append(statistics.median(result["latency"]) * 1e3)
            out["d_rate"].append(result["rate"])
            out["halt_alone"] += result["halt_alone"]
            out["halt"] += result["halt"]
            out["halt_first"] += result["halt_first"]
            lat, rate = inprocess(work / f"engine{r}", latency_n, total)
            out["e_lat"] += lat
            out["e_p50"].append(statistics.median(lat) * 1e3)
            out["e_rate"].append(rate)
        out["metrics"] = metrics_supported(work / "metrics-probe")
        if out["metrics"]:
            # One c=50 round varies by +-15 % on this shared machine: at least 9 pairs
            # (with 5, one run's median came out 0.94x where six pairs alone gave 1.02x).
            for r in range(max(rounds, METRICS_PAIRS) if rounds > 1 else rounds):
                for on in ((False, True) if r % 2 == 0 else (True, False)):
                    rate = daemon_round(
                        work / f"metrics{r}-{'on' if on else 'off'}", 10, total,
                        metrics_listen=f"127.0.0.1:{free_port()}" if on else None)["rate"]
                    out["m_rate" if on else "m_off_rate"].append(rate)
    return out


def run_for_report(quick: bool) -> dict[str, Any]:
    """Structured results for `python -m bench` (bench/results.py)."""
    from bench.results import figure, paired, result, target

    rounds, latency_n, total, halts = (1, 100, 300, 3) if quick else (3, 2000, 10_000, 30)
    run = measure(rounds, latency_n, total, halts)
    figures = [
        figure("daemon: submit -> terminal event elsewhere, p50, c=1", "ms", run["d_p50"]),
        figure("in-process engine, journal on, p50, c=1", "ms", run["e_p50"]),
        figure("daemon / in-process p50, c=1", "x", paired(run["d_p50"], run["e_p50"])),
        figure(f"daemon wf/s, c={CONCURRENCY}", "wf/s", run["d_rate"]),
        figure(f"in-process engine, journal on, wf/s, c={CONCURRENCY}", "wf/s", run["e_rate"]),
        figure(f"daemon / in-process wf/s, c={CONCURRENCY}", "x",
               paired(run["d_rate"], run["e_rate"])),
        figure("halt over the control socket beside a 10,000-event replay", "ms",
               [s * 1e3 for s in run["halt"]]),
        figure("halt over the control socket alone (baseline)", "ms",
               [s * 1e3 for s in run["halt_alone"]]),
        figure("halts answered before the replay beside them", "%",
               100 * run["halt_first"] / max(len(run["halt"]), 1))]
    targets = [target(11, f"submit -> terminal event p50 <= {TARGET_P50_MS:g} ms at c=1",
                      "daemon: submit -> terminal event elsewhere, p50, c=1", "<=",
                      TARGET_P50_MS),
               target(11, f"daemon >= {TARGET_RATIO}x in-process (journal on) at c=50",
                      f"daemon / in-process wf/s, c={CONCURRENCY}", ">=", TARGET_RATIO),
               target(10, "halt within 50 ms beside a 10,000-event replay",
                      "halt over the control socket beside a 10,000-event replay", "<=", 50,
                      stat="p99"),
               target(10, "halt answered before the replay beside it",
                      "halts answered before the replay beside them", ">=", 100)]
    notes = [f"c=1: {latency_n} executions per round; c={CONCURRENCY}: {total:,} per round; "
             f"{halts} halts per round; a fresh daemon and data_dir per round"]
    if run["metrics"]:
        figures.append(figure(f"metrics on / off wf/s, c={CONCURRENCY}", "x",
                              paired(run["m_rate"], run["m_off_rate"])))
        targets.append(target(11, "metrics on costs <= 5 % throughput",
                              f"metrics on / off wf/s, c={CONCURRENCY}", ">=", 0.95))
    else:
        notes.append("metrics on / off: skipped ([metrics] listen is not supported)")
    return result("daemon", "The daemon", "python bench/daemon.py", rounds, figures, targets,
                  notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (< 60 s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subscriber", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        subscriber_main(args.subscriber)
        return
    rounds, latency_n, total, halts = ((1, 200, 1000, 5) if args.quick
                                       else (args.rounds, 2000, 10_000, 30))
    run = measure(rounds, latency_n, total, halts)
    d_lat, e_lat, d_rate, e_rate = run["d_lat"], run["e_lat"], run["d_rate"], run["e_rate"]
    halt_beside, halt_alone, halt_first = run["halt"], run["halt_alone"], run["halt_first"]
    metrics, m_rate, m_off_rate = run["metrics"], run["m_rate"], run["m_off_rate"]
    dp, ep = percentiles(d_lat), percentiles(e_lat)
    ratio = statistics.median(d / e for d, e in zip(d_rate, e_rate, strict=True))
    print(f"{rounds} round(s), interleaved; c=1: {latency_n} executions per round; "
          f"c={CONCURRENCY}: {total:,} per round\n")
    print(f"{'c=1 latency':<44}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'daemon: submit -> terminal event elsewhere':<44}{dp[0]:>9.3f}{dp[1]:>9.3f}")
    print(f"{'in-process engine, journal on':<44}{ep[0]:>9.3f}{ep[1]:>9.3f}")
    print(f"daemon p50 / in-process p50: {dp[0] / ep[0]:.2f}x\n")
    print(f"{f'c={CONCURRENCY} throughput':<44}{'wf/s':>9}")
    print(f"{'daemon (control socket + outside subscriber)':<44}"
          f"{statistics.median(d_rate):>9,.0f}")
    print(f"{'in-process engine, journal on':<44}{statistics.median(e_rate):>9,.0f}")
    print(f"daemon / in-process: {ratio:.2f}x\n")
    hp, ha = percentiles(halt_beside), percentiles(halt_alone)
    print(f"{'halt over the control socket':<44}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'beside a 10,000-event replay':<44}{hp[0]:>9.3f}{hp[1]:>9.3f}")
    print(f"{'alone (baseline)':<44}{ha[0]:>9.3f}{ha[1]:>9.3f}")
    print(f"beside / alone p50: {hp[0] / ha[0]:.2f}x; answered before the replay: "
          f"{halt_first} of {len(halt_beside)}; target <= 50 ms: "
          f"{'met' if hp[1] <= 50 else 'NOT met'} (p99)\n")
    if metrics:
        m_ratio = statistics.median(m / d for m, d in zip(m_rate, m_off_rate, strict=True))
        print(f"metrics on / off (c={CONCURRENCY} throughput): {m_ratio:.2f}x")
    else:
        print("metrics on / off: skipped ([metrics] listen is not supported by this daemon)")
    print(f"target p50 <= {TARGET_P50_MS:g} ms at c=1: "
          f"{'met' if dp[0] <= TARGET_P50_MS else 'NOT met'}; target c={CONCURRENCY} >= "
          f"{TARGET_RATIO}x in-process: {'met' if ratio >= TARGET_RATIO else 'NOT met'}")


if __name__ == "__main__":
    main()
