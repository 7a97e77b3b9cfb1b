"""User code doing odd things through the in-process API, found by an adversarial probe:
each case once stopped a part of the engine that every other execution needs.

- A node output the stream cannot print (an int past Python's 4,300-digit `str()` limit, a
  container whose `items()`/`__iter__` raises, a `__str__` raising SystemExit) killed the
  subscription threads and, with a journal, the journal writer (the engine halted).
- A risk figure whose conversion blocks (a float subclass's `__float__`) was converted
  under the sequencing lock: every execution, every timeout and `halt()` froze with it.
- `engine.stop()` called while another thread's stop was under way (a subscriber callback
  stopping the engine) returned at once, with the actors running and data_dir still locked.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import (
    Config,
    EmergencyState,
    Engine,
    Node,
    NodeContext,
    Workflow,
    WorkflowDefinitionError,
)
from actors.errors import ConfigError
from actors.messages import GetStatus
from actors.packing import pack, unpack
from tests.conftest import EngineFactory, Recorder
from tests.engine_journal_helpers import eventually, journal_config

WAIT_S = 10.0


class ItemsRaise(dict[str, Any]):
    """A mapping whose every way of being read raises (a lazy frame gone bad)."""

    def items(self) -> Any:
        raise ZeroDivisionError("items")

    def __iter__(self) -> Any:
        raise ZeroDivisionError("iter")


class IterRaises(list[Any]):
    def __iter__(self) -> Any:
        raise ZeroDivisionError("iter")


class StrExits:
    def __str__(self) -> str:
        raise SystemExit(3)

    def __repr__(self) -> str:  # a failing test's report shows it
        return "<StrExits>"


#: (label, factory): outputs msgpack cannot take as they are, each built fresh.
UNPRINTABLE: list[tuple[str, Callable[[], Any]]] = [
    ("int past the str() digit limit", lambda: 10 ** 5000),
    ("such an int as a key, negative in a list", lambda: {10 ** 5000: [-(10 ** 5000)]}),
    ("a mapping whose items() raises", lambda: {"frame": ItemsRaise(a=1)}),
    ("a list whose __iter__ raises", lambda: [IterRaises([1])]),
    ("__str__ raising SystemExit", lambda: {"odd": StrExits()}),
]


@pytest.mark.parametrize("journal", [False, True], ids=["memory", "journal"])
@pytest.mark.parametrize(("label", "make"), UNPRINTABLE, ids=[u[0] for u in UNPRINTABLE])
def test_an_output_the_stream_cannot_print_stops_no_sink(
        make_engine: EngineFactory, tmp_path: Path, journal: bool, label: str,
        make: Callable[[], Any]) -> None:
    engine = make_engine(journal_config(tmp_path) if journal else None)
    rec = Recorder().follow(engine)
    odd = Workflow("odd", nodes=[Node("n", lambda ctx: make(), category="provider")])
    plain = Workflow("plain", nodes=[Node("p", lambda ctx: 1)])
    first = engine.submit(odd).result(timeout=WAIT_S)
    second = engine.submit(plain).result(timeout=WAIT_S)  # the sinks still deliver
    assert (first.status, second.status) == ("completed", "completed"), label
    assert rec.types(first.execution_id)[-1] == "execution_completed"
    assert rec.types(second.execution_id)[-1] == "execution_completed"
    assert engine.state is EmergencyState.NORMAL  # the journal writer did not die
    if journal:
        record = engine.execution(first.execution_id)
        assert record is not None and record["status"] == "completed"


def test_an_int_past_the_digit_limit_travels_as_its_exact_hex() -> None:
    big = 7 ** 6000
    assert unpack(pack({"big": big})) == {"big": hex(big)}


#: Leaves by name: Hypothesis cannot show an int past the digit limit in its report.
LEAVES: dict[str, Any] = {"big": 10 ** 5000, "big negative": -(10 ** 4400), "2**64": 2 ** 64,
                          "float": 1.5, "str": "x", "bytes": b"b", "none": None}
KINDS = ("items raise", "iter raises", "str exits")


def build(tree: Any) -> Any:
    """The value a tree of names stands for (`("odd", kind, subtree)`: an odd container)."""
    if isinstance(tree, str):
        return LEAVES[tree]
    if isinstance(tree, tuple):
        _, kind, inner = tree
        value = build(inner)
        if kind == "items raise":
            return ItemsRaise(v=value)
        if kind == "iter raises":
            return IterRaises([value])
        return {"v": value, "odd": StrExits()}
    if isinstance(tree, list):
        return [build(item) for item in tree]
    return {key: build(item) for key, item in tree.items()}


odd_trees = st.recursive(
    st.sampled_from(sorted(LEAVES)),
    lambda inner: (st.lists(inner, max_size=3)
                   | st.dictionaries(st.text(max_size=3), inner, max_size=3)
                   | st.tuples(st.just("odd"), st.sampled_from(KINDS), inner)),
    max_leaves=10)


@settings(max_examples=60, deadline=None)
@given(tree=odd_trees)
def test_pack_never_raises_and_reads_back(tree: Any) -> None:
    unpack(pack({"outputs": build(tree)}))


def halt_within(engine: Engine, seconds: float) -> dict[str, Any]:
    """`engine.halt()`'s reply if it came within `seconds` (from another thread: a halt
    held up must fail the test, not hang it), else {}."""
    halted: dict[str, Any] = {}
    halter = threading.Thread(target=lambda: halted.update(engine.halt("halt_within")),
                              daemon=True)
    halter.start()
    halter.join(seconds)
    return halted


class BlockingFigure(float):
    """A risk figure whose conversion waits for the test: user code the kill switch must
    never run under its lock."""

    release = threading.Event()
    entered = threading.Event()

    def __float__(self) -> float:
        BlockingFigure.entered.set()
        BlockingFigure.release.wait(WAIT_S)
        return 1.0


def test_a_risk_figure_whose_conversion_blocks_freezes_nothing_else(
        make_engine: EngineFactory) -> None:
    engine = make_engine({"emergency": {"limits": [
        {"name": "loss", "kind": "daily_loss", "threshold": 100.0, "auto_halt": True}]}})
    BlockingFigure.release.clear()
    BlockingFigure.entered.clear()

    def report(ctx: NodeContext) -> Any:
        return ctx.risk("loss", value=BlockingFigure(1.0))

    stuck = engine.submit(Workflow("reporter", nodes=[
        Node("r", report, timeout_s=0.2, max_restarts=0)]))
    try:
        assert BlockingFigure.entered.wait(WAIT_S)
        other = engine.submit(Workflow("other", nodes=[Node("x", lambda ctx: 1)]))
        assert other.result(timeout=2.0).status == "completed"
        assert stuck.result(timeout=2.0).error_type == "NodeTimeout"  # its timer still fired
        assert halt_within(engine, 2.0) == {"state": "HALT", "previous_state": "NORMAL"}
    finally:
        BlockingFigure.release.set()
    assert engine.status()["limits"]["loss"]["value"] == 0.0  # its update came too late


def test_a_stop_while_a_callback_s_stop_is_under_way_returns_once_stopped(
        tmp_path: Path) -> None:
    config = Config.from_dict(journal_config(tmp_path))
    engine = Engine.start(config)
    slow_reader = threading.Event()

    def stopper(event: dict[str, Any]) -> None:
        if event["type"] == "execution_completed":
            engine.stop()

    def slow(event: dict[str, Any]) -> None:
        if event["type"] == "execution_completed":
            slow_reader.wait(WAIT_S)  # the callback's stop waits to drain this one

    try:
        engine.subscribe(stopper)
        engine.subscribe(slow)
        engine.submit(Workflow("w", nodes=[Node("n", lambda ctx: 1)]))
        eventually(lambda: engine._stopped, what="the callback's stop under way")
        main_stop = threading.Thread(target=engine.stop, daemon=True)
        main_stop.start()
        main_stop.join(0.2)
        assert main_stop.is_alive(), "returned while the other stop was still under way"
        slow_reader.set()
        main_stop.join(WAIT_S)
        assert not main_stop.is_alive()
        assert not engine.ref.is_alive()
        Engine.start(config).stop()  # data_dir was released
    finally:
        slow_reader.set()
        engine.stop()


def test_a_done_callback_stopping_the_engine_during_a_stop_does_not_hold_it_up(
        engine: Engine) -> None:
    """The stop cancels the execution, whose done callback runs on the supervisor's
    thread: were its stop() to wait for the first, the first would wait for the
    supervisor until its timeouts (10 s)."""
    go = threading.Event()
    handle = engine.submit(Workflow("w", nodes=[Node("n", lambda ctx: go.wait(WAIT_S))]))
    handle.add_done_callback(lambda h: engine.stop())
    eventually(lambda: engine.status()["running"] == 1, what="the execution running")
    try:
        stopper = threading.Thread(target=engine.stop, daemon=True)
        stopper.start()
        stopper.join(2.0)
        assert not stopper.is_alive()
        assert handle.result(timeout=WAIT_S).status == "cancelled"
    finally:
        go.set()


# -- odd definitions: a WorkflowDefinitionError naming the node, never another error -------

class CallableWithRaisingGetattr:
    """A callable object that answers every attribute lookup with an error."""

    def __call__(self, ctx: NodeContext) -> int:
        return 1

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no attribute {name}")


class NumberName:
    __name__ = 5

    def __call__(self, ctx: NodeContext) -> int:
        return 1


ODD_OPTIONS = [("timeout_s", 10 ** 400), ("timeout_s", 10 ** 5000),
               ("restart_within_s", -(10 ** 400)), ("backoff_max_s", 10 ** 400),
               ("depends_on", None), ("depends_on", 5), ("restart_on", 5), ("name", 5),
               ("name", b"n")]


@pytest.mark.parametrize(("option", "value"), ODD_OPTIONS,
                         ids=[f"{o}-{i}" for i, (o, _) in enumerate(ODD_OPTIONS)])
def test_an_odd_node_option_is_a_definition_error_naming_the_node(option: str,
                                                                  value: Any) -> None:
    with pytest.raises(WorkflowDefinitionError, match=option) as exc:
        Node("odd", lambda ctx: 1, **{option: value})
    assert exc.value.node_id == "odd"


@pytest.mark.parametrize("timeout_s", [10 ** 400, -(10 ** 5000)], ids=["big", "huge"])
def test_a_workflow_timeout_past_the_float_range_is_a_definition_error(timeout_s: int) -> None:
    with pytest.raises(WorkflowDefinitionError, match="timeout_s"):
        Workflow("w", nodes=[Node("a", lambda ctx: 1)], timeout_s=timeout_s)


def test_one_exception_type_as_restart_on_is_taken_as_that_type() -> None:
    assert Node("a", lambda ctx: 1, restart_on=ValueError).restart_on == (ValueError,)


def test_odd_callables_are_named_with_strings_and_run(make_engine: EngineFactory) -> None:
    """Events carry `node_name` as a string (a `__name__` that is not one falls back on the
    id); a callable whose attribute lookups raise is still a node."""
    engine = make_engine()
    rec = Recorder().follow(engine, types={"node_started"})
    flow = Workflow("odd_fns", nodes=[Node("ga", CallableWithRaisingGetattr()),
                                      Node("num", NumberName())])
    result = engine.submit(flow).result(timeout=WAIT_S)
    assert (result.status, dict(result.results)) == ("completed", {"ga": 1, "num": 1})
    names = {e["node_id"]: e["node_name"] for e in rec.for_execution(result.execution_id)}
    assert names == {"ga": "ga", "num": "num"}


@pytest.mark.parametrize("message", ["halt", None, {"op": "halt"}], ids=repr)
def test_the_root_actor_refuses_what_is_no_message_naming_it(engine: Engine,
                                                             message: Any) -> None:
    """pykka's default answers an unknown message with None: a typo'd message looked like a
    success."""
    with pytest.raises(TypeError, match=type(message).__name__):
        engine.ref.ask(message, timeout=WAIT_S)
    engine.ref.tell(message)  # logged, and the actor stays
    status = engine.ref.ask(GetStatus(), block=True, timeout=WAIT_S)
    assert status["state"] == "NORMAL"


@pytest.mark.parametrize("config", [
    {"emergency": {"limits": [{"name": "x", "kind": "custom", "threshold": 10 ** 5000}]}},
    {"emergency": {"limits": [{"name": "x", "kind": 10 ** 5000, "threshold": 1.0}]}},
    {"resilience": {"timeout_s": -(10 ** 5000)}},
    {"daemon": {"data_dir": 10 ** 5000}},
    {"daemon": {"data_dir": "journal\x00dir"}},  # TOML can say "\u0000"
], ids=["threshold", "kind", "timeout_s", "data_dir-int", "data_dir-nul"])
def test_an_odd_config_value_is_a_config_error_naming_its_key(config: dict[str, Any]) -> None:
    """An int past 4,300 digits has no repr (a bare ValueError came out of the message); a
    NUL in data_dir came out of Engine.start as a bare ValueError."""
    section = next(iter(config))
    key = next(iter(config[section])) if section != "emergency" else "emergency.limits[0]"
    with pytest.raises(ConfigError, match=re.escape(key)):
        Config.from_dict(config)


def test_a_done_callback_waiting_for_another_execution_does_not_stall_its_supervisor(
        engine: Engine) -> None:
    flow = Workflow("chained", nodes=[Node("n", lambda ctx: 1)])
    seen: list[Any] = []
    called = threading.Event()

    def chain(handle: Any) -> None:
        try:
            seen.append(engine.submit(flow).result(timeout=1.0).status)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assert
            seen.append(repr(exc))
        called.set()

    go = threading.Event()
    first = engine.submit(Workflow("first", nodes=[Node("n", lambda ctx: go.wait(WAIT_S))]))
    first.add_done_callback(chain)  # registered before it ends: not run in this thread
    go.set()
    assert called.wait(WAIT_S)
    assert seen == ["completed"]


class SlowStr:
    """An output whose string form (what msgpack's fallback asks for) takes its time."""

    release = threading.Event()

    def __str__(self) -> str:
        SlowStr.release.wait(WAIT_S)
        return "slow"


def test_a_slow_str_in_a_node_output_does_not_hold_up_a_halt(make_engine: EngineFactory,
                                                             tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path))
    SlowStr.release.clear()
    try:
        returned = threading.Event()

        def slow_output(ctx: NodeContext) -> Any:
            returned.set()
            return {"x": SlowStr()}

        engine.submit(Workflow("w", nodes=[Node("a", slow_output)]))
        assert returned.wait(WAIT_S)  # its node_completed is queued ahead of the HALT
        assert halt_within(engine, 1.0) == {"state": "HALT", "previous_state": "NORMAL"}
    finally:
        SlowStr.release.set()


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"config": {}}, "config"), ({"config": {"daemon": {"data_dir": "x"}}}, "config"),
    ({"config": 5}, "config"), ({"clock": 5}, "clock"), ({"clock": object()}, "clock"),
], ids=["empty-dict", "dict", "int", "clock-int", "clock-object"])
def test_engine_start_refuses_what_is_no_config_or_clock_naming_it(kwargs: dict[str, Any],
                                                                   named: str) -> None:
    """An empty dict passed as config was taken for no config, any other an AttributeError;
    so was a clock that is none."""
    with pytest.raises(TypeError, match=named):
        Engine.start(**kwargs).stop()


@pytest.mark.parametrize("execution_id", [None, 123, b"exec_x_00000000", ["exec"]])
def test_cancel_of_a_non_str_id_is_a_type_error_naming_it(
        make_engine: EngineFactory, execution_id: Any) -> None:
    """(123 was "no live or recent execution 123", None a TypeError: one rule now.)"""
    engine = make_engine()
    with pytest.raises(TypeError, match="execution_id must be a str"):
        engine.cancel(execution_id)
