"""Whatever user code does, every execution ends (README): odd return values and odd
exceptions at every node category.

"Every execution ends with exactly one terminal event, whatever user code does: a node
result the engine cannot interpret (a condition result whose truth test raises, an
exception whose `str()` raises) fails that node; an internal error fails the execution with
`error_type: "InternalError"`. User code (nodes, subscriber callbacks, `ctx.risk`) raising
any `BaseException` never stops the engine's actors."

Real engines, one per Hypothesis example (an engine starts and stops in a few ms). Waits
are `result(timeout=10)`; a hang fails the example instead of blocking the suite.
"""

from __future__ import annotations

import decimal
import math
import numbers
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from actors import Config, Engine, ExecutionResult, Node, NodeContext, Workflow
from tests.conftest import EngineFactory, Recorder

TERMINAL = {"execution_completed", "execution_failed", "execution_halted",
            "execution_cancelled"}
CATEGORIES = ("provider", "condition", "action", "transform")
WAIT_S = 10.0


# -- odd values ----------------------------------------------------------------------------

class AmbiguousTruth:
    """Like a numpy bool array or a pandas Series: `if value:` raises."""

    def __bool__(self) -> bool:
        raise ValueError("The truth value of an array with more than one element is "
                         "ambiguous. Use a.any() or a.all()")


class LenRaises:
    """No __bool__; the truth test falls back on a __len__ that raises."""

    def __len__(self) -> int:
        raise TypeError("len() of unsized object")


class EqHashRaise:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("__eq__ raised")

    def __hash__(self) -> int:
        raise RuntimeError("__hash__ raised")


class ReprStrRaise:
    def __repr__(self) -> str:
        raise RuntimeError("__repr__ raised")

    def __str__(self) -> str:
        raise RuntimeError("__str__ raised")


class EverythingRaises(AmbiguousTruth, EqHashRaise, ReprStrRaise):
    """Truth test, ==, hash, repr and str all raise."""


def _cyclic() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"d": value}
    return value


#: Objects built fresh per call (label, factory): the label is what a failure report shows.
ODD_OBJECTS: list[tuple[str, Callable[[], Any]]] = [
    ("AmbiguousTruth", AmbiguousTruth),
    ("LenRaises", LenRaises),
    ("EqHashRaise", EqHashRaise),
    ("ReprStrRaise", ReprStrRaise),
    ("EverythingRaises", EverythingRaises),
    ("dict of odd objects", lambda: {"a": EverythingRaises(), "b": [ReprStrRaise()]}),
    ("cyclic list", _cyclic),
    ("dict nested 300 deep", lambda: _deep(300)),
    ("object()", object),
    ("a class", lambda: AmbiguousTruth),
    ("a lambda", lambda: (lambda: None)),
    ("an iterator", lambda: iter([1, 2])),
    ("a lock", threading.Lock),
    ("NotImplemented", lambda: NotImplemented),
    ("Ellipsis", lambda: ...),
    ("int 10**400", lambda: 10 ** 400),
    ("int -2**1000", lambda: -(2 ** 1000)),
    ("nan", lambda: math.nan),
    ("-inf", lambda: -math.inf),
    ("complex nan", lambda: complex(math.nan, math.inf)),
    ("bytearray", lambda: bytearray(b"\x00\xff")),
    ("memoryview", lambda: memoryview(b"abc")),
    ("frozenset of tuples", lambda: frozenset({(1, 2), (None,)})),
    ("dict with non-str keys", lambda: {1: "a", None: 2, (1, 2): 3, b"k": 4}),
]

plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 128), max_value=2 ** 128)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (st.lists(inner, max_size=3)
                   | st.dictionaries(st.text(max_size=4), inner, max_size=3)
                   | st.sets(st.integers(), max_size=3)),
    max_leaves=8)

odd_values = st.one_of(
    st.sampled_from(ODD_OBJECTS),
    plain_values.map(lambda v: (f"plain {type(v).__name__}", lambda v=v: v)),
)


# -- odd exceptions ------------------------------------------------------------------------

class StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ of the exception raised")


class StrNotAString(Exception):
    def __str__(self) -> str:
        return 42  # type: ignore[return-value]  # noqa: PLE0307 - the point


class ReprAndStrRaise(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ raised")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ raised")


class EqHashRaiseError(Exception):
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("__eq__ raised")

    def __hash__(self) -> int:
        raise RuntimeError("__hash__ raised")


class CustomBaseException(BaseException):
    """Not an Exception: like KeyboardInterrupt, it passes `except Exception`."""


class CustomBaseStrRaises(BaseException):
    def __str__(self) -> str:
        raise RuntimeError("__str__ raised")


#: (label, factory, expected error_type)
ODD_ERRORS: list[tuple[str, Callable[[], BaseException], str]] = [
    ("ValueError", lambda: ValueError("bad"), "ValueError"),
    ("ValueError without args", ValueError, "ValueError"),
    ("ConnectionError", lambda: ConnectionError("down"), "ConnectionError"),
    ("TimeoutError", TimeoutError, "TimeoutError"),
    ("exception with an unprintable arg", lambda: ValueError(ReprStrRaise()), "ValueError"),
    ("StrRaises", StrRaises, "StrRaises"),
    ("StrNotAString", StrNotAString, "StrNotAString"),
    ("ReprAndStrRaise", ReprAndStrRaise, "ReprAndStrRaise"),
    ("EqHashRaiseError", EqHashRaiseError, "EqHashRaiseError"),
    ("a class with an odd name", type("Odd Name!", (Exception,), {}), "Odd Name!"),
    ("StopIteration", StopIteration, "StopIteration"),
    ("RecursionError", lambda: RecursionError("deep"), "RecursionError"),
    ("MemoryError", MemoryError, "MemoryError"),
    ("SystemExit(3)", lambda: SystemExit(3), "SystemExit"),
    ("SystemExit(None)", lambda: SystemExit(None), "SystemExit"),
    ("KeyboardInterrupt", KeyboardInterrupt, "KeyboardInterrupt"),
    ("GeneratorExit", GeneratorExit, "GeneratorExit"),
    ("CustomBaseException", CustomBaseException, "CustomBaseException"),
    ("CustomBaseStrRaises", CustomBaseStrRaises, "CustomBaseStrRaises"),
    ("ExceptionGroup", lambda: ExceptionGroup("many", [ValueError(1), StrRaises()]),
     "ExceptionGroup"),
]


# -- helpers -------------------------------------------------------------------------------

def truth(value: Any) -> bool | None:
    """bool(value), or None when the truth test raises, value is a NaN (a number unequal
    to itself: truthy to Python, but a condition returning it fails with ConditionError), or
    text (any non-empty text reads as true: "False" too)."""
    if isinstance(value, str | bytes | bytearray | memoryview):
        return None
    try:
        if isinstance(value, numbers.Number) and value != value:
            return None
        return bool(value)
    except Exception:  # noqa: BLE001 - that is the point
        return None


def events_of(rec: Recorder, execution_id: str) -> list[dict[str, Any]]:
    return rec.for_execution(execution_id)


def assert_ended_once(rec: Recorder, result: ExecutionResult) -> list[dict[str, Any]]:
    """Exactly one terminal event, it is the execution's last, and it agrees with the
    result."""
    evs = events_of(rec, result.execution_id)
    types = [e["type"] for e in evs]
    assert [t for t in types if t in TERMINAL] == [types[-1]], types
    assert evs[-1]["status"] == result.status, (evs[-1]["status"], result.status)
    assert types[0] == "execution_started", types
    return evs


def assert_usable(engine: Engine) -> None:
    plain = Workflow("plain_after", nodes=[Node("one", lambda ctx: 1),
                                           Node("two", lambda ctx: 2, depends_on=["one"])])
    result = engine.submit(plain).result(timeout=WAIT_S)
    assert (result.status, dict(result.results)) == ("completed", {"one": 1, "two": 2})
    status = engine.status()
    assert status["state"] == "NORMAL"
    assert engine.ref.is_alive()


@pytest.fixture
def fresh_engine() -> Iterator[Callable[[], Engine]]:
    """Engines built inside a Hypothesis example (function-scoped fixtures are not reset
    between examples); all stopped at the end."""
    engines: list[Engine] = []

    def start() -> Engine:
        engine = Engine.start(Config.from_dict({
            "resilience": {"backoff_min_s": 0.0, "backoff_max_s": 0.0}}))
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.stop(timeout=5.0)


def odd_workflow(category: str, fn: Callable[[NodeContext], Any]) -> Workflow:
    """source -> odd (the category under test) -> after."""
    return Workflow(f"odd_{category}", nodes=[
        Node("source", lambda ctx: {"price": 1.0}, category="provider"),
        Node("odd", fn, category=category, depends_on=["source"], max_restarts=0),
        Node("after", lambda ctx: "after", depends_on=["odd"]),
    ])


# -- the property --------------------------------------------------------------------------

outcomes = st.one_of(
    st.tuples(st.just("return"), odd_values),
    st.tuples(st.just("raise"), st.sampled_from(ODD_ERRORS)),
)


# Shrinking is off: a hang costs WAIT_S per try, and the examples are small already (the
# report names the category and the value's or exception's label).
@pytest.mark.timeout(300)
@settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(category=st.sampled_from(CATEGORIES), outcome=outcomes)
def test_odd_outcomes_at_every_node_category_always_end_and_the_engine_stays_usable(
        fresh_engine: Callable[[], Engine], category: str, outcome: tuple[str, Any]) -> None:
    engine = fresh_engine()
    rec = Recorder()
    rec.follow(engine)
    kind, spec = outcome
    if kind == "return":
        _label, factory = spec

        def odd(ctx: NodeContext) -> Any:
            return factory()
    else:
        _label, factory, error_type = spec

        def odd(ctx: NodeContext) -> Any:
            raise factory()

    result = engine.submit(odd_workflow(category, odd)).result(timeout=WAIT_S)
    evs = assert_ended_once(rec, result)
    odd_events = [e for e in evs if e.get("node_id") == "odd" and e["type"] != "progress"]

    if kind == "raise":
        assert (result.status, result.error_type) == ("failed", error_type)
        assert isinstance(result.error, str) and result.error
        failed = [e for e in odd_events if e["type"] == "node_failed"]
        assert len(failed) == 1 and failed[0]["error_type"] == error_type
        assert isinstance(failed[0]["error"], str) and failed[0]["error"]
    elif category == "condition" and truth(factory()) is None:
        # A condition whose result has no truth value (or is NaN): the node fails, clearly.
        assert (result.status, result.error_type) == ("failed", "ConditionError")
        assert [e["type"] for e in odd_events] == ["node_started", "node_failed"]
    else:
        # Outputs are passed through untouched: an odd value is still a value.
        assert (result.status, result.error_type) == ("completed", None)
        assert "odd" in result.results
        after_ran = category != "condition" or truth(factory()) is True
        assert ("after" in result.results) is after_ran

    assert_usable(engine)
    # Nothing of the odd execution was published after its terminal event meanwhile.
    assert_ended_once(rec, result)


# -- specific cases ------------------------------------------------------------------------

@pytest.mark.parametrize("value", [AmbiguousTruth(), LenRaises(), EverythingRaises()],
                         ids=["AmbiguousTruth", "LenRaises", "EverythingRaises"])
def test_a_condition_whose_result_has_no_truth_value_fails_with_condition_error(
        make_engine: EngineFactory, value: Any) -> None:
    engine = make_engine()
    rec = Recorder()
    rec.follow(engine)
    wf = odd_workflow("condition", lambda ctx: value)
    result = engine.submit(wf).result(timeout=WAIT_S)
    assert (result.status, result.error_type) == ("failed", "ConditionError")
    type_name = type(value).__name__
    assert type_name in (result.error or ""), result.error
    evs = assert_ended_once(rec, result)
    (failed,) = [e for e in evs if e["type"] == "node_failed"]
    assert (failed["node_id"], failed["error_type"], failed["final"]) == (
        "odd", "ConditionError", True)
    assert type_name in failed["error"], failed["error"]
    assert [(e["node_id"], e["reason"]) for e in evs if e["type"] == "node_skipped"] == [
        ("after", "upstream_failed")]
    assert result.nodes["odd"]["status"] == "failed"
    assert_usable(engine)


def condition_then_trade(engine: Engine, value: Any) -> tuple[ExecutionResult, threading.Event]:
    """A condition returning `value` before an action: the result (failed with
    ConditionError, checked) and whether the action ran."""
    ran = threading.Event()
    wf = Workflow("odd_condition", nodes=[
        Node("spread", lambda ctx: value, category="condition"),
        Node("trade", lambda ctx: ran.set(), category="action", depends_on=["spread"])])
    result = engine.submit(wf).result(timeout=WAIT_S)
    assert (result.status, result.error_type) == ("failed", "ConditionError")
    return result, ran


class FloatSubclass(float):
    """What a numpy float64 is to Python: a float subclass (numpy is not installed)."""


@pytest.mark.parametrize("value", [
    math.nan, -math.nan, FloatSubclass("nan"), decimal.Decimal("NaN"),
    decimal.Decimal("sNaN"), complex(math.nan, 0.0)],
    ids=["nan", "-nan", "float subclass nan", "Decimal NaN", "Decimal sNaN", "complex nan"])
def test_a_condition_returning_nan_fails_with_condition_error_and_the_action_never_runs(
        make_engine: EngineFactory, value: Any) -> None:
    """`bool(nan)` is True: before, a NaN spread ran the trade."""
    engine = make_engine()
    rec = Recorder()
    rec.follow(engine)
    result, ran = condition_then_trade(engine, value)
    assert type(value).__name__ in (result.error or ""), result.error
    evs = assert_ended_once(rec, result)
    assert [(e["node_id"], e["reason"]) for e in evs if e["type"] == "node_skipped"] == [
        ("trade", "upstream_failed")]
    assert not ran.is_set() and "trade" not in result.results
    assert_usable(engine)


@pytest.mark.parametrize("value", ["False", "no", "0", "", b"False", "true",
                                   bytearray(b"False"), memoryview(b"False")])
def test_a_condition_returning_text_fails_with_condition_error_and_the_action_never_runs(
        make_engine: EngineFactory, value: Any) -> None:
    """Any non-empty text reads as true: a condition returning "False" ran the trade."""
    result, ran = condition_then_trade(make_engine(), value)
    assert "return a bool" in (result.error or ""), result.error
    assert not ran.is_set()


@pytest.mark.parametrize("value", [0.0, 1.5, math.inf, decimal.Decimal(0), 0j, 1, 0])
def test_a_condition_returning_a_number_that_is_not_nan_keeps_its_truth_value(
        make_engine: EngineFactory, value: Any) -> None:
    engine = make_engine()
    wf = odd_workflow("condition", lambda ctx: value)
    result = engine.submit(wf).result(timeout=WAIT_S)
    assert (result.status, "after" in result.results) == ("completed", bool(value))


@pytest.mark.parametrize("error_class", [StrRaises, ReprAndStrRaise, CustomBaseStrRaises])
def test_an_exception_whose_str_raises_fails_the_node_with_a_printable_error(
        make_engine: EngineFactory, error_class: type[BaseException]) -> None:
    engine = make_engine()
    rec = Recorder()
    rec.follow(engine)

    def fail(ctx: NodeContext) -> None:
        raise error_class()

    result = engine.submit(odd_workflow("transform", fail)).result(timeout=WAIT_S)
    name = error_class.__name__
    assert (result.status, result.error_type) == ("failed", name)
    evs = assert_ended_once(rec, result)
    (failed,) = [e for e in evs if e["type"] == "node_failed"]
    assert failed["error_type"] == name
    # e.g. "<unprintable StrRaises>": a string, naming the type.
    assert isinstance(failed["error"], str) and name in failed["error"], failed["error"]
    assert isinstance(result.error, str) and name in result.error, result.error
    assert_usable(engine)


def test_a_cached_provider_keys_inputs_of_mixed_key_types_safely(
        make_engine: EngineFactory) -> None:
    """`inputs` may be any mapping: sorting {1: "a", "b": 2} raises TypeError, which must
    not strand the execution. Preferred (and asserted): the execution completes, and the
    cache never hands one input's output to another."""
    engine = make_engine()
    rec = Recorder()
    rec.follow(engine)
    calls: list[Any] = []

    def price(ctx: NodeContext) -> Any:
        calls.append(ctx.inputs["b"])
        return {"b": ctx.inputs["b"]}

    # The cached provider is not a root: it is dispatched while the supervisor handles the
    # first node's completion.
    wf = Workflow("mixed_keys", nodes=[
        Node("first", lambda ctx: "first", category="provider"),
        Node("price", price, category="provider", depends_on=["first"], cache_ttl_s=60.0),
    ])
    one = engine.submit(wf, inputs={1: "a", "b": 2}).result(timeout=WAIT_S)  # type: ignore[dict-item]
    two = engine.submit(wf, inputs={1: "a", "b": 3}).result(timeout=WAIT_S)  # type: ignore[dict-item]
    again = engine.submit(wf, inputs={1: "a", "b": 2}).result(timeout=WAIT_S)  # type: ignore[dict-item]
    for result, b in [(one, 2), (two, 3), (again, 2)]:
        assert (result.status, result.error_type) == ("completed", None), result.error
        assert result.results["price"] == {"b": b}
        assert_ended_once(rec, result)
    assert calls[:2] == [2, 3]
    assert_usable(engine)


@pytest.mark.parametrize("error_class", [SystemExit, KeyboardInterrupt, GeneratorExit,
                                         CustomBaseException])
def test_a_node_raising_a_base_exception_fails_its_execution_and_stops_no_engine(
        make_engine: EngineFactory, error_class: type[BaseException]) -> None:
    bystander = make_engine()  # registered first: pykka's stop_all would stop it first
    engine = make_engine()
    rec = Recorder()
    rec.follow(engine)

    def fatal(ctx: NodeContext) -> None:
        raise error_class()

    for category in CATEGORIES:
        result = engine.submit(odd_workflow(category, fatal)).result(timeout=WAIT_S)
        assert (result.status, result.error_type) == ("failed", error_class.__name__)
        assert_ended_once(rec, result)
    assert_usable(engine)
    assert_usable(bystander)


@pytest.mark.parametrize("error_class", [SystemExit, KeyboardInterrupt, CustomBaseException])
def test_a_subscriber_raising_a_base_exception_stops_no_engine(
        make_engine: EngineFactory, error_class: type[BaseException]) -> None:
    bystander = make_engine()  # registered first: pykka's stop_all would stop it first
    engine = make_engine()
    rec = Recorder()
    rec.follow(engine)

    def poisoned(event: dict[str, Any]) -> None:
        raise error_class()

    # node_started is published from a node actor, the rest from the supervisor.
    engine.subscribe(poisoned, types={"node_started", "node_completed",
                                      "execution_completed"})
    wf = Workflow("poisoned", nodes=[Node("n", lambda ctx: 1)])
    result = engine.submit(wf).result(timeout=WAIT_S)
    assert (result.status, dict(result.results)) == ("completed", {"n": 1})
    assert_ended_once(rec, result)
    assert_usable(engine)
    assert_usable(bystander)
    assert bystander.submit(wf).result(timeout=WAIT_S).status == "completed"


def test_a_subscriber_raising_system_exit_on_a_risk_event_stops_no_engine(
        make_engine: EngineFactory) -> None:
    """ctx.risk publishes from the kill switch's actor: user code there is contained too."""
    bystander = make_engine()
    engine = make_engine({"emergency": {"limits": [
        {"name": "daily_loss", "kind": "daily_loss", "threshold": 100.0}]}})

    def poisoned(event: dict[str, Any]) -> None:
        raise SystemExit(1)

    engine.subscribe(poisoned, types={"risk_limit_warning", "risk_limit_exceeded"})
    wf = Workflow("risky", nodes=[
        Node("report", lambda ctx: ctx.risk("daily_loss", value=95.0)["limit"])])
    result = engine.submit(wf).result(timeout=WAIT_S)
    assert (result.status, dict(result.results)) == ("completed", {"report": "daily_loss"})
    assert engine.status()["limits"]["daily_loss"]["value"] == 95.0
    assert_usable(engine)
    assert_usable(bystander)
