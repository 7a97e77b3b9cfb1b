"""User code the engine's own threads could be made to run: a metaclass's `__name__` or
`__instancecheck__`, a late action value's `__repr__`, an exception's text under structlog's
default console renderer, a cached output a caller changes. Each once stranded an
execution, stalled or killed a supervisor, or leaked one execution's data into the next."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from actors import Node, NodeContext, Workflow, guards
from actors.errors import failure_fields, type_name
from tests.conftest import EngineFactory, Recorder
from tests.engine_journal_helpers import captured_logs, eventually
from tests.journal_helpers import REPO

WAIT_S = 10.0


class NameRaises(type):
    @property
    def __name__(cls) -> str:  # type: ignore[override]
        raise KeyboardInterrupt("a metaclass's __name__")


class NameIsAnInt(type):
    @property
    def __name__(cls) -> Any:  # type: ignore[override]
        return 12345


class CheckRaises(type):
    def __instancecheck__(cls, instance: Any) -> bool:
        raise KeyboardInterrupt("a metaclass's __instancecheck__")

    def __subclasscheck__(cls, subclass: Any) -> bool:
        raise KeyboardInterrupt("a metaclass's __subclasscheck__")


class Unnamed(Exception, metaclass=NameRaises):
    pass


class Numbered(Exception, metaclass=NameIsAnInt):
    pass


class Unchecked(Exception, metaclass=CheckRaises):
    pass


def raising(error: BaseException) -> Workflow:
    def fail(ctx: NodeContext) -> None:
        raise error

    return Workflow(f"raises_{type_name(error)}", nodes=[Node("p", fail, timeout_s=5.0)])


def plain() -> Workflow:
    return Workflow("plain", nodes=[Node("a", lambda ctx: 1)])


def test_a_class_name_that_raises_fails_the_node_and_frees_the_slot(
        make_engine: EngineFactory) -> None:
    """The supervisor read `type(error).__name__`: the KeyboardInterrupt got past its
    `except Exception`, and the execution never ended, holding its running slot."""
    engine = make_engine({"daemon": {"max_concurrent_executions": 1}})
    result = engine.submit(raising(Unnamed("n"))).result(timeout=WAIT_S)
    assert (result.status, result.error_type, result.error) == ("failed", "Unnamed", "n")
    assert engine.submit(plain()).result(timeout=WAIT_S).status == "completed"


def test_an_error_type_on_the_wire_is_always_the_class_name_text(
        make_engine: EngineFactory) -> None:
    engine = make_engine()
    recorder = Recorder().follow(engine)
    result = engine.submit(raising(Numbered("n"))).result(timeout=WAIT_S)
    assert result.error_type == "Numbered"
    [failed] = recorder.of_type("node_failed")
    [ended] = recorder.of_type("execution_failed")
    assert failed["error_type"] == ended["error_type"] == "Numbered"


def test_a_restart_on_class_whose_instancecheck_raises_restarts_nothing(
        make_engine: EngineFactory) -> None:
    engine = make_engine()
    calls: list[int] = []

    def fail(ctx: NodeContext) -> None:
        calls.append(ctx.attempt)
        raise ValueError("v")

    wf = Workflow("odd_restart_on", nodes=[
        Node("p", fail, max_restarts=3, restart_on=(Unchecked,), backoff_min_s=0.0,
             backoff_max_s=0.0)])
    result = engine.submit(wf).result(timeout=WAIT_S)
    assert (result.status, result.error_type) == ("failed", "ValueError")
    assert calls == [1]
    assert engine.submit(plain()).result(timeout=WAIT_S).status == "completed"


def test_an_exceptions_own_class_property_is_never_read_on_a_supervisor_thread(
        make_engine: EngineFactory) -> None:
    """`isinstance(error, restart_on)` read `error.__class__` (a property: user code) on
    the supervisor's thread; one that blocked held up every execution and the halt."""
    engine = make_engine()
    readers: list[str] = []

    class Odd(Exception):
        @property  # type: ignore[misc]
        def __class__(self) -> type:
            readers.append(threading.current_thread().name)
            return Odd

    result = engine.submit(raising(Odd("o"))).result(timeout=WAIT_S)
    assert (result.status, result.error_type) == ("failed", "Odd")
    assert not [name for name in readers if "Supervisor" in name], readers


def test_a_late_action_value_is_never_repr_on_a_supervisor_thread(
        make_engine: EngineFactory) -> None:
    """Its `repr()` was taken for the log line on the supervisor's thread: one that took
    8 s held up every other execution and the halt's acknowledgement."""
    engine = make_engine()
    reprs: list[str] = []
    returned = threading.Event()

    class Order:
        def __repr__(self) -> str:
            reprs.append(threading.current_thread().name)
            return "Order()"

    def place(ctx: NodeContext) -> dict[str, Any]:
        ctx.cancelled.wait(WAIT_S)  # the timeout cancels it; it returns late after all
        returned.set()
        return {"order": Order()}

    wf = Workflow("late", nodes=[Node("order", place, category="action", timeout_s=0.2)])
    with captured_logs() as logs:
        result = engine.submit(wf).result(timeout=WAIT_S)
        assert result.error_type == "NodeTimeout"
        assert returned.wait(WAIT_S)
        eventually(lambda: any(e["event"] == "late_action_result" for e in logs), WAIT_S,
                   "the late result logged")
    [late] = [e for e in logs if e["event"] == "late_action_result"]
    assert "Order()" in late["value"]  # its form, made on the node's thread
    assert not [name for name in reprs if "Supervisor" in name], reprs


def test_a_cached_output_a_caller_changes_is_not_the_next_executions(
        make_engine: EngineFactory) -> None:
    engine = make_engine()
    calls: list[int] = []

    def price(ctx: NodeContext) -> dict[str, float]:
        calls.append(1)
        return {"bid": 100.0}

    wf = Workflow("cached", nodes=[
        Node("price", price, category="provider", cache_ttl_s=60.0),
        Node("trade", lambda ctx: {"at": ctx.upstream["price"]["bid"]}, depends_on=["price"]),
    ])
    first = engine.submit(wf).result(timeout=WAIT_S)
    first.results["price"]["bid"] = 1.0  # a caller's own change to what it was handed
    second = engine.submit(wf).result(timeout=WAIT_S)
    assert calls == [1]  # the second came from the cache
    assert second.results["trade"] == {"at": 100.0}
    assert second.results["price"] == {"bid": 100.0}
    second.results["price"]["bid"] = 2.0
    third = engine.submit(wf).result(timeout=WAIT_S)
    assert third.results["trade"] == {"at": 100.0} and calls == [1]


def test_an_output_too_slow_to_copy_per_hit_is_not_cached(
        make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every hit copies the output on the supervisor's thread: one that took longer to
    copy than MAX_CACHE_COPY_S (here: any) is not kept, and the provider runs each time."""
    monkeypatch.setattr(guards, "MAX_CACHE_COPY_S", 0.0)
    monkeypatch.setattr(guards, "_NOT_KEPT_TOLD", set())
    engine = make_engine()
    calls: list[int] = []

    def book(ctx: NodeContext) -> dict[str, Any]:
        calls.append(1)
        return {"bids": [[100.0, 1.0]]}

    wf = Workflow("books", nodes=[Node("book", book, category="provider", cache_ttl_s=60.0)])
    with captured_logs() as logs:
        for _ in range(2):
            assert engine.submit(wf).result(timeout=WAIT_S).status == "completed"
    assert calls == [1, 1]
    assert [e["why"] for e in logs if e["event"] == "cache_output_not_kept"] == [
        "too big to copy per hit"]  # once per node, not once per run


def test_failure_fields_take_user_code_in_an_error_without_raising() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise KeyboardInterrupt("its __str__")

    fields = failure_fields(Unprintable())
    assert fields["error_type"] == "Unprintable"
    assert fields["error"] == "<unprintable Unprintable>"
    assert fields["traceback"]  # (some text: traceback's own fallback, or ours)
    assert failure_fields(Unnamed("n"))["error_type"] == "Unnamed"


# Run in a child: structlog as an embedding application finds it (never configured, the
# console renderer with rich tracebacks showing each frame's locals). A node's exception
# whose `__class__` raises, and a late action value whose `__repr__` raises
# KeyboardInterrupt, once ended the supervisor's thread: every later execution hung.
_DEFAULT_LOGGING_CHILD = """
import sys
import threading
from actors import Engine, Node, Workflow

def say(*words):  # (to a file of its own: structlog's default lines share stdout)
    with open(sys.argv[1], "a") as out:
        out.write(" ".join(map(str, words)) + "\\n")

class ClassRaises(Exception):
    @property
    def __class__(self):
        raise RuntimeError("its __class__")

class Interrupting:
    def __repr__(self):
        raise KeyboardInterrupt("its __repr__")

def fail(ctx):
    raise ClassRaises("c")

def late(ctx):
    ctx.cancelled.wait(10)
    return Interrupting()

engine = Engine.start()
first = engine.submit(Workflow("odd", nodes=[Node("p", fail, max_restarts=1)]))
say("first", first.result(timeout=10).status)
slow = engine.submit(Workflow("late", nodes=[
    Node("order", late, category="action", timeout_s=0.2)]))
say("late", slow.result(timeout=10).error_type)
for i in range(3):
    ok = engine.submit(Workflow("plain", nodes=[Node("a", lambda ctx: 1)]))
    say("plain", ok.result(timeout=10).status)
engine.stop()
say("stopped", [t.name for t in threading.enumerate() if "Supervisor" in t.name])
"""


def test_the_engine_survives_user_code_in_errors_under_default_logging(
        tmp_path: Path) -> None:
    said_file = tmp_path / "said.txt"
    proc = subprocess.run([sys.executable, "-c", _DEFAULT_LOGGING_CHILD, str(said_file)],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = said_file.read_text().splitlines()
    assert said == [
        "first failed", "late NodeTimeout", "plain completed", "plain completed",
        "plain completed", "stopped []"], proc.stderr[-3000:]
    assert "Exception in thread" not in proc.stderr, proc.stderr[-3000:]
