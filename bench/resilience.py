"""Resilience overhead benchmark: what timeouts, breakers and restart policies cost on the
happy path.

The same provider -> condition -> action workflow (trivial node functions) is submitted
through one engine in two forms:

  (a) plain    - no per-node resilience options (engine defaults only)
  (b) guarded  - every node with timeout_s, a breaker key and restart options
                 (max_restarts, restart_within_s, backoff_min_s/max_s, restart_on; the
                 action is idempotent so it may restart), plus a workflow timeout_s

Rounds of (a) and (b) are interleaved in the same run (AB BA AB ..., so drift hits both
alike), at concurrency 1 (sequential submit + result) and at concurrency 50 (50 in flight,
kept topped up from `handle.add_done_callback` releasing a semaphore). Reported: the median
over rounds of throughput and latency, and the ratio (b)/(a) of time per execution: the
median of the back-to-back pairs' ratios (the ratio of the medians beside it). Target:
<= 1.15x. Process CPU time per execution (all threads) is reported too: on a shared, busy
machine wall time swings with other processes' load, CPU time much less.

Note that (a) is not "resilience off": every node run still gets a timeout timer from the
engine-wide default; (b) adds breaker admission/recording, per-node policies and the
workflow deadline timer.

    .venv/bin/python bench/resilience.py            # full run (about half a minute)
    .venv/bin/python bench/resilience.py --quick    # smoke run (a few seconds)
    .venv/bin/python bench/resilience.py --verbose  # and print every round
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

from actors import Config, Engine, Node, Workflow  # noqa: E402
from actors.execution import ExecutionHandle  # noqa: E402
from bench.core import action, condition, provider  # noqa: E402 - the same node functions

TARGET = 1.15
_perf = time.perf_counter
_cpu = time.process_time


PLAIN = Workflow("res_plain", nodes=[
    Node("provider", provider, category="provider"),
    Node("condition", condition, category="condition", depends_on=["provider"]),
    Node("action", action, category="action", depends_on=["condition"]),
])

GUARDED = Workflow("res_guarded", timeout_s=10.0, nodes=[
    Node("provider", provider, category="provider", timeout_s=2.0, breaker="venue_a",
         max_restarts=3, restart_within_s=30.0, backoff_min_s=0.05, backoff_max_s=2.0,
         restart_on=(ConnectionError, TimeoutError)),
    Node("condition", condition, category="condition", depends_on=["provider"],
         timeout_s=1.0, breaker="venue_a", max_restarts=1, restart_within_s=30.0,
         backoff_min_s=0.01, backoff_max_s=0.5, restart_on=(ConnectionError,)),
    Node("action", action, category="action", depends_on=["condition"], timeout_s=5.0,
         breaker="venue_b", idempotent=True, max_restarts=2, restart_within_s=60.0,
         backoff_min_s=0.1, backoff_max_s=5.0, restart_on=(ConnectionError, TimeoutError)),
])


@dataclass
class Round:
    throughput: float      # executions per second
    per_exec_ms: float     # wall time per execution (1 / throughput)
    p50_ms: float          # latency, submit -> result
    p99_ms: float
    cpu_ms: float          # process CPU time (all threads) per execution


def _summarise(n: int, elapsed: float, cpu: float, latencies: list[float]) -> Round:
    latencies.sort()
    return Round(throughput=n / elapsed, per_exec_ms=elapsed / n * 1000.0,
                 p50_ms=latencies[len(latencies) // 2] * 1000.0,
                 p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000.0,
                 cpu_ms=cpu / n * 1000.0)


def run_sequential(engine: Engine, wf: Workflow, n: int) -> Round:
    latencies: list[float] = []
    submit = engine.submit
    cpu_start = _cpu()
    t_start = _perf()
    for _ in range(n):
        t0 = _perf()
        result = submit(wf).result(timeout=10)
        latencies.append(_perf() - t0)
        if result.status != "completed":
            raise RuntimeError(f"execution {result.execution_id} ended {result.status}: "
                               f"{result.error_type} {result.error}")
    return _summarise(n, _perf() - t_start, _cpu() - cpu_start, latencies)


def run_concurrent(engine: Engine, wf: Workflow, n: int, in_flight: int) -> Round:
    slots = threading.BoundedSemaphore(in_flight)
    all_done = threading.Event()
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    remaining = [n]

    def finished(handle: ExecutionHandle, t0: float) -> None:
        latencies.append(_perf() - t0)
        result = handle.result(timeout=0)
        if result.status != "completed":
            failures.append(f"{result.execution_id}: {result.status} {result.error_type}")
        slots.release()
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                all_done.set()

    submit = engine.submit
    cpu_start = _cpu()
    t_start = _perf()
    for _ in range(n):
        if not slots.acquire(timeout=10):
            raise RuntimeError("no execution finished within 10 s")
        t0 = _perf()
        submit(wf).add_done_callback(functools.partial(finished, t0=t0))
    if not all_done.wait(timeout=30):
        raise RuntimeError(f"{remaining[0]} executions still running after 30 s")
    elapsed = _perf() - t_start
    cpu = _cpu() - cpu_start
    if failures:
        raise RuntimeError(f"{len(failures)} executions did not complete, e.g. {failures[0]}")
    return _summarise(n, elapsed, cpu, latencies)


def measure(engine: Engine, wf: Workflow, concurrency: int, n: int) -> Round:
    gc.collect()
    if concurrency == 1:
        return run_sequential(engine, wf, n)
    return run_concurrent(engine, wf, n, concurrency)


def median_round(rounds: list[Round]) -> Round:
    return Round(throughput=statistics.median(r.throughput for r in rounds),
                 per_exec_ms=statistics.median(r.per_exec_ms for r in rounds),
                 p50_ms=statistics.median(r.p50_ms for r in rounds),
                 p99_ms=statistics.median(r.p99_ms for r in rounds),
                 cpu_ms=statistics.median(r.cpu_ms for r in rounds))


def run_rounds(sizes: dict[int, int], rounds: int, verbose: bool = False
               ) -> tuple[dict[tuple[int, str], list[Round]], dict[str, str]]:
    """Interleaved rounds of (a) and (b) at each concurrency: the rounds by (concurrency,
    form), and the breakers' states at the end."""
    engine = Engine.start(Config())
    forms = {"a": PLAIN, "b": GUARDED}
    results: dict[tuple[int, str], list[Round]] = {}
    try:
        for concurrency, n in sizes.items():
            for wf in forms.values():  # warm-up: node actors, policies, breakers
                measure(engine, wf, concurrency, max(100, n // 5))
            for r in range(rounds):
                order = "ab" if r % 2 == 0 else "ba"
                for form in order:
                    round_ = measure(engine, forms[form], concurrency, n)
                    results.setdefault((concurrency, form), []).append(round_)
                    if verbose:
                        print(f"  conc {concurrency:>2} round {r + 1} ({form}): "
                              f"{round_.throughput:>8,.0f}/s  {round_.per_exec_ms:.3f} ms/exec  "
                              f"p50 {round_.p50_ms:.3f} ms  cpu {round_.cpu_ms:.3f} ms/exec")
        breakers: dict[str, str] = engine.status()["breakers"]
    finally:
        engine.stop()
    return results, breakers


def run_for_report(quick: bool) -> dict[str, Any]:
    """Structured results for `python -m bench` (bench/results.py)."""
    from bench.results import figure, paired, result, target

    rounds = 1 if quick else 7
    sizes = {1: 200, 50: 500} if quick else {1: 1500, 50: 4000}
    results, breakers = run_rounds(sizes, rounds)
    figures, targets = [], []
    for concurrency in sizes:
        a, b = results[(concurrency, "a")], results[(concurrency, "b")]
        figures += [figure(f"(a) plain exec/s, c={concurrency}", "exec/s",
                           [r.throughput for r in a]),
                    figure(f"(b) guarded exec/s, c={concurrency}", "exec/s",
                           [r.throughput for r in b]),
                    figure(f"(b)/(a) time per execution, c={concurrency}", "x",
                           paired([r.per_exec_ms for r in b], [r.per_exec_ms for r in a])),
                    figure(f"(b)/(a) CPU per execution, c={concurrency}", "x",
                           paired([r.cpu_ms for r in b], [r.cpu_ms for r in a]))]
        targets.append(target(3, f"resilience overhead <= {TARGET:.2f}x at c={concurrency}",
                              f"(b)/(a) time per execution, c={concurrency}", "<=", TARGET))
    notes = [f"breakers not all closed at the end: {breakers}"] if any(
        state != "closed" for state in breakers.values()) else []
    return result("resilience", "Resilience overhead", "python bench/resilience.py", rounds,
                  figures, targets, notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per form and concurrency (default 7, quick 3)")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    sizes = {1: 300, 50: 1000} if args.quick else {1: 1500, 50: 4000}
    results, breakers = run_rounds(sizes, rounds, args.verbose)

    print(f"resilience overhead: provider -> condition -> action, {rounds} interleaved "
          f"rounds per form{' (quick)' if args.quick else ''}")
    print("(a) plain: engine defaults only   (b) guarded: timeout_s, breaker, restart "
          "options on every node + workflow timeout_s")
    print()
    header = (f"{'conc':>4}  {'form':<10} {'n/round':>7}  {'exec/s':>9}  {'ms/exec':>8}  "
              f"{'p50 ms':>7}  {'p99 ms':>7}  {'cpu ms/exec':>11}")
    print(header)
    print("-" * len(header))
    ratios: dict[int, tuple[float, float, float, float]] = {}
    for concurrency, n in sizes.items():
        a, b = results[(concurrency, "a")], results[(concurrency, "b")]
        med = {"a": median_round(a), "b": median_round(b)}
        for form, label in (("a", "(a) plain"), ("b", "(b) guard")):
            m = med[form]
            print(f"{concurrency:>4}  {label:<10} {n:>7}  {m.throughput:>9,.0f}  "
                  f"{m.per_exec_ms:>8.3f}  {m.p50_ms:>7.3f}  {m.p99_ms:>7.3f}  {m.cpu_ms:>11.3f}")
        # Rounds of (a) and (b) run back to back: the median of their paired ratios is the
        # figure least moved by load from elsewhere on the machine.
        paired = statistics.median(
            rb.per_exec_ms / ra.per_exec_ms for ra, rb in zip(a, b, strict=True))
        cpu_paired = statistics.median(rb.cpu_ms / ra.cpu_ms for ra, rb in zip(a, b, strict=True))
        ratios[concurrency] = (paired, med["b"].per_exec_ms / med["a"].per_exec_ms,
                               med["b"].p50_ms / med["a"].p50_ms, cpu_paired)
    print()
    worst = 0.0
    for concurrency, (paired, of_medians, p50_ratio, cpu_ratio) in ratios.items():
        worst = max(worst, paired)
        verdict = "OK" if paired <= TARGET else "OVER TARGET"
        print(f"RATIO (b)/(a) time per execution, concurrency {concurrency:>2}: {paired:.3f}x "
              f"[{verdict}, target <= {TARGET:.2f}x]")
        print(f"      ratio of medians {of_medians:.3f}x, p50 latency {p50_ratio:.3f}x, "
              f"CPU time per execution {cpu_ratio:.3f}x")
    print(f"worst time ratio: {worst:.3f}x -> {'PASS' if worst <= TARGET else 'FAIL'} "
          f"(target <= {TARGET:.2f}x)")
    if any(state != "closed" for state in breakers.values()):
        print(f"warning: breakers not all closed at the end: {breakers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
