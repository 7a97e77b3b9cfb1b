"""The node-actor pool: it grows for blocked nodes and stays small for quick ones."""

import sys
import threading

from actors import Engine, Node, NodeContext, Workflow
from tests.conftest import EngineFactory


def blocked_io() -> tuple[Workflow, threading.Event, threading.Semaphore]:
    """A one-node workflow whose node blocks (as on exchange I/O) until `release` is set
    (20 s at most); `inside` is released as each run gets inside its function."""
    release = threading.Event()
    inside = threading.Semaphore(0)

    def blocked(ctx: NodeContext) -> int:
        inside.release()
        release.wait(20)
        return 1

    return Workflow("blocked", nodes=[Node("io", blocked, category="provider")]), release, inside


def test_blocked_nodes_get_actors_until_every_execution_is_inside(
        make_engine: EngineFactory) -> None:
    engine: Engine = make_engine({"daemon": {"max_concurrent_executions": 400,
                                             "node_actors": 500}})
    wf, release, inside = blocked_io()
    handles = [engine.submit(wf) for _ in range(400)]
    try:
        for _ in range(400):  # every one of them is inside its function at the same time
            assert inside.acquire(timeout=10)
    finally:
        release.set()
    assert {h.result(timeout=10).status for h in handles} == {"completed"}


def test_quick_nodes_do_not_grow_the_pool_past_its_core(make_engine: EngineFactory) -> None:
    """README `[daemon] node_actors`: the pool keeps 16 (every one is busy at once here) and
    grows past that only for runs seen inside their function for longer than BLOCKED_S
    (10 ms). A quick node's run lasts microseconds, but a forced GIL switch in its middle
    on an overloaded machine can leave it waiting for the GIL that long, looking blocked
    (seen once in 45 runs with six CPU burners on two cores). With forced switches pushed
    out of reach, no quick run can be seen inside, and the bound is exact."""
    engine = make_engine({"daemon": {"max_concurrent_executions": 1000}})
    wf = Workflow("quick", nodes=[Node("a", lambda ctx: 1),
                                  Node("b", lambda ctx: 2, depends_on=["a"])])
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)  # threads still switch whenever one blocks
    try:
        handles = [engine.submit(wf) for _ in range(3000)]
        assert {h.result(timeout=30).status for h in handles} == {"completed"}
    finally:
        sys.setswitchinterval(interval)
    (stats,) = engine.supervisor_stats()
    assert (stats["node_actors"], stats["node_actors_started"]) == (16, 16)
