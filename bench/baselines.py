"""The baselines `bench/core.py` compares the engine against in its default mode.

- the asyncio sequential executor: the design the engine replaces, running the same
  workflow with events to the same kind of subscriber;
- the floor of what actors cost: a bare pykka `ask` chain through three actors.

Only the default mode uses this module (the working tree's `actors`); A/B workers do not.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

import pykka

from actors import NodeContext, Workflow

Subscriber = Callable[[dict[str, Any]], None]


class AsyncioExecutor:
    """Nodes run one after another in topological order; each blocking node function runs
    in a thread pool under asyncio.wait_for (its timeout), events go to the subscriber."""

    def __init__(self, subscriber: Subscriber) -> None:
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


def asyncio_latency(workflow: Workflow, subscriber: Subscriber, n: int) -> list[float]:
    async def main() -> list[float]:
        executor = AsyncioExecutor(subscriber)
        samples = []
        for i in range(n):
            t0 = time.perf_counter()
            await executor.run(workflow, i)
            samples.append(time.perf_counter() - t0)
        executor.pool.shutdown()
        return samples
    return asyncio.run(main())


def asyncio_throughput(workflow: Workflow, subscriber: Subscriber, concurrency: int,
                       total: int) -> float:
    async def main() -> float:
        executor = AsyncioExecutor(subscriber)
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with slots:
                await executor.run(workflow, i)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = time.perf_counter() - t0
        executor.pool.shutdown()
        return total / elapsed
    return asyncio.run(main())


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
