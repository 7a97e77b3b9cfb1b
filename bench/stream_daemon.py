"""bench/stream.py part (b): the daemon under workflow load, followed from another process.

Each round starts a fresh daemon (`tradeloom daemon`, a subprocess, journal on, its own
data_dir) and a raw pyzmq + msgpack subscriber process that subscribes to everything, waits
for the first heartbeat, then receives and unpacks every event and checks `seq` for gaps.

- Throughput: `wide` executions (50 nodes, 151 events each) submitted by 4 control clients
  as fast as they are accepted; events/s = events received / (last received - first
  received), in the subscriber. Lossless means every seq arrived live (no gap), without
  replay.
- Latency at a paced 10,000 events/s: `stamp` executions (10 nodes, 31 events each)
  submitted on a fixed schedule; the subscriber notes `time.time()` as each event arrives
  (unpacked). Committed -> received: the daemon runs under bench/commit_probe.py, which
  notes the time each journal commit returns and its last seq; every event's latency is
  its arrival minus the end of the commit that held it (read -> sent -> received ->
  unpacked). Both processes read the same system clock. Also shown, as an upper bound:
  node return -> received, from each node's `{"t": time.time()}` output to its
  `node_completed` arriving (adds event built -> sequenced -> waiting for and in the group
  commit). The events' own `timestamp` has ms resolution only: a cross-check.
- CURVE: the same rounds with `[transport]` CURVE keys and a client key on the subscriber
  (and the control clients); printed as ratios to the plain rounds of the same run.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import msgpack
import zmq

from bench.commit_probe import committed_to_received
from bench.daemon_proc import BenchDaemon, CurveKeys
from bench.workflows import STAMP_EVENTS, WIDE_EVENTS

SCRIPT = Path(__file__).resolve().parent / "stream.py"
TARGET_RATE = 50_000
TARGET_P99_MS = 2.0
PACED_RATE = 10_000


# -- the subscriber process ---------------------------------------------------------------

def subscriber_main(endpoint: str, mode: str, count: int, secret: str, server: str) -> None:
    """`rate`: first/last receive times, gaps; `latency`: also every event's `[seq, arrival]`
    and receive - node stamp per node_completed. One JSON line at the end."""
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    if secret:
        from transport.security import ClientKeys

        ClientKeys(secret, server).apply(sub)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    while sub.recv_multipart()[0] != b"system/heartbeat":
        pass
    print("live", flush=True)
    unpackb, recv, now = msgpack.unpackb, sub.recv_multipart, time.time
    received = gaps = 0
    expected: int | None = None
    first = last = 0.0
    stamped: list[float] = []
    by_timestamp: list[float] = []
    arrivals: list[tuple[int, float]] = []
    while received < count:
        if not sub.poll(10_000):
            break  # lost events never come
        payload = recv()[1]
        event = unpackb(payload, raw=False)
        seq = event.get("seq")
        if seq is None:
            continue  # a heartbeat
        t = now()
        if received == 0:
            first = t
        received += 1
        if expected is not None and seq != expected:
            gaps += 1
        expected = seq + 1
        if mode != "latency":
            continue
        arrivals.append((seq, t))
        if event["type"] == "node_completed":
            stamped.append(t - event["outputs"]["t"])
            stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
            by_timestamp.append(t - stamp.timestamp())
    last = now()
    print(json.dumps({"received": received, "gaps": gaps, "first": first, "last": last,
                      "stamp_latency": _ms(stamped), "latency_by_timestamp": _ms(by_timestamp),
                      "arrivals": arrivals}),
          flush=True)
    sub.close(0)
    context.term()


def _ms(samples: list[float]) -> dict[str, float] | None:
    if len(samples) < 2:
        return None
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": q[49] * 1e3, "p99": q[98] * 1e3, "min": min(samples) * 1e3,
            "max": max(samples) * 1e3,
            "n": len(samples)}


def spawn(daemon: BenchDaemon, mode: str, count: int) -> subprocess.Popen[str]:
    curve = daemon.curve
    args = [sys.executable, str(SCRIPT), "--daemon-subscriber", daemon.events, mode,
            str(count), str(curve.client_secret) if curve else "",
            str(curve.server_public) if curve else ""]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "live":
        raise RuntimeError("the subscriber process did not go live")
    return proc


def result_of(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    with proc.stdout:
        line = proc.stdout.readline()
    proc.wait(30)
    if not line:
        raise RuntimeError("the subscriber process exited without a result")
    result: dict[str, Any] = json.loads(line)
    return result


# -- the rounds -----------------------------------------------------------------------------

def throughput_round(workdir: Path, curve: CurveKeys | None, executions: int) -> dict[str, Any]:
    with BenchDaemon(workdir, ["bench.workflows:wide"], curve=curve) as daemon:
        expected = executions * WIDE_EVENTS
        proc = spawn(daemon, "rate", expected)
        shares = [executions // 4 + (i < executions % 4) for i in range(4)]

        def submit(share: int) -> None:
            with daemon.client() as control:
                for _ in range(share):
                    control.submit("wide")

        threads = [threading.Thread(target=submit, args=(s,)) for s in shares]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        result = result_of(proc)
    result["expected"] = expected
    result["rate"] = result["received"] / max(result["last"] - result["first"], 1e-9)
    result["lossless"] = result["received"] == expected and result["gaps"] == 0
    return result


def latency_round(workdir: Path, curve: CurveKeys | None, seconds: float) -> dict[str, Any]:
    with BenchDaemon(workdir, ["bench.workflows:stamped"], curve=curve,
                     time_commits=True) as daemon:
        executions = max(2, int(seconds * PACED_RATE / STAMP_EVENTS))
        proc = spawn(daemon, "latency", executions * STAMP_EVENTS)
        interval = STAMP_EVENTS / PACED_RATE
        with daemon.client() as control:
            t0 = time.perf_counter()
            for n in range(executions):
                delay = t0 + n * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)  # the pacing schedule (absolute: no drift)
                control.submit("stamp")
            elapsed = time.perf_counter() - t0
        result = result_of(proc)
    arrivals = result.pop("arrivals")
    result["latency"] = _ms(committed_to_received(daemon.commit_times(), arrivals))
    result["offered_rate"] = executions * STAMP_EVENTS / max(elapsed, 1e-9)
    result["lossless"] = result["received"] == executions * STAMP_EVENTS and not result["gaps"]
    return result


def measure(rounds: int, executions: int, seconds: float) -> dict[str, Any]:
    """Part (b): per round and mode (plain, CURVE), delivered events/s and latency."""
    plain: dict[str, list[float]] = {"rate": [], "p50": [], "p99": [], "stamp_p99": [],
                                     "by_ts": []}
    curved: dict[str, list[float]] = {key: [] for key in plain}
    modes = {False: plain, True: curved}
    offered: list[float] = []
    losses: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tradeloom-bench-stream-") as tmp:
        work = Path(tmp)
        keys = CurveKeys.make(work / "keys")
        for r in range(rounds):
            for curve in (False, True):
                label = f"round{r}-{'curve' if curve else 'plain'}"
                rate = throughput_round(work / f"{label}-rate", keys if curve else None,
                                        executions)
                lat = latency_round(work / f"{label}-lat", keys if curve else None, seconds)
                for name, result in (("throughput", rate), ("latency", lat)):
                    if not result["lossless"]:
                        losses.append(f"LOSS in {label} {name}: received "
                                      f"{result['received']}, gaps {result['gaps']}")
                modes[curve]["rate"].append(rate["rate"])
                if lat["latency"] is not None:
                    modes[curve]["p50"].append(lat["latency"]["p50"])
                    modes[curve]["p99"].append(lat["latency"]["p99"])
                    modes[curve]["stamp_p99"].append(lat["stamp_latency"]["p99"])
                    modes[curve]["by_ts"].append(lat["latency_by_timestamp"]["p50"])
                offered.append(lat["offered_rate"])
    return {"plain": plain, "curve": curved, "offered": offered, "losses": losses,
            "rounds": rounds, "executions": executions, "seconds": seconds}


def figures_of(part: dict[str, Any], bare_rates: list[float] | None) -> list[dict[str, Any]]:
    """Part (b) as report figures (bench/results.py)."""
    from bench.results import figure, paired

    plain, curve = part["plain"], part["curve"]
    out = []
    for name, mode in (("plain", plain), ("CURVE on", curve)):
        out += [figure(f"(b) {name}: events/s delivered", "events/s", mode["rate"]),
                figure(f"(b) {name}: committed -> received p50 at {PACED_RATE:,} events/s",
                       "ms", mode["p50"]),
                figure(f"(b) {name}: committed -> received p99 at {PACED_RATE:,} events/s",
                       "ms", mode["p99"]),
                figure(f"(b) {name}: node return -> received p99 (upper bound)", "ms",
                       mode["stamp_p99"])]
    out += [figure("(b) CURVE on / plain events/s", "x", paired(curve["rate"], plain["rate"])),
            figure("(b) CURVE on / plain latency p99", "x", paired(curve["p99"], plain["p99"])),
            figure("(b) paced rate achieved", "events/s", part["offered"]),
            figure("(b) rounds that lost an event", "rounds", float(len(part["losses"])))]
    if bare_rates:
        out.append(figure("(b) plain daemon delivery / (a) bare pair", "x",
                          paired(plain["rate"], bare_rates)))
    return out


def run(rounds: int, executions: int, seconds: float, bare_rate: float | None) -> bool:
    """Part (b); prints a table; False when an event was lost."""
    part = measure(rounds, executions, seconds)
    for loss in part["losses"]:
        print(loss)
    lossless = not part["losses"]
    modes = {False: part["plain"], True: part["curve"]}
    rates = {curve: mode["rate"] for curve, mode in modes.items()}
    p50 = {curve: mode["p50"] for curve, mode in modes.items()}
    p99 = {curve: mode["p99"] for curve, mode in modes.items()}
    stamp_p99 = {curve: mode["stamp_p99"] for curve, mode in modes.items()}
    by_ts = {curve: mode["by_ts"] for curve, mode in modes.items()}
    offered = part["offered"]
    med = statistics.median
    print(f"\n(b) the daemon under workflow load, an outside subscriber ({rounds} round(s) "
          f"per mode, interleaved; {executions * WIDE_EVENTS:,} events per throughput round, "
          f"{seconds:g} s paced per latency round)\n")
    print("latency: committed -> received p50/p99; node return -> received p99 (an upper "
          "bound);\nthe events' own ms timestamp -> received p50 (a cross-check)\n")
    print(f"{'mode':<12}{'events/s delivered':>20}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'node p99 ms':>13}{'p50 by timestamp ms':>22}")
    for curve in (False, True):
        print(f"{'CURVE on' if curve else 'plain':<12}{med(rates[curve]):>20,.0f}"
              f"{med(p50[curve]):>9.3f}{med(p99[curve]):>9.3f}{med(stamp_p99[curve]):>13.3f}"
              f"{med(by_ts[curve]):>22.3f}")
    ratio_rate = med(c / p for c, p in zip(rates[True], rates[False], strict=True))
    ratio_p99 = med(c / p for c, p in zip(p99[True], p99[False], strict=True))
    print(f"\nCURVE on / plain: throughput {ratio_rate:.2f}x, p99 latency {ratio_p99:.2f}x; "
          f"paced rate achieved: {med(offered):,.0f} events/s (asked {PACED_RATE:,})")
    if bare_rate:
        print(f"plain daemon delivery / bare pyzmq pair of part (a): "
              f"{med(rates[False]) / bare_rate:.2f}x")
    print(f"zero loss: {'yes' if lossless else 'NO'}; target >= {TARGET_RATE:,} events/s: "
          f"{'met' if med(rates[False]) >= TARGET_RATE else 'NOT met'}; target p99 <= "
          f"{TARGET_P99_MS:g} ms at {PACED_RATE:,}/s: "
          f"{'met' if med(p99[False]) <= TARGET_P99_MS else 'NOT met'}")
    return lossless
