"""Soak: N minutes at a target rate through the daemon, followed by an outside subscriber.

The daemon (`tradeloom daemon`, a subprocess, journal on with `[journal] keep_events` low
enough that pruning runs) runs `chain` (bench/workflows.py). Submitter threads, each with
its own `ControlClient`, take tickets from one fixed schedule (ticket n is due at
t0 + n / rate: no drift; when they fall behind they submit at once and the achieved rate
says so), each submit carrying `{"t": time.time()}` as its inputs. A subscriber process
(raw pyzmq + msgpack, everything subscribed, nothing replayed) checks `seq` is contiguous
and takes, for each execution, its terminal event's arrival time minus the `t` of its
`execution_started` inputs: submit -> terminal event seen elsewhere, in windows by submit
time (from the first submit).
A sampler reads the daemon's RSS (/proc/PID/status) and the journal's size on disk.

Reported: achieved rate; events lost by seq (gaps, and the tail the subscriber never got,
against the daemon's last committed seq): must be 0; RSS and journal size after warm-up
(the first minute, or a fifth of a shorter run) vs at the end; latency p50/p99 in the first
and the last window (a minute, or a quarter of a run under four minutes) and their drift.
Not in CI: `python -m bench --soak` puts it in docs/benchmarks.md.

    .venv/bin/python bench/soak.py                  # 10 minutes at 500 workflows/s
    .venv/bin/python bench/soak.py --minutes 1      # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon_proc import BenchDaemon

RSS_GROWTH_MAX = 0.10  # "flat after warm-up": at most 10 % above the warm-up figure
RATE_MIN = 0.95  # the achieved rate against the one asked
DRAIN_S = 60.0


def subscriber_main(endpoint: str, window_s: float) -> None:
    """The outside process. Reads `stop LAST_SEQ` on stdin; then, once it has that seq (or
    after 10 s of silence), prints one JSON line."""
    import msgpack
    import zmq

    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    while sub.recv_multipart()[0] != b"system/heartbeat":
        pass
    print("live", flush=True)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(sys.stdin.fileno(), zmq.POLLIN)
    t_first = 0.0
    expected: int | None = None
    first_seq = last_seq = received = gaps = missing = 0
    stop_at: int | None = None
    quiet_since = time.monotonic()
    started: dict[str, float] = {}
    buckets: dict[int, list[float]] = {}
    statuses: dict[str, int] = {}
    while stop_at is None or last_seq < stop_at:
        ready = dict(poller.poll(1000))
        if sys.stdin.fileno() in ready and stop_at is None:
            stop_at = int(sys.stdin.readline().split()[1])
        if sub not in ready:
            if stop_at is not None and time.monotonic() - quiet_since > 10:
                break  # lost events never come
            continue
        quiet_since = time.monotonic()
        event = msgpack.unpackb(sub.recv_multipart()[1], raw=False)
        seq = event.get("seq")
        if seq is None:
            continue  # a heartbeat
        now = time.time()
        received += 1
        first_seq = first_seq or seq
        if expected is not None and seq != expected:
            gaps += 1
            missing += max(seq - expected, 0)
        expected, last_seq = seq + 1, seq
        kind = event.get("type")
        if kind == "execution_started":
            t = (event.get("inputs") or {}).get("t")
            if isinstance(t, float):
                started[event["execution_id"]] = t
                t_first = t_first or t
        elif kind in ("execution_completed", "execution_failed"):
            statuses[event["status"]] = statuses.get(event["status"], 0) + 1
            t = started.pop(event["execution_id"], None)
            if t is not None:  # windows by submit time, from the first start seen
                window = max(int((t - t_first) // window_s), 0)
                buckets.setdefault(window, []).append(now - t)
    windows = []
    for index in sorted(buckets):
        samples = buckets[index]
        q = statistics.quantiles(samples, n=100, method="inclusive") if len(samples) > 1 \
            else [samples[0]] * 99
        windows.append({"window": index, "n": len(samples), "p50_ms": q[49] * 1e3,
                        "p99_ms": q[98] * 1e3})
    print(json.dumps({"received": received, "gaps": gaps, "missing": missing,
                      "first_seq": first_seq, "last_seq": last_seq, "stop_at": stop_at,
                      "statuses": statuses, "windows": windows}), flush=True)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("journal.db*") if p.is_file())


class Sampler(threading.Thread):
    """(seconds since start, daemon RSS bytes, journal bytes) every `every_s`."""

    def __init__(self, pid: int, data_dir: Path, every_s: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.data_dir, self.every_s = pid, data_dir, every_s
        self.samples: list[tuple[float, int, int]] = []
        self.stopped = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            self.samples.append((time.monotonic() - self.t0, rss_bytes(self.pid),
                                 disk_bytes(self.data_dir)))


def submit_load(daemon: BenchDaemon, rate: float, seconds: float, clients: int
                ) -> tuple[int, float, list[str]]:
    """Submit on the schedule for `seconds`: (submitted, elapsed s, errors)."""
    lock = threading.Lock()
    tickets = [0]
    total = int(rate * seconds)
    errors: list[str] = []
    t0 = time.perf_counter() + 0.05
    pause = threading.Event()  # never set: wait() is the pacing delay

    def client() -> None:
        with daemon.client() as control:
            while True:
                with lock:
                    n = tickets[0]
                    if n >= total or len(errors) > 10:
                        return
                    tickets[0] += 1
                delay = t0 + n / rate - time.perf_counter()
                if delay > 0:
                    pause.wait(delay)
                try:
                    control.submit("chain", {"t": time.time()})
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tickets[0] - len(errors), time.perf_counter() - t0, errors


def soak(minutes: float, rate: float, clients: int, keep_events: int) -> dict[str, Any]:
    seconds = minutes * 60
    warm_s = min(60.0, seconds / 5)
    window_s = 60.0 if seconds >= 240 else seconds / 4
    with tempfile.TemporaryDirectory(prefix="tradeloom-soak-") as tmp, BenchDaemon(
            Path(tmp), ["bench.workflows:chain"],
            sections={"journal": {"keep_events": keep_events}}) as daemon:
        assert daemon.proc is not None
        sub = subprocess.Popen([sys.executable, __file__, "--subscriber", daemon.events,
                                str(window_s)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
        assert sub.stdin is not None and sub.stdout is not None
        try:
            if sub.stdout.readline().strip() != "live":
                raise RuntimeError("the subscriber process did not go live")
            sampler = Sampler(daemon.proc.pid, daemon.dir / "data", min(5.0, seconds / 20))
            sampler.start()
            submitted, elapsed, errors = submit_load(daemon, rate, seconds, clients)
            with daemon.client() as control:
                deadline = time.monotonic() + DRAIN_S
                while time.monotonic() < deadline:
                    status = control.status()
                    if not status["running"] and not status["queued"]:
                        break
                    time.sleep(0.1)  # draining: no event to wait on across processes
                last_seq = control.status()["last_seq"]
            sampler.stopped.set()
            sampler.join()
            sub.stdin.write(f"stop {last_seq}\n")
            sub.stdin.flush()
            seen: dict[str, Any] = json.loads(sub.stdout.readline())
        finally:
            sub.kill()
            sub.wait(10)
    samples = sampler.samples
    after_warm = [s for s in samples if s[0] >= warm_s] or samples
    lost = seen["missing"] + max(last_seq - seen["last_seq"], 0)
    windows = seen["windows"]
    return {"minutes": minutes, "rate_asked": rate, "submitted": submitted,
            "rate": submitted / elapsed, "errors": errors, "last_seq": last_seq,
            "lost": lost, "gaps": seen["gaps"], "statuses": seen["statuses"],
            "warm_s": warm_s, "window_s": window_s, "windows": windows,
            "rss_warm": after_warm[0][1], "rss_end": samples[-1][1],
            "rss_max": max(s[1] for s in samples),
            "disk_warm": after_warm[0][2], "disk_end": samples[-1][2],
            "disk_max": max(s[2] for s in samples), "samples": samples,
            "keep_events": keep_events}


def growth(end: float, warm: float) -> float:
    return end / warm - 1 if warm else float("nan")


def run_for_report(quick: bool, minutes: float = 10.0) -> dict[str, Any]:
    """Structured results for `python -m bench --soak` (bench/results.py)."""
    from bench.results import figure, result, target

    run = soak(minutes, 500.0, 4, 50_000)
    w = run["windows"]
    first, last = (w[0], w[-1]) if w else ({"p99_ms": float("nan")},) * 2
    mib = 1 << 20
    figures = [figure("achieved rate", "wf/s", run["rate"]),
               figure("achieved / asked rate", "x", run["rate"] / run["rate_asked"]),
               figure("events lost (by seq)", "events", run["lost"]),
               figure("daemon RSS after warm-up", "MiB", run["rss_warm"] / mib),
               figure("daemon RSS at the end", "MiB", run["rss_end"] / mib),
               figure("daemon RSS growth after warm-up", "%",
                      100 * growth(run["rss_end"], run["rss_warm"])),
               figure("journal on disk after warm-up", "MiB", run["disk_warm"] / mib),
               figure("journal on disk at the end", "MiB", run["disk_end"] / mib),
               figure("journal growth after warm-up", "%",
                      100 * growth(run["disk_end"], run["disk_warm"])),
               figure("latency p99, first window", "ms", first["p99_ms"]),
               figure("latency p99, last window", "ms", last["p99_ms"]),
               figure("latency p99 last / first window", "x",
                      last["p99_ms"] / first["p99_ms"])]
    targets = [target(11, "soak: events lost = 0", "events lost (by seq)", "<=", 0),
               target(11, f"soak: RSS flat after warm-up (<= {RSS_GROWTH_MAX:.0%} growth)",
                      "daemon RSS growth after warm-up", "<=", 100 * RSS_GROWTH_MAX),
               target(11, f"soak: journal size flat after warm-up (<= {RSS_GROWTH_MAX:.0%})",
                      "journal growth after warm-up", "<=", 100 * RSS_GROWTH_MAX),
               target(11, "soak: 500 workflows/s sustained (>= 0.95x)",
                      "achieved / asked rate", ">=", RATE_MIN)]
    series = ", ".join(f"{t:.0f}s {rss / mib:.0f}/{disk / mib:.1f}"
                       for t, rss, disk in run["samples"][:: max(len(run["samples"]) // 12, 1)])
    notes = [f"{minutes:g} min at {run['rate_asked']:g} wf/s asked, 4 submitting clients, "
             f"`[journal] keep_events = {run['keep_events']:,}`; warm-up {run['warm_s']:g} s; "
             f"latency windows of {run['window_s']:g} s: "
             + ", ".join(f"p99 {x['p99_ms']:.1f} ms (n {x['n']})" for x in w),
             f"RSS MiB / journal MiB over time: {series}",
             f"terminal statuses seen: {run['statuses']}; submit errors: {len(run['errors'])}"
             + (f" (first: {run['errors'][0]})" if run["errors"] else "")]
    return result("soak", "Soak", f"python bench/soak.py --minutes {minutes:g}", 1, figures,
                  targets, notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=500.0, help="workflows/s asked")
    parser.add_argument("--clients", type=int, default=4, help="submitting control clients")
    parser.add_argument("--keep-events", type=int, default=50_000,
                        help="[journal] keep_events (low, so pruning runs)")
    parser.add_argument("--subscriber", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        subscriber_main(args.subscriber[0], float(args.subscriber[1]))
        return
    run = soak(args.minutes, args.rate, args.clients, args.keep_events)
    mib = 1 << 20
    print(f"soak: {args.minutes:g} min, asked {args.rate:g} wf/s, achieved {run['rate']:,.1f} "
          f"wf/s ({run['submitted']:,} submitted, {len(run['errors'])} errors)")
    print(f"events lost: {run['lost']} (gaps {run['gaps']}); last seq {run['last_seq']:,}; "
          f"terminal statuses {run['statuses']}")
    print(f"daemon RSS: {run['rss_warm'] / mib:.1f} MiB after warm-up -> "
          f"{run['rss_end'] / mib:.1f} MiB at the end "
          f"({growth(run['rss_end'], run['rss_warm']):+.1%}), max {run['rss_max'] / mib:.1f}")
    print(f"journal on disk: {run['disk_warm'] / mib:.1f} MiB -> {run['disk_end'] / mib:.1f} "
          f"MiB ({growth(run['disk_end'], run['disk_warm']):+.1%}), max "
          f"{run['disk_max'] / mib:.1f}")
    for x in run["windows"]:
        print(f"  window {x['window']} ({run['window_s']:g} s): p50 {x['p50_ms']:.2f} ms, "
              f"p99 {x['p99_ms']:.2f} ms, n {x['n']}")
    for error in run["errors"][:3]:
        print("ERROR:", error)
    if run["lost"]:
        raise SystemExit("events were lost")


if __name__ == "__main__":
    main()
