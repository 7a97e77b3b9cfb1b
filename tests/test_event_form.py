"""Node outputs and submit inputs take their event form (`actors.packing.event_form`) in
the thread that produced them: what a user object's `__str__` or `items()` costs is paid
there, never in the journal's writer (which `halt()` waits on) or a subscription's thread.
Events carry that form; `result.results` and downstream nodes keep the objects."""

from __future__ import annotations

import decimal
import threading
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Engine, Node, NodeContext, Workflow
from actors.packing import event_form, pack, unpack_lenient
from tests.conftest import EngineFactory, Recorder
from tests.engine_journal_helpers import journal_config

WAIT_S = 10.0


class Shown:
    """A user object msgpack cannot carry: events carry its string form."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class Blocking:
    """A user object whose string form waits for the test."""

    entered = threading.Event()
    release = threading.Event()

    def __str__(self) -> str:
        Blocking.entered.set()
        Blocking.release.wait(WAIT_S)
        return "blocking"


def _view(data: bytes) -> memoryview:
    return memoryview(data)


INT64 = st.integers(-(2**63), 2**63 - 1)
scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
           | st.text(max_size=4) | st.binary(max_size=4))
odd = (st.decimals(allow_nan=False, allow_infinity=False, places=2)
       | st.text(max_size=3).map(Shown) | st.frozensets(st.integers(), max_size=2)
       # msgpack carries these as bin, like bytes
       | st.binary(max_size=4).map(bytearray)
       | st.binary(max_size=4).map(_view))
values = st.recursive(
    scalars | odd,
    lambda inner: (st.lists(inner, max_size=3) | st.tuples(inner, inner)
                   | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
                   # (A tuple key holding an int past 64 bits reads back as text
                   # either way, quoted differently: not a case worth a rule.)
                   | st.dictionaries(st.tuples(INT64, INT64), inner, max_size=2)),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(value=values)
def test_the_event_form_reads_back_as_the_value_itself_would(value: Any) -> None:
    """Events used to carry the object and be packed later; carrying its event form must
    not change what a subscriber, the journal or the wire reads back."""
    assert unpack_lenient(pack(event_form(value))) == unpack_lenient(pack(value))


@settings(max_examples=200, deadline=None)
@given(value=st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                          | st.tuples(inner) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3), max_leaves=12))
def test_a_value_msgpack_packs_as_it_is_is_carried_as_it_is(value: Any) -> None:
    """No copy, no walk beyond the type check for the common output (the hot path)."""
    assert event_form(value) is value


def test_a_cycle_and_a_dict_subclass_take_a_plain_form() -> None:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    form = event_form(looped)
    assert form is not looped and isinstance(form["self"], dict)

    class Ordered(dict[str, Any]):
        def items(self) -> Any:
            raise RuntimeError("a subclass msgpack would call into")

    assert event_form(Ordered(a=1)) == "{'a': 1}"


def test_events_carry_the_event_form_results_keep_the_objects(
        engine: Engine, recorder: Recorder) -> None:
    price = decimal.Decimal("50000.25")
    tag = Shown("tag-1")
    seen_downstream: list[Any] = []

    def provider(ctx: NodeContext) -> dict[str, Any]:
        return {"price": price, "tag": tag, "sides": frozenset({"buy"})}

    def transform(ctx: NodeContext) -> int:
        seen_downstream.append(ctx.upstream["p"]["price"])
        return 1

    result = engine.submit(Workflow("forms", nodes=[  # plain, then odd, then plain again
        Node("a", lambda ctx: {"n": 1}, category="provider"),
        Node("p", provider, category="provider", depends_on=["a"]),
        Node("t", transform, depends_on=["p"]),
    ]), inputs={"limit": decimal.Decimal("1.5")}).result(5)
    assert result.status == "completed"
    # The objects themselves (in the caller's own copy of the dict), not their event form.
    assert result.results["p"]["price"] is price and result.results["p"]["tag"] is tag
    assert seen_downstream == [price] and seen_downstream[0] is price

    events = recorder.for_execution(result.execution_id)
    completed = next(e for e in events if e["type"] == "node_completed" and e["node_id"] == "p")
    assert completed["outputs"] == {"price": "50000.25", "tag": "tag-1", "sides": ["buy"]}
    started = next(e for e in events if e["type"] == "execution_started")
    assert started["inputs"] == {"limit": "1.5"}
    terminal = events[-1]
    assert terminal["type"] == "execution_completed"
    assert terminal["results"] == {
        "a": {"n": 1}, "p": {"price": "50000.25", "tag": "tag-1", "sides": ["buy"]}, "t": 1}


def test_a_slow_str_in_submit_inputs_holds_up_the_submitter_not_a_halt(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path))
    Blocking.entered.clear()
    Blocking.release.clear()
    flow = Workflow("w", nodes=[Node("a", lambda ctx: 1)])
    try:
        submitter = threading.Thread(
            target=lambda: engine.submit(flow, inputs={"x": Blocking()}), daemon=True)
        submitter.start()
        assert Blocking.entered.wait(WAIT_S), "its event form is made in the submitter"
        replies: list[dict[str, Any]] = []
        halter = threading.Thread(target=lambda: replies.append(engine.halt("now")),
                                  daemon=True)
        halter.start()
        halter.join(WAIT_S / 2)  # a deadline, not a pause: it returns as soon as halted
        assert replies == [{"state": "HALT", "previous_state": "NORMAL"}]
    finally:
        Blocking.release.set()
