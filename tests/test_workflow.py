"""Workflow definitions (README): a workflow that is not a DAG, names an unknown
dependency, has duplicate ids, a bad category or a bad id is refused when the `Workflow`
(or its `Node`) is built, with a `WorkflowDefinitionError` naming the node.

These tests need no engine: the point is that a bad definition never gets as far as a submit.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from actors import Node, NodeContext, Workflow, WorkflowDefinitionError
from actors import closure as closure_module
from actors.errors import TradeloomError


def noop(ctx: NodeContext) -> None:
    return None


def n(node_id: str, *deps: str, **options: Any) -> Node:
    return Node(node_id, noop, depends_on=list(deps), **options)


def assert_names(exc: pytest.ExceptionInfo[WorkflowDefinitionError], node_id: str) -> None:
    """The error names the node: in its message, and as `node_id` for programs."""
    assert node_id in str(exc.value), str(exc.value)
    assert exc.value.node_id == node_id


# -- valid definitions ---------------------------------------------------------------------

def test_valid_dag_is_built_with_its_nodes_in_order() -> None:
    nodes = [n("a"), n("b", "a"), n("c", "a"), n("d", "b", "c")]
    wf = Workflow("diamond", nodes=nodes)
    assert wf.id == "diamond"
    assert [node.id for node in wf.nodes] == ["a", "b", "c", "d"]
    assert wf.nodes[3].depends_on == ("b", "c")


def test_depends_on_accepts_a_single_string() -> None:
    wf = Workflow("single", nodes=[n("a"), Node("b", noop, depends_on="a")])
    assert wf.nodes[1].depends_on == ("a",)


def test_node_defaults() -> None:
    node = Node("x", noop)
    assert node.category == "transform"
    assert node.depends_on == ()
    assert node.fn is noop


@pytest.mark.parametrize("category", ["provider", "condition", "action", "transform"])
def test_every_contract_category_is_accepted(category: str) -> None:
    assert Node("x", noop, category=category).category == category


@pytest.mark.parametrize("node_id", ["a", "A.b-c_9", "x" * 128, "0", "price.binance-spot_1"])
def test_ids_matching_the_contract_pattern_are_accepted(node_id: str) -> None:
    wf = Workflow(node_id, nodes=[Node(node_id, noop)])
    assert wf.id == node_id
    assert wf.nodes[0].id == node_id


# -- not a DAG -----------------------------------------------------------------------------

def test_two_node_cycle_is_refused_naming_a_node_on_it() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        Workflow("loop", nodes=[n("a", "b"), n("b", "a")])
    assert exc.value.node_id in {"a", "b"}
    assert repr(exc.value.node_id) in str(exc.value)


def test_three_node_cycle_is_refused() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        Workflow("loop3", nodes=[n("root"), n("a", "root", "c"), n("b", "a"), n("c", "b")])
    assert exc.value.node_id in {"a", "b", "c"}
    assert repr(exc.value.node_id) in str(exc.value)


def test_cycle_error_names_a_node_that_is_on_the_cycle() -> None:
    """`after` only hangs below the cycle a <-> b; it is listed first, but it is not on the
    cycle, so naming it ("node 'after' is on a cycle") would send a reader the wrong way."""
    with pytest.raises(WorkflowDefinitionError) as exc:
        Workflow("loop_below", nodes=[n("after", "a"), n("a", "b"), n("b", "a")])
    assert exc.value.node_id in {"a", "b"}, str(exc.value)


def test_self_dependency_is_refused_naming_the_node() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        Workflow("selfish", nodes=[n("ok"), n("me", "ok", "me")])
    assert_names(exc, "me")


# -- unknown dependencies, duplicates ------------------------------------------------------

def test_unknown_dependency_is_refused_naming_the_node_and_the_dependency() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        Workflow("dangling", nodes=[n("a"), n("b", "a", "ghost")])
    assert_names(exc, "b")
    assert "ghost" in str(exc.value)


def test_duplicate_node_ids_are_refused_naming_the_id() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        Workflow("twins", nodes=[n("a"), n("twin", "a"), n("twin")])
    assert_names(exc, "twin")


# -- bad nodes -----------------------------------------------------------------------------

@pytest.mark.parametrize("category", ["Provider", "actions", "", "sink", ["action"], {}, None])
def test_bad_category_is_refused_naming_the_node(category: Any) -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        Node("odd", noop, category=category)
    assert_names(exc, "odd")


@pytest.mark.parametrize("depends_on", [[["a"]], [1], [None], ("a", {"b"})])
def test_depends_on_items_that_are_not_ids_are_refused_naming_the_node(
        depends_on: Any) -> None:
    with pytest.raises(WorkflowDefinitionError, match="depends_on must hold node ids") as exc:
        Node("odd", noop, depends_on=depends_on)
    assert_names(exc, "odd")


@pytest.mark.parametrize("node_id", ["", "has space", "a/b", "x" * 129, "caf\u00e9", "a:b",
                                     "tab\t"])
def test_bad_node_id_is_refused(node_id: str) -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        Node(node_id, noop)
    assert repr(node_id) in str(exc.value)


def test_non_string_node_id_is_refused() -> None:
    with pytest.raises(WorkflowDefinitionError):
        Node(42, noop)  # type: ignore[arg-type]


@pytest.mark.parametrize("workflow_id", ["", "bad id", "w/1", "x" * 129])
def test_bad_workflow_id_is_refused(workflow_id: str) -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        Workflow(workflow_id, nodes=[n("a")])
    assert repr(workflow_id) in str(exc.value)


def test_non_callable_fn_is_refused_naming_the_node() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        Node("inert", "not a function")  # type: ignore[arg-type]
    assert_names(exc, "inert")


def test_empty_workflow_is_refused() -> None:
    with pytest.raises(WorkflowDefinitionError):
        Workflow("empty", nodes=[])


def test_items_that_are_not_nodes_are_refused() -> None:
    with pytest.raises(WorkflowDefinitionError):
        Workflow("mixed", nodes=[n("a"), "b"])  # type: ignore[list-item]


@pytest.mark.parametrize("option", ["timeout_s", "cache_ttl_s", "restart_within_s"])
def test_non_positive_durations_are_refused_naming_the_node(option: str) -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        duration: dict[str, Any] = {option: 0}  # the option is chosen by name at run time
        Node("timed", noop, category="provider", **duration)
    assert_names(exc, "timed")
    assert option in str(exc.value)


def test_workflow_timeout_must_be_positive() -> None:
    with pytest.raises(WorkflowDefinitionError):
        Workflow("late", nodes=[n("a")], timeout_s=0)


def test_definition_error_is_a_tradeloom_error() -> None:
    assert issubclass(WorkflowDefinitionError, TradeloomError)


# -- properties over random graphs ---------------------------------------------------------

@st.composite
def random_dags(draw: st.DrawFn) -> tuple[list[str], list[list[str]], list[int]]:
    """Ids, each node's dependencies (only on lower-numbered nodes: a DAG), and a shuffled
    listing order (a Workflow must not care in which order its nodes are listed)."""
    size = draw(st.integers(min_value=1, max_value=12))
    ids = [f"n{i}" for i in range(size)]
    deps = [sorted(draw(st.sets(st.sampled_from(ids[:i]), max_size=i))) if i else []
            for i in range(size)]
    order = draw(st.permutations(list(range(size))))
    return ids, deps, order


@settings(max_examples=60, deadline=None)
@given(random_dags())
def test_any_dag_builds_in_any_listing_order(dag: tuple[list[str], list[list[str]],
                                                        list[int]]) -> None:
    ids, deps, order = dag
    wf = Workflow("dag", nodes=[n(ids[i], *deps[i]) for i in order])
    assert sorted(node.id for node in wf.nodes) == sorted(ids)


@settings(max_examples=60, deadline=None)
@given(random_dags(), st.data())
def test_any_back_edge_makes_a_cycle_that_is_refused(
        dag: tuple[list[str], list[list[str]], list[int]], data: st.DataObject) -> None:
    ids, deps, order = dag
    # Pick a path hi -> ... -> lo by following dependencies down, then add lo -> hi.
    edges = [(i, int(d[1:])) for i in range(len(ids)) for d in deps[i]]
    assume(edges)  # a graph with no edge has no back edge to add
    hi, lo = data.draw(st.sampled_from(edges))
    deps = [list(d) for d in deps]
    deps[lo].append(ids[hi])
    with pytest.raises(WorkflowDefinitionError) as exc:
        Workflow("cyclic", nodes=[n(ids[i], *deps[i]) for i in order])
    assert repr(exc.value.node_id) in str(exc.value)
    assert exc.value.node_id in on_a_cycle(ids, deps), str(exc.value)


def on_a_cycle(ids: list[str], deps: list[list[str]]) -> set[str]:
    """The nodes that can reach themselves by following dependencies."""
    index = {node_id: i for i, node_id in enumerate(ids)}
    found = set()
    for start in range(len(ids)):
        stack, seen = [index[d] for d in deps[start]], set()
        while stack:
            i = stack.pop()
            if i == start:
                found.add(ids[start])
                break
            if i not in seen:
                seen.add(i)
                stack.extend(index[d] for d in deps[i])
    return found


def reachable(start: str, edges: dict[str, list[str]]) -> set[str]:
    """Every node reachable from `start` along `edges`, `start` excluded."""
    stack, seen = list(edges[start]), set()
    while stack:
        node_id = stack.pop()
        if node_id not in seen:
            seen.add(node_id)
            stack.extend(edges[node_id])
    return seen


@settings(max_examples=80, deadline=None)
@given(random_dags(), st.booleans())
def test_the_closure_gives_every_ancestor_and_descendant_in_order(
        dag: tuple[list[str], list[list[str]], list[int]], kept_as_tuples: bool) -> None:
    ids, deps, order = dag
    # Both ways of answering: tuples kept (ordinary sizes) and read off the bitsets.
    cap = closure_module.CACHED_PAIRS_MAX
    closure_module.CACHED_PAIRS_MAX = cap if kept_as_tuples else -1
    try:
        wf = Workflow("dag", nodes=[n(ids[i], *deps[i]) for i in order])
    finally:
        closure_module.CACHED_PAIRS_MAX = cap
    assert isinstance(getattr(wf.closure.ancestor_ids, "__self__", None), tuple) is kept_as_tuples
    depends_on = {ids[i]: deps[i] for i in range(len(ids))}
    dependents: dict[str, list[str]] = {node_id: [] for node_id in ids}
    for node_id, on in depends_on.items():
        for d in on:
            dependents[d].append(node_id)
    position = {node: pos for pos, node in enumerate(wf.order)}
    for i, node in enumerate(wf.nodes):
        ancestors = wf.closure.ancestor_ids(i)
        assert set(ancestors) == reachable(node.id, depends_on)
        assert list(ancestors) == [m.id for m in wf.nodes if m.id in set(ancestors)]
        below = wf.closure.descendants(i)
        assert {wf.nodes[j].id for j in below} == reachable(node.id, dependents)
        assert list(below) == sorted(below, key=position.__getitem__)


def test_a_long_chain_keeps_its_closure_as_bitsets_and_answers_from_them() -> None:
    size = 2_000  # 2 million (node, ancestor) pairs: as tuples, ~16 MB and a second
    wf = Workflow("chain", nodes=[n("n0")] + [n(f"n{i}", f"n{i - 1}") for i in range(1, size)])
    assert not isinstance(getattr(wf.closure.ancestor_ids, "__self__", None), tuple)
    assert wf.closure.ancestor_ids(size - 1) == tuple(f"n{i}" for i in range(size - 1))
    assert wf.closure.ancestor_ids(0) == ()
    assert [wf.nodes[j].id for j in wf.closure.descendants(size - 3)] == [
        f"n{size - 2}", f"n{size - 1}"]


@pytest.mark.parametrize("nodes", [None, 5, "abc", Node("a", lambda ctx: 1)])
def test_nodes_that_are_no_list_of_nodes_are_refused_naming_nodes(nodes: Any) -> None:
    with pytest.raises(WorkflowDefinitionError, match="nodes must be a list of Node"):
        Workflow("w", nodes=nodes)


def test_a_node_backoff_min_above_its_max_is_refused() -> None:
    """As the config's `0 <= backoff_min_s <= backoff_max_s`: the node's retries announced
    300 ms against a 50 ms maximum."""
    with pytest.raises(WorkflowDefinitionError,
                       match=r"backoff_min_s \(0\.3\) must be <= backoff_max_s \(0\.05\)"):
        Node("a", lambda ctx: 1, backoff_min_s=0.3, backoff_max_s=0.05)
    assert Node("a", lambda ctx: 1, backoff_min_s=0.05, backoff_max_s=0.05).backoff_max_s == 0.05


@pytest.mark.parametrize("value", [1.5, True, -1, "2"])
def test_max_restarts_must_be_an_int_and_says_so(value: Any) -> None:
    with pytest.raises(WorkflowDefinitionError,
                       match="max_restarts must be an int from 0 to 1000, not"):
        Node("a", lambda ctx: 1, max_restarts=value)


@pytest.mark.parametrize("value", [1001, 10**30, 10**5000], ids=["1001", "1e30", "1e5000"])
def test_max_restarts_is_bounded_as_the_configs_is(value: int) -> None:
    with pytest.raises(WorkflowDefinitionError,
                       match=r"max_restarts must be an int from 0 to 1000$"):
        Node("a", lambda ctx: 1, max_restarts=value)
    assert Node("a", lambda ctx: 1, max_restarts=1000).max_restarts == 1000
