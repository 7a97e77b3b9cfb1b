"""Journal benchmark: committed events/s, commit batch sizes and commit latency under load,
for `[journal] sync = "normal"` vs `"full"`, and the writer's CPU per event and per commit.

Load: a producer thread appends batches of 10 events (one workflow's worth: execution
started, 3 x node started/completed, 2 x progress, completed) under a lock, as the
engine's sequencer does, with a `record_submitted` per workflow, either as fast as the
journal lets it (at most `--window` events appended but not committed, like a pipeline
of in-flight executions) or paced at `--rate` events/s; then waits for the last commit.
Rounds alternate normal/full; medians; ratios full/normal.

CPU micro-measure (process CPU time; the writer's steps called directly, no thread):
  - per event and per commit at 10, 100 and 1,000 events per commit (workflow events
    with their record_submitted: packing, derivation, execution rows, commit);
  - a commit round trip: append 1 event, wait for on_commit (thread hand-offs included).

The floor of one durable hand-off (wall time, p50), the bound on journal-on latency at c=1
(an action waits for its intent's commit, `result()` for the terminal event's: two in
series): a bare writer thread with its own WAL connection commits one 600-byte row and
wakes the thread that queued it; beside it the two thread wake-ups alone, and the
journal's own round trip (`wait_committed` of one event).

    .venv/bin/python bench/journal.py                 # 3 rounds of 200,000 events each
    .venv/bin/python bench/journal.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import collections
import logging
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                    logger_factory=structlog.PrintLoggerFactory(sys.stderr))

from actors.journal import Journal  # noqa: E402

WAIT_S = 120.0


def workflow_events(n: int) -> list[dict[str, Any]]:
    """The 10 events of one 3-node workflow execution (before sequencing)."""
    execution_id = f"exec_bench_{n:08x}"
    head = {"v": 1, "execution_id": execution_id, "correlation_id": execution_id,
            "workflow_id": "bench", "bot_id": "bot_001", "strategy_id": "s1",
            "state": "NORMAL"}
    events = [{**head, "type": "execution_started", "node_count": 3, "inputs": {"x": n}}]
    for node in ("price", "spread", "trade"):
        events.append({**head, "type": "node_started", "node_id": node, "node_name": node,
                       "node_category": "provider", "attempt": 1})
        events.append({**head, "type": "node_completed", "node_id": node, "duration_ms": 0.1,
                       "status": "success", "outputs": {"price": 50_000.0 + n}, "attempt": 1})
    for done in (2, 3):
        events.append({**head, "type": "progress", "nodes_completed": done, "nodes_total": 3,
                       "nodes_in_progress": 3 - done, "eta_ms": 0.0})
    events.append({**head, "type": "execution_completed", "duration_ms": 1.0,
                   "status": "completed", "results": {"trade": {"price": 50_000.0 + n}}})
    return events


class Sequencer:
    """Stamps seq/wseq/timestamp under a lock and appends, like the engine's event sink."""

    def __init__(self, journal: Journal) -> None:
        self.lock = threading.Lock()
        self.journal = journal
        self.seq = journal.recovery.last_seq
        self.wseq = 0

    def emit(self, events: list[dict[str, Any]]) -> int:
        with self.lock:
            for event in events:
                self.seq += 1
                self.wseq += 1
                event["seq"] = self.seq
                event["wseq"] = self.wseq
                event["timestamp"] = "2026-01-01T00:00:00.000Z"
            self.journal.append(events)
            return self.seq


def load_round(sync: str, events: int, window: int, rate: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench_journal_") as data_dir:
        journal = Journal.open(data_dir, sync=sync)
        journal.start(on_commit=lambda seq: None, on_error=lambda exc: print("ERROR", exc))
        sequencer = Sequencer(journal)
        batches = [workflow_events(n) for n in range(max(events // 10, 1))]
        pace = threading.Event()  # never set: wait() is the pacing delay
        cpu0, t0 = time.process_time(), time.perf_counter()
        for n, batch in enumerate(batches):
            journal.record_submitted(batch[0]["execution_id"], "bench", {"x": n}, "bot_001",
                                     "s1", 0, "2026-01-01T00:00:00.000Z")
            last = sequencer.emit(batch)
            if rate > 0:
                ahead = t0 + last / rate - time.perf_counter()
                if ahead > 0:
                    pace.wait(ahead)
            elif last - journal.last_committed_seq() > window:
                journal.wait_committed(last - window // 2, WAIT_S)
        journal.wait_committed(sequencer.seq, WAIT_S)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        stats = journal.stats()
        journal.close()
    total = sequencer.seq
    return {"events_per_s": total / elapsed, "commits_per_s": stats["commits"] / elapsed,
            "batch_avg": stats["batch_avg"], "batch_max": stats["batch_max"],
            "commit_ms_avg": stats["commit_ms_avg"], "commit_ms_max": stats["commit_ms_max"],
            "cpu_us_per_event": cpu / total * 1e6}


def direct_cost(per_commit: int, workflows: int) -> tuple[float, float]:
    """CPU us per event and per commit, the writer's steps called in this thread."""
    with tempfile.TemporaryDirectory(prefix="bench_journal_") as data_dir:
        journal = Journal.open(data_dir, keep_events=None)
        writer, sequencer = journal._writer, Sequencer(journal)
        wf_per_commit = max(per_commit // 10, 1)
        batches = [workflow_events(n) for n in range(workflows)]
        cpu0 = time.process_time()
        for n, batch in enumerate(batches, 1):
            journal.record_submitted(batch[0]["execution_id"], "bench", {"x": n}, "bot_001",
                                     "s1", 0, "2026-01-01T00:00:00.000Z")
            sequencer.emit(batch)
            if n % wf_per_commit == 0:
                writer.write_now([])
        cpu = time.process_time() - cpu0
        journal.close()
    return cpu / sequencer.seq * 1e6, cpu / (workflows / wf_per_commit) * 1e6


def roundtrip_cost(commits: int) -> float:
    with tempfile.TemporaryDirectory(prefix="bench_journal_") as data_dir:
        journal = Journal.open(data_dir)
        journal.start(on_commit=lambda seq: None, on_error=lambda exc: print("ERROR", exc))
        sequencer = Sequencer(journal)
        single = [workflow_events(n)[1] for n in range(commits)]
        cpu0 = time.process_time()
        for event in single:
            journal.wait_committed(sequencer.emit([event]), WAIT_S)
        cpu = time.process_time() - cpu0
        journal.close()
    return cpu / commits * 1e6


def handoff_floor(n: int) -> dict[str, float]:
    """p50 wall us of: a bare durable hand-off, two thread wake-ups alone, the journal's
    commit round trip of one event."""
    def p50_of(hand_off: Any) -> float:
        samples = []
        for _ in range(n):
            latch = threading.Lock()
            latch.acquire()
            started = time.perf_counter()
            hand_off(latch)
            latch.acquire()
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1e6

    def serve(commit: Any) -> tuple[Any, Any]:
        """A thread that commits (or not) and releases each latch queued; (hand_off, stop)."""
        queued: collections.deque[Any] = collections.deque()
        wake = threading.Event()

        def loop() -> None:
            while True:
                wake.wait()
                wake.clear()
                while queued:
                    latch = queued.popleft()
                    if latch is None:
                        return
                    commit()
                    latch.release()
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()

        def hand_off(latch: Any) -> None:
            queued.append(latch)
            wake.set()

        def stop() -> None:
            hand_off(None)
            thread.join(WAIT_S)
        return hand_off, stop

    with tempfile.TemporaryDirectory(prefix="bench_journal_") as data_dir:
        conn = sqlite3.connect(Path(data_dir) / "floor.db", isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, data BLOB)")
        row = b"x" * 600

        def commit() -> None:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO rows(data) VALUES (?)", (row,))
            conn.execute("COMMIT")
        figures = {}
        for name, work in (("durable", commit), ("wakeups", lambda: None)):
            hand_off, stop = serve(work)
            figures[name] = p50_of(hand_off)
            stop()
        conn.close()
        journal = Journal.open(data_dir + "/journal")
        journal.start(on_commit=lambda seq: None, on_error=lambda exc: print("ERROR", exc))
        sequencer = Sequencer(journal)
        samples = []
        for event in (workflow_events(i)[1] for i in range(n)):
            started = time.perf_counter()
            journal.wait_committed(sequencer.emit([event]), WAIT_S)
            samples.append(time.perf_counter() - started)
        journal.close()
        figures["journal"] = statistics.median(samples) * 1e6
    return figures


def measure(events: int, rounds: int, window: int, rate: float) -> dict[str, Any]:
    """Rounds alternating normal/full; per-round figures, the writer's direct CPU costs and
    the commit round trip."""
    results: dict[str, list[dict[str, float]]] = {"normal": [], "full": []}
    for _ in range(rounds):
        for sync in ("normal", "full"):
            results[sync].append(load_round(sync, events, window, rate))
    workflows = max(events // 10, 300)
    direct = {per_commit: direct_cost(per_commit, workflows) for per_commit in (10, 100, 1000)}
    return {"rounds": results, "direct": direct,
            "roundtrip_us": roundtrip_cost(max(events // 100, 100)),
            "floor_us": handoff_floor(max(events // 100, 300))}


def run_for_report(quick: bool) -> dict[str, Any]:
    """Structured results for `python -m bench` (bench/results.py)."""
    from bench.results import figure, paired, result

    events, rounds = (2_000, 1) if quick else (200_000, 3)
    run = measure(events, rounds, 10_000, 0.0)
    normal, full = run["rounds"]["normal"], run["rounds"]["full"]
    figures = []
    for key, unit in (("events_per_s", "events/s"), ("commits_per_s", "commits/s"),
                      ("batch_avg", "events"), ("batch_max", "events"),
                      ("commit_ms_avg", "ms"), ("commit_ms_max", "ms"),
                      ("cpu_us_per_event", "us")):
        figures += [figure(f"sync normal: {key}", unit, [r[key] for r in normal]),
                    figure(f"sync full: {key}", unit, [r[key] for r in full])]
    figures.append(figure("full / normal committed events/s", "x",
                          paired([r["events_per_s"] for r in full],
                                 [r["events_per_s"] for r in normal])))
    for per_commit, (per_event, per_commit_us) in run["direct"].items():
        figures += [figure(f"writer CPU per event at {per_commit} events/commit", "us",
                           per_event),
                    figure(f"writer CPU per commit at {per_commit} events/commit", "us",
                           per_commit_us)]
    figures.append(figure("commit round trip (1 event), CPU", "us", run["roundtrip_us"]))
    floor = run["floor_us"]
    figures += [figure("durable hand-off floor (bare thread + WAL commit), p50 wall", "us",
                       floor["durable"]),
                figure("two thread wake-ups alone, p50 wall", "us", floor["wakeups"]),
                figure("journal commit round trip (1 event), p50 wall", "us",
                       floor["journal"])]
    notes = [f"{events:,} events per round, batches of 10, at most 10,000 uncommitted; "
             "issue 9 asks for these figures, with no target"]
    return result("journal", "Journal", "python bench/journal.py", rounds, figures, [], notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=10_000,
                        help="most events appended but not committed (in-flight work)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="pace the producer at this many events/s (0: as fast as it can)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds = 2_000, 1
    run = measure(args.events, args.rounds, args.window, args.rate)
    results: dict[str, list[dict[str, float]]] = run["rounds"]
    medians = {sync: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
               for sync, rounds in results.items()}
    pacing = f"paced at {args.rate:,.0f} events/s" if args.rate else f"window {args.window:,}"
    print(f"journal load: {args.events:,} events x {args.rounds} rounds, batches of 10, "
          f"{pacing} (medians)")
    print(f"{'metric':<22}{'normal':>14}{'full':>14}{'full/normal':>14}")
    for key in medians["normal"]:
        normal, full = medians["normal"][key], medians["full"][key]
        ratio = full / normal if normal else float("nan")
        print(f"{key:<22}{normal:>14,.2f}{full:>14,.2f}{ratio:>14.2f}")
    print("writer CPU, steps called directly (sync normal):")
    for per_commit, (per_event, per_commit_us) in run["direct"].items():
        print(f"  {per_commit:>5} events/commit: {per_event:7.2f} us/event "
              f"{per_commit_us:10.1f} us/commit")
    print(f"commit round trip (1 event, thread hand-offs): {run['roundtrip_us']:.1f} us CPU")
    floor = run["floor_us"]
    print(f"p50 wall: durable hand-off floor {floor['durable']:.0f} us, thread wake-ups alone "
          f"{floor['wakeups']:.0f} us, journal round trip {floor['journal']:.0f} us")


if __name__ == "__main__":
    main()
