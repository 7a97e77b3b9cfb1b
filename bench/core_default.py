"""The default mode of `bench/core.py`: the engine beside the asyncio sequential executor
and the bare pykka ask chain (`bench/baselines.py`), measured in this one process in
interleaved rounds, as ratios.

Only the default mode imports this module, from `bench/core.py`'s `main()`. An A/B worker
never does: its `bench` package is the other tree's (its PYTHONPATH), which may not have
it. Run as a script, `bench/core.py` is `__main__`, so the import of `bench.core` below
loads that file a second time, as a module: it repeats the first load's set-up (sys.path,
logging) harmlessly, and everything here uses that second copy alike.
"""

from __future__ import annotations

import argparse
import gc
import statistics

from bench.baselines import asyncio_latency, asyncio_throughput, pykka_chain_latency
from bench.core import (
    WORKFLOW,
    Counter,
    engine_latency,
    engine_throughput,
    percentiles,
    start_warm_engine,
)


def run_default(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Measure and print; the A/B mode's options are refused, not silently ignored."""
    if args.json or args.a_args or args.b_args or args.fail_on_regression:
        p.error("--json, --a-args, --b-args and --fail-on-regression need --ab or --ab-same")
    rounds = args.rounds or (1 if args.quick else 3)
    latency_n = 500 if args.quick else 2000
    levels = [1, 10, 50, 200, 1000]

    engine, counter, per_run, frozen = start_warm_engine(args, 500, 3000,
                                                         cpu_affinity=args.cpu or [])
    print(f"supervisors={engine.config.daemon.supervisors} "
          f"cpu_affinity={list(engine.config.daemon.cpu_affinity) or 'none'} "
          f"gc_threshold={gc.get_threshold()} gc_frozen={frozen} gc_enabled={gc.isenabled()}\n")
    before_count = counter.count
    engine_runs = 0

    # Latency: rounds of each, interleaved, samples pooled (the machine is shared: what
    # drifts during the run drifts for both).
    e_lat: list[float] = []
    a_lat: list[float] = []
    p_lat: list[float] = []
    for _ in range(rounds):
        e_lat += engine_latency(engine, latency_n)
        engine_runs += latency_n
        a_lat += asyncio_latency(WORKFLOW, Counter(), latency_n)
        p_lat += pykka_chain_latency(latency_n)
    ep, ap, pp = percentiles(e_lat), percentiles(a_lat), percentiles(p_lat)
    print(f"{'latency at concurrency 1':<34}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for name, pct in (("tradeloom engine", ep), ("asyncio sequential executor", ap),
                      ("bare pykka ask chain, 3 actors", pp)):
        print(f"{name:<34}{pct[0] * 1e3:>9.3f}{pct[1] * 1e3:>9.3f}{pct[2] * 1e3:>9.3f}")
    print(f"engine p50 / asyncio p50: {ep[0] / ap[0]:.2f}x   "
          f"engine p50 / pykka-chain p50: {ep[0] / pp[0]:.2f}x\n")

    print(f"{'concurrency':>11}{'engine wf/s':>14}{'asyncio wf/s':>14}{'ratio':>8}"
          f"   (median of {rounds} interleaved rounds; ratio = median of paired ratios)")
    for level in levels:
        total = max(500, level * 2) if args.quick else max(6000, level * 10)
        engine_rates, asyncio_rates = [], []
        for _ in range(rounds):
            engine_rates.append(engine_throughput(engine, level, total))
            engine_runs += total
            asyncio_rates.append(asyncio_throughput(WORKFLOW, Counter(), level, total))
        ratio = statistics.median(e / a for e, a in zip(engine_rates, asyncio_rates,
                                                        strict=True))
        print(f"{level:>11}{statistics.median(engine_rates):>14,.0f}"
              f"{statistics.median(asyncio_rates):>14,.0f}{ratio:>7.2f}x")
    expected = engine_runs * per_run
    delivered = counter.wait_for(before_count + expected) - before_count
    print(f"\nevents delivered to the subscriber: {delivered:,} of {expected:,}; "
          f"seq gaps: {counter.gaps}")
    engine.stop()
    if delivered != expected or counter.gaps:
        raise SystemExit("events were lost")
