"""`EventLog.copy`, what each subscriber is handed: the wire payload map of the event
(`unpack_lenient(pack(event))`) sharing no container with the log's event or with another
subscriber's copy, whatever the event holds."""

from __future__ import annotations

import decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.eventlog import EventLog
from actors.packing import new_packer, pack, unpack_lenient

SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=8))
ODD = st.decimals(allow_nan=False, allow_infinity=False).map(decimal.Decimal)


def _nested(children: Any) -> Any:
    return (st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=4), children, max_size=3)
            | st.tuples(children, children)
            | st.dictionaries(st.tuples(st.integers(0, 3), st.integers(0, 3)), children,
                              max_size=2))


VALUES = st.recursive(SCALARS | ODD, _nested, max_leaves=8)
EVENTS = st.dictionaries(st.text(min_size=1, max_size=6), VALUES, max_size=8).map(
    lambda extra: {**extra, "type": "node_completed", "seq": 7})


def containers(value: Any) -> list[int]:
    """ids of every dict and list inside `value` (itself included)."""
    found = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.append(id(item))
            stack.extend(item.values())
        elif isinstance(item, list):
            found.append(id(item))
            stack.extend(item)
    return found


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_a_copy_is_the_wire_map_and_shares_no_container(event: dict[str, Any]) -> None:
    log = EventLog()
    copy = log.copy(7, event, new_packer())
    assert copy == unpack_lenient(pack(event))
    assert copy is not event
    assert not set(containers(copy)) & set(containers(event))


@settings(max_examples=100, deadline=None)
@given(EVENTS)
def test_two_subscribers_copies_of_one_event_are_equal_and_apart(event: dict[str, Any]
                                                                 ) -> None:
    log = EventLog()
    subs = [log.subscribe(lambda e: None), log.subscribe(lambda e: None)]
    try:  # two subscriptions: the second copy comes from the packed cache
        first = log.copy(7, event, new_packer())
        second = log.copy(7, event, new_packer())
    finally:
        for sub in subs:
            sub.close()
    assert first == second == unpack_lenient(pack(event))
    assert not set(containers(first)) & set(containers(second))


def test_changing_a_copy_changes_neither_the_event_nor_a_later_copy() -> None:
    event = {"type": "execution_completed", "seq": 3, "results": {"n": {"price": 1.0}},
             "nodes": {"n": {"status": "completed"}}, "status": "completed"}
    log = EventLog()
    subs = [log.subscribe(lambda e: None), log.subscribe(lambda e: None)]
    try:
        first = log.copy(3, event, new_packer())
        first["results"]["n"]["price"] = -1.0
        first["nodes"]["n"] = "hacked"
        first["status"] = "hacked"
        second = log.copy(3, event, new_packer())
    finally:
        for sub in subs:
            sub.close()
    assert event["results"] == second["results"] == {"n": {"price": 1.0}}
    assert event["nodes"] == second["nodes"] == {"n": {"status": "completed"}}
    assert second["status"] == "completed"
