"""Core engine benchmark: provider -> condition -> action, in-process, every event delivered
to a subscriber.

Reports latency p50/p95/p99 at concurrency 1 and workflows/s at concurrency 1, 10, 50, 200
and 1,000, beside the same workflow on a plain asyncio sequential executor (the design this
engine replaces) measured in the same run, as ratios; and, as the floor of what actors
cost, a bare pykka `ask` chain of three actors.

    .venv/bin/python bench/core.py            # full run (about a minute)
    .venv/bin/python bench/core.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

from actors import Config, Engine, Node, NodeContext, Workflow  # noqa: E402

EVENTS_PER_RUN = 10  # execution_started, 3 x (started, completed), 2 x progress, completed


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


class Counter:
    """The subscriber: counts events and checks seq is gapless."""

    def __init__(self) -> None:
        self.count = 0
        self.last_seq = 0
        self.gaps = 0

    def __call__(self, event: dict[str, Any]) -> None:
        self.count += 1
        seq = event.get("seq", self.last_seq + 1)
        if seq != self.last_seq + 1:
            self.gaps += 1
        self.last_seq = seq


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49], q[94], q[98]


# -- the engine -------------------------------------------------------------------------

def engine_latency(engine: Engine, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        result = engine.submit(WORKFLOW).result(timeout=10)
        samples.append(time.perf_counter() - t0)
        assert result.status == "completed", result
    return samples


def engine_throughput(engine: Engine, concurrency: int, total: int) -> float:
    """Closed loop: `concurrency` in flight; each completion submits the next one."""
    done = threading.Event()
    lock = threading.Lock()
    counts = {"submitted": 0, "finished": 0}
    failures = []

    def submit_next() -> None:
        with lock:
            if counts["submitted"] == total:
                return
            counts["submitted"] += 1
        engine.submit(WORKFLOW).add_done_callback(on_done)

    def on_done(handle: Any) -> None:
        result = handle.result(0)
        if result.status != "completed":
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


# -- the asyncio sequential executor (the replaced design) ------------------------------

class AsyncioExecutor:
    """Nodes run one after another in topological order; each blocking node function runs
    in a thread pool under asyncio.wait_for (its timeout), events go to the subscriber."""

    def __init__(self, subscriber: Callable[[dict[str, Any]], None]) -> None:
        self.subscriber = subscriber
        self.seq = 0
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=32)

    def emit(self, event: dict[str, Any]) -> None:
        self.seq += 1
        event["seq"] = self.seq
        event["timestamp"] = time.time()
        self.subscriber(event)

    async def run(self, workflow: Workflow, n: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        execution_id = f"exec_{workflow.id}_{n:08x}"
        head = {"v": 1, "execution_id": execution_id, "workflow_id": workflow.id}
        self.emit({**head, "type": "execution_started"})
        outputs: dict[str, Any] = {}
        for i in workflow.order:
            node = workflow.nodes[i]
            ctx = NodeContext(inputs={}, upstream=dict(outputs), execution_id=execution_id,
                              workflow_id=workflow.id, node_id=node.id, attempt=1)
            self.emit({**head, "type": "node_started", "node_id": node.id})
            t0 = time.perf_counter()
            value = await asyncio.wait_for(loop.run_in_executor(self.pool, node.fn, ctx), 30)
            outputs[node.id] = value
            self.emit({**head, "type": "node_completed", "node_id": node.id, "outputs": value,
                       "duration_ms": (time.perf_counter() - t0) * 1000})
            self.emit({**head, "type": "progress", "nodes_completed": len(outputs)})
        self.emit({**head, "type": "execution_completed", "results": outputs})
        return outputs


def asyncio_latency(n: int) -> list[float]:
    async def main() -> list[float]:
        executor = AsyncioExecutor(Counter())
        samples = []
        for i in range(n):
            t0 = time.perf_counter()
            await executor.run(WORKFLOW, i)
            samples.append(time.perf_counter() - t0)
        executor.pool.shutdown()
        return samples
    return asyncio.run(main())


def asyncio_throughput(concurrency: int, total: int) -> float:
    async def main() -> float:
        executor = AsyncioExecutor(Counter())
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with slots:
                await executor.run(WORKFLOW, i)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = time.perf_counter() - t0
        executor.pool.shutdown()
        return total / elapsed
    return asyncio.run(main())


# -- the floor: a bare pykka ask chain of three actors ----------------------------------

class Echo(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return message


def pykka_chain_latency(n: int) -> list[float]:
    actors = [Echo.start() for _ in range(3)]
    samples = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            for ref in actors:
                ref.ask(i)
            samples.append(time.perf_counter() - t0)
    finally:
        for ref in actors:
            ref.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (smoke test)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved engine/asyncio rounds per level (default 3)")
    parser.add_argument("--supervisors", type=int, default=None)
    parser.add_argument("--cpu", type=int, action="append", default=None, metavar="ID",
                        help="pin the process to this CPU ([daemon] cpu_affinity); the "
                             "asyncio baseline runs pinned too")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    latency_n = 500 if args.quick else 2000
    levels = [1, 10, 50, 200, 1000]

    daemon: dict[str, Any] = {"max_concurrent_executions": 1000}
    if args.supervisors:
        daemon["supervisors"] = args.supervisors
    if args.cpu:
        daemon["cpu_affinity"] = args.cpu
    engine = Engine.start(Config.from_dict({"daemon": daemon}))
    print(f"supervisors={engine.config.daemon.supervisors} "
          f"cpu_affinity={list(engine.config.daemon.cpu_affinity) or 'none'}\n")
    counter = Counter()
    engine.subscribe(counter)
    engine_latency(engine, 500)  # warm the node actor pool
    engine_throughput(engine, 1000, 3000)
    gc.collect()
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
        a_lat += asyncio_latency(latency_n)
        p_lat += pykka_chain_latency(latency_n)
    ep, ap, pp = percentiles(e_lat), percentiles(a_lat), percentiles(p_lat)
    print(f"{'latency at concurrency 1':<34}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for name, p in (("tradeloom engine", ep), ("asyncio sequential executor", ap),
                    ("bare pykka ask chain, 3 actors", pp)):
        print(f"{name:<34}{p[0] * 1e3:>9.3f}{p[1] * 1e3:>9.3f}{p[2] * 1e3:>9.3f}")
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
            asyncio_rates.append(asyncio_throughput(level, total))
        ratio = statistics.median(e / a for e, a in zip(engine_rates, asyncio_rates,
                                                        strict=True))
        print(f"{level:>11}{statistics.median(engine_rates):>14,.0f}"
              f"{statistics.median(asyncio_rates):>14,.0f}{ratio:>7.2f}x")
    delivered = counter.count - before_count
    expected = engine_runs * EVENTS_PER_RUN
    print(f"\nevents delivered to the subscriber: {delivered:,} of {expected:,}; "
          f"seq gaps: {counter.gaps}")
    engine.stop()
    if delivered != expected or counter.gaps:
        raise SystemExit("events were lost")


if __name__ == "__main__":
    main()
