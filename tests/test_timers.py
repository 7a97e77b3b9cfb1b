import pytest

from actors import ManualClock
from actors.timers import TimerHeap


def test_due_entries_come_out_earliest_first() -> None:
    clock = ManualClock()
    heap = TimerHeap(clock, alive=lambda entry: True)
    now = clock.monotonic()
    for deadline in (3.0, 1.0, 2.0):
        heap.push(now + deadline, 0, f"t{deadline:g}")
    assert heap.next_delay() is None  # a manual clock only moves on advance()
    assert not heap.has_due()
    clock.advance(2.5)
    assert [target for _, target, _ in heap.pop_due()] == ["t1", "t2"]
    assert len(heap) == 1


def test_dead_timers_are_swept_so_memory_tracks_live_ones() -> None:
    clock = ManualClock()
    live: set[int] = set()
    checks = [0]

    def alive(entry: tuple[object, ...]) -> bool:
        checks[0] += 1
        return entry[3] in live

    heap = TimerHeap(clock, alive=alive)
    for i in range(10_000):
        live.add(i)
        heap.push(clock.monotonic() + 30.0, 0, i)
        if i >= 5:
            live.discard(i - 5)  # every run finishes long before its timeout
    assert len(heap) <= 4096 + 1
    # With many live timers the sweep threshold rises with them, so the total work of
    # sweeping stays linear in the pushes (not a rescan of the heap on every push).
    checks[0] = 0
    for i in range(10_000, 30_000):
        live.add(i)
        heap.push(clock.monotonic() + 30.0, 0, i)
    assert len(heap) >= 20_000
    assert checks[0] < 3 * 20_000


def test_real_clock_reports_time_to_next_deadline() -> None:
    from actors import SystemClock

    clock = SystemClock()
    heap = TimerHeap(clock, alive=lambda entry: True)
    assert heap.next_delay() is None
    heap.push(clock.monotonic() + 10.0, 0, "x")
    delay = heap.next_delay()
    assert delay is not None and 9.0 < delay <= 10.0


@pytest.mark.parametrize("timeout_s", [None, 60.0])  # 60: a deadline timer, unfired
def test_a_finished_execution_and_its_runs_are_freed_as_it_ends(
        timeout_s: float | None) -> None:
    # A node's timeout timer outlives its run until the heap's next sweep (thousands of
    # pushes later). Were it to hold the run, it would hold the run's `upstream` (in a long
    # chain every output before it: 700 MB for an 8,000-node chain, measured) and its
    # execution record. It holds a weak reference (a workflow deadline's timer too); nor
    # does the result hold the record. So refcounting frees them as the execution ends (the
    # cyclic GC is off here to show it), not thousands of executions later, out of cache.
    import gc

    from actors import Engine, Node, Workflow
    from actors.machine import Execution, NodeRun

    chain = Workflow("chain", nodes=[
        Node(f"n{i}", lambda ctx: 1, depends_on=[f"n{i - 1}"] if i else []) for i in range(20)],
        timeout_s=timeout_s)
    engine = Engine.start()
    gc.disable()
    try:
        first = engine.submit(chain)
        assert first.result(timeout=10).status == "completed"
        # The actor loops hold their last message until the next: the second's, now.
        assert engine.submit(chain).result(timeout=10).status == "completed"
        left = [type(o).__name__ for o in gc.get_objects()
                if (type(o) is NodeRun and o.execution_id == first.execution_id)
                or (type(o) is Execution and o.id == first.execution_id)]
        assert left == []
        assert first.result().nodes["n19"] == {"status": "completed", "attempts": 1,
                                               "outputs": 1}
    finally:
        gc.enable()
        engine.stop()
