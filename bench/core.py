"""Core engine benchmark: provider -> condition -> action, in-process, every event delivered
to a subscriber.

Default mode: latency p50/p95/p99 at concurrency 1 and workflows/s at concurrency 1, 10,
50, 200 and 1,000, beside the same workflow on a plain asyncio sequential executor (the
design this engine replaces) measured in the same run, as ratios; and, as the floor of what
actors cost, a bare pykka `ask` chain of three actors.

A/B mode (`--ab REV`): the engine at git revision REV (A, checked out into a temporary git
worktree) against the working tree's engine (B), in interleaved rounds (AB, BA, AB, ...) so
drift on a shared machine hits both alike. Each measurement is a fresh worker process
(this same file, run with `--worker` and PYTHONPATH set to one tree), so only the `actors`
package differs. Per metric: medians over rounds, min-max spread, B/A ratios. Verdict:
a regression when, on latency p50, wf/s at c=50 or at c=1000, B's median is worse than
A's worst round. GC us/wf is wall time inside collections (gc.callbacks). `--ab-same`
measures the working tree on both sides, to A/B worker options such as GC settings.

    .venv/bin/python bench/core.py                     # default mode (about a minute)
    .venv/bin/python bench/core.py --quick             # smoke run
    .venv/bin/python bench/core.py --ab main           # main vs this tree, 5 rounds
    .venv/bin/python bench/core.py --ab main --quick   # smoke run (CI)
    .venv/bin/python bench/core.py --ab-same --b-args "--gc-freeze --gc-threshold 50000,20,100"
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
# An A/B worker (always started with --worker first) must import the `actors` of the tree
# on its PYTHONPATH, not this file's. Its `bench` is that tree's too (maybe an older one),
# so the worker's code stays in this file; only the other modes import from `bench`.
if sys.argv[1:2] != ["--worker"]:
    sys.path.insert(0, str(ROOT))
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                    logger_factory=structlog.PrintLoggerFactory(sys.stderr))

# Workers use only API every revision has: Engine.start, Config.from_dict, Workflow, Node,
# engine.subscribe, handle.result and handle.add_done_callback.
from actors import Config, Engine, Node, Workflow  # noqa: E402

if TYPE_CHECKING:
    from actors import NodeContext


def provider(ctx: NodeContext) -> dict[str, float]:
    return {"price": 50_000.0}


def condition(ctx: NodeContext) -> bool:
    return bool(ctx.upstream["provider"]["price"] > 10.0)


def action(ctx: NodeContext) -> dict[str, str]:
    return {"order": ctx.idempotency_key}


WORKFLOW = Workflow("bench", nodes=[
    Node("provider", provider, category="provider"),
    Node("condition", condition, category="condition", depends_on=["provider"]),
    Node("action", action, category="action", depends_on=["condition"]),
])
AB_LEVELS = (50, 1000)


class Counter:
    """The subscriber: counts events and checks seq is gapless.

    How many events one execution emits is measured (`events_per_run`), not assumed, so an
    engine revision that adds an event type still checks out in A/B mode.
    """

    def __init__(self) -> None:
        self.count = 0
        self.last_seq = 0
        self.gaps = 0
        #: Events per execution id, kept only while `events_per_run` measures.
        self.per_execution: dict[str, list[int]] | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        self.count += 1
        seq = event.get("seq", self.last_seq + 1)
        if seq != self.last_seq + 1:
            self.gaps += 1
        self.last_seq = seq
        if self.per_execution is not None:
            seen = self.per_execution.setdefault(event.get("execution_id", ""), [0, 0])
            seen[0] += 1
            seen[1] |= event.get("type") == "execution_completed"

    def events_per_run(self, engine: Engine) -> int:
        self.per_execution = {}
        execution_id = engine.submit(WORKFLOW).result(timeout=10).execution_id
        # Delivery may trail result() on a revision whose subscribers are cursors.
        deadline = time.monotonic() + 10
        while not self.per_execution.get(execution_id, [0, 0])[1]:
            if time.monotonic() > deadline:
                raise RuntimeError("the subscriber never saw execution_completed")
            time.sleep(0.001)
        count = self.per_execution[execution_id][0]
        self.per_execution = None
        return count

    def wait_for(self, count: int, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.count < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.count


class GcTimer:
    """Wall time spent in the cyclic GC, and collections per generation, via gc.callbacks.

    A collection holds the GIL, so this is time no engine thread runs Python."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.longest = 0.0
        self.collections = [0, 0, 0]
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            pause = time.perf_counter() - self._t0
            self.seconds += pause
            self.longest = max(self.longest, pause)
            self.collections[info["generation"]] += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def completed(result: Any) -> bool:
    return str(getattr(result.status, "value", result.status)) == "completed"


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49], q[94], q[98]


def engine_latency(engine: Engine, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        result = engine.submit(WORKFLOW).result(timeout=10)
        samples.append(time.perf_counter() - t0)
        assert completed(result), result
    return samples


def engine_throughput(engine: Engine, concurrency: int, total: int,
                      workflow: Workflow | str = WORKFLOW) -> float:
    """Closed loop: `concurrency` in flight; each completion submits the next one.
    Raises if any execution did not complete."""
    done = threading.Event()
    lock = threading.Lock()
    counts = {"submitted": 0, "finished": 0}
    failures = []

    def submit_next() -> None:
        with lock:
            if counts["submitted"] == total:
                return
            counts["submitted"] += 1
        engine.submit(workflow).add_done_callback(on_done)

    def on_done(handle: Any) -> None:
        result = handle.result(0)
        if not completed(result):
            failures.append(result)
        with lock:
            counts["finished"] += 1
            if counts["finished"] == total:
                done.set()
        submit_next()

    t0 = time.perf_counter()
    for _ in range(concurrency):
        submit_next()
    if not done.wait(120):
        raise RuntimeError("engine throughput run did not finish")
    elapsed = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"{len(failures)} failed: {failures[0]}")
    return total / elapsed


# -- start-up and GC options (the default mode applies them to its whole process) -------

def gc_threshold(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not G0[,G1[,G2]] integers: {text!r}") from None
    if not 1 <= len(values) <= 3 or min(values) < 0:
        raise argparse.ArgumentTypeError(f"need 1-3 integers >= 0, not {text!r}")
    return values


def start_warm_engine(args: argparse.Namespace, warm_latency: int, warm_total: int, *,
                      cpu_affinity: list[int] | None = None) -> tuple[Engine, Counter, int, int]:
    """Start an engine with a counting subscriber, warm its node actor pool, then apply the
    GC options; returns (engine, counter, events per run, objects frozen)."""
    if args.gc_threshold:
        gc.set_threshold(*args.gc_threshold)
    daemon: dict[str, Any] = {"max_concurrent_executions": 1000}
    if args.supervisors:
        daemon["supervisors"] = args.supervisors
    if cpu_affinity:
        daemon["cpu_affinity"] = cpu_affinity
    raw: dict[str, Any] = {"daemon": daemon}
    if getattr(args, "journal", "off") != "off":  # a fresh journal in a temporary data_dir
        daemon["data_dir"] = tempfile.mkdtemp(prefix="tradeloom-bench-")
        raw["journal"] = {"sync": args.journal}
    engine = Engine.start(Config.from_dict(raw))
    counter = Counter()
    engine.subscribe(counter)
    per_run = counter.events_per_run(engine)
    engine_latency(engine, warm_latency)
    engine_throughput(engine, 1000, warm_total)
    gc.collect()
    if args.gc_freeze:
        gc.freeze()
    if args.gc_disable:
        gc.disable()
    return engine, counter, per_run, gc.get_freeze_count()


# -- A/B worker: one measurement of whichever `actors` is on PYTHONPATH, one JSON line -----

@dataclass(frozen=True)
class Sizes:
    warm_latency: int
    warm_total: int
    latency_n: int
    totals: dict[int, int]


FULL = Sizes(warm_latency=500, warm_total=3000, latency_n=2000,
             totals={level: max(6000, level * 10) for level in AB_LEVELS})
QUICK = Sizes(warm_latency=100, warm_total=1000, latency_n=300,
              totals={level: max(1000, level * 2) for level in AB_LEVELS})


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    import actors

    where = Path(actors.__file__).resolve().parent
    if args.expect_actors and where != Path(args.expect_actors).resolve():
        raise SystemExit(f"worker imported {where}, expected {args.expect_actors}")
    if args.cpu:
        os.sched_setaffinity(0, args.cpu)  # before any thread: engine threads inherit it
    sizes = QUICK if args.quick else FULL
    engine, counter, per_run, frozen = start_warm_engine(args, sizes.warm_latency,
                                                         sizes.warm_total)
    before, runs = counter.count, 0
    metrics: dict[str, float] = {}
    by_generation: dict[str, list[int]] = {}
    with GcTimer() as timer:
        samples = engine_latency(engine, sizes.latency_n)
    runs += sizes.latency_n
    p50, _p95, p99 = percentiles(samples)
    metrics |= {"latency_p50_ms": p50 * 1e3, "latency_p99_ms": p99 * 1e3,
                "gc_us_per_wf_c1": timer.seconds / sizes.latency_n * 1e6}
    by_generation["c1"] = timer.collections
    for level, total in sizes.totals.items():
        cpu0 = time.process_time()
        with GcTimer() as timer:
            metrics[f"wf_s_c{level}"] = engine_throughput(engine, level, total)
        runs += total
        metrics[f"cpu_us_per_wf_c{level}"] = (time.process_time() - cpu0) / total * 1e6
        metrics[f"gc_us_per_wf_c{level}"] = timer.seconds / total * 1e6
        metrics[f"gc_collections_c{level}"] = sum(timer.collections)
        metrics[f"gc_longest_ms_c{level}"] = timer.longest * 1e3
        by_generation[f"c{level}"] = timer.collections
    expected = before + runs * per_run
    delivered = counter.wait_for(expected)
    engine.stop()
    if getattr(args, "journal", "off") != "off":
        shutil.rmtree(engine.config.daemon.data_dir, ignore_errors=True)
    if delivered != expected or counter.gaps:
        raise SystemExit(f"events were lost: {delivered - before:,} of "
                         f"{expected - before:,} delivered, {counter.gaps} seq gaps")
    return {"actors": str(where), "metrics": metrics, "events_per_run": per_run,
            "gc": {"threshold": list(gc.get_threshold()), "frozen": frozen,
                   "enabled": gc.isenabled(), "collections_by_generation": by_generation}}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (smoke test, CI); A/B: 2 rounds unless --rounds")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds (default: 3; A/B 5)")
    ab = p.add_argument_group("A/B mode")
    ab.add_argument("--ab", metavar="REV",
                    help="A = the engine at git revision REV (a temporary worktree), "
                         "B = the working tree")
    ab.add_argument("--ab-same", action="store_true",
                    help="A = B = the working tree (to compare --a-args/--b-args)")
    ab.add_argument("--a-args", default="", metavar="ARGS",
                    help="extra worker options for A only, one string")
    ab.add_argument("--b-args", default="", metavar="ARGS",
                    help="extra worker options for B only, e.g. \"--gc-freeze\"")
    ab.add_argument("--json", action="store_true",
                    help="print the summary as JSON (progress still goes to stderr)")
    ab.add_argument("--fail-on-regression", action="store_true",
                    help="exit 1 if B regresses beyond A's spread")
    work = p.add_argument_group("worker options (both sides in A/B mode; the whole process "
                                "in the default mode)")
    work.add_argument("--cpu", type=int, action="append", default=None, metavar="ID",
                      help="pin to this CPU (repeatable); default mode via "
                           "[daemon] cpu_affinity, the asyncio baseline runs pinned too")
    work.add_argument("--supervisors", type=int, default=None)
    work.add_argument("--journal", choices=["off", "normal", "full"], default="off",
                      help="run the engine with a journal in a temporary data_dir (e.g. "
                           "--ab-same --b-args '--journal normal': journal on vs off)")
    work.add_argument("--gc-threshold", type=gc_threshold, default=None, metavar="G0[,G1,G2]",
                      help="gc.set_threshold(...) before the engine starts")
    work.add_argument("--gc-freeze", action="store_true",
                      help="gc.collect() then gc.freeze() after start-up and warm-up")
    work.add_argument("--gc-disable", action="store_true",
                      help="gc.disable() after warm-up (an upper bound of what GC costs)")
    internal = p.add_argument_group("internal")
    internal.add_argument("--worker", action="store_true",
                          help="run one A/B measurement against the `actors` on "
                               "PYTHONPATH; print one JSON line")
    internal.add_argument("--expect-actors", metavar="DIR", help=argparse.SUPPRESS)
    return p


def main() -> None:
    p = parser()
    argv = sys.argv[1:]
    if argv[:1] != ["--worker"]:  # a worker imports nothing from `bench`: see the top
        from bench.ab import glue_side_args

        argv = glue_side_args(argv)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)))
        return
    if args.ab is not None or args.ab_same:
        from bench.ab import run_ab

        raise SystemExit(run_ab(p, args))
    from bench.core_default import run_default

    run_default(p, args)


if __name__ == "__main__":
    main()
