"""Execution ids: unique in a process, and across restarts of a journal without a read per id."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Config, Engine, Node, Workflow
from actors.execution_ids import RESERVE_BLOCK, ExecutionIds

ID = re.compile(r"^exec_wf_[0-9a-f]{8}$")


class Journal:
    """Records what the ids queue, in order with the ids handed out."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.checked: list[str] = []
        self.taken_ids: set[str] = set()

    def save(self, state: dict[str, Any]) -> None:
        self.log.append(("reserve", dict(state)))

    def taken(self, execution_id: str) -> bool:
        self.checked.append(execution_id)
        return execution_id in self.taken_ids

    def last_state(self) -> dict[str, Any]:
        state: dict[str, Any] = [value for kind, value in self.log if kind == "reserve"][-1]
        return state


def number(execution_id: str) -> int:
    return int(execution_id.rsplit("_", 1)[1], 16)


def issue(ids: ExecutionIds, journal: Journal, n: int) -> list[str]:
    out = []
    for _ in range(n):
        execution_id = ids.new("wf")
        journal.log.append(("id", number(execution_id)))
        out.append(execution_id)
    return out


def test_in_memory_ids_have_the_contract_form_and_never_repeat() -> None:
    ids = ExecutionIds()
    issued = [ids.new("wf") for _ in range(50_000)]
    assert all(ID.match(i) for i in issued)
    assert len(set(issued)) == len(issued)


def test_every_id_is_covered_by_a_reservation_queued_before_it() -> None:
    journal = Journal()
    saved = {"next": 1000, "left": 2**32, "checked": False}
    ids = ExecutionIds(saved=saved, save=journal.save, taken=journal.taken)
    issued = issue(ids, journal, 3 * RESERVE_BLOCK + 7)
    assert [number(i) for i in issued] == list(range(1000, 1000 + len(issued)))
    reserved_to = None
    for kind, value in journal.log:
        if kind == "reserve":
            reserved_to = value["next"]
        else:
            assert reserved_to is not None and value < reserved_to
    assert journal.log[0][0] == "reserve"  # queued at start, before any submit
    assert journal.checked == []  # a fresh journal: no read per id
    assert len(set(issued)) == len(issued)
    reservations = sum(kind == "reserve" for kind, _ in journal.log)
    assert reservations <= len(issued) // (RESERVE_BLOCK // 2) + 2  # one per half block


@settings(max_examples=25, deadline=None)
@given(runs=st.lists(st.integers(0, 2 * RESERVE_BLOCK), min_size=2, max_size=5))
def test_a_restart_continues_after_the_last_reservation(runs: list[int]) -> None:
    saved = None
    seen: set[str] = set()
    for n in runs:
        journal = Journal()
        ids = ExecutionIds(saved=saved, save=journal.save, taken=journal.taken)
        issued = issue(ids, journal, n)
        assert not seen & set(issued)
        seen.update(issued)
        assert journal.checked == []
        saved = journal.last_state()


def test_a_journal_with_older_executions_checks_every_id() -> None:
    journal = Journal()
    ids = ExecutionIds(saved=None, save=journal.save, taken=journal.taken, legacy=True)
    issued = [ids.new("wf") for _ in range(5)]
    assert journal.checked == issued
    assert journal.last_state()["checked"] is True  # and so will the next run


def test_a_taken_id_is_skipped() -> None:
    journal = Journal()
    ids = ExecutionIds(saved=None, save=journal.save, taken=journal.taken, legacy=True)
    state = journal.last_state()
    twin = ExecutionIds(saved={**state, "next": state["next"] - RESERVE_BLOCK},
                        save=journal.save, taken=journal.taken)
    journal.taken_ids = {twin.new("wf")}  # the value `ids` hands out next
    journal.checked.clear()
    issued = ids.new("wf")
    assert issued not in journal.taken_ids
    assert journal.checked == [*journal.taken_ids, issued]


@pytest.mark.parametrize("saved", [
    {"next": "x", "left": 5, "checked": False},
    {"next": -1, "left": 5, "checked": False},
    {"next": 1, "left": True, "checked": False},
    {"next": 1.5, "left": 5, "checked": False},
    {"next": 1, "left": 5, "checked": "no"},
    {"next": 1},
    [1, 2],
])
def test_an_unreadable_saved_state_makes_every_id_checked(saved: Any) -> None:
    journal = Journal()
    ids = ExecutionIds(saved=saved, save=journal.save, taken=journal.taken)
    issued = ids.new("wf")
    assert journal.checked == [issued]
    assert journal.last_state()["checked"] is True


def test_used_up_values_make_every_id_checked() -> None:
    journal = Journal()
    saved = {"next": 123, "left": RESERVE_BLOCK - 1, "checked": False}
    ids = ExecutionIds(saved=saved, save=journal.save, taken=journal.taken)
    state = journal.last_state()
    assert state["checked"] is True
    assert state["left"] == 2**32 - RESERVE_BLOCK  # a fresh cycle, every id checked
    issued = ids.new("wf")
    assert journal.checked == [issued]


def test_the_counter_wraps_within_eight_hex_digits() -> None:
    journal = Journal()
    saved = {"next": 2**32 - 2, "left": 2**31, "checked": False}
    ids = ExecutionIds(saved=saved, save=journal.save, taken=journal.taken)
    assert [ids.new("wf") for _ in range(3)] == [
        "exec_wf_fffffffe", "exec_wf_ffffffff", "exec_wf_00000000"]


# -- the engine on a journal ----------------------------------------------------------------


def workflow() -> Workflow:
    return Workflow("wf", nodes=[Node("p", lambda ctx: 1, category="provider")])


def start(data_dir: Path) -> Engine:
    engine = Engine.start(Config.from_dict({"daemon": {"data_dir": str(data_dir)}}))
    engine.register(workflow())
    return engine


def test_the_engine_reads_no_journal_row_per_id_and_continues_after_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from actors.journal import Journal as RealJournal

    def no_reads(self: Any, execution_id: str) -> bool:
        raise AssertionError(f"has_execution({execution_id!r}) on the submit path")

    monkeypatch.setattr(RealJournal, "has_execution", no_reads)
    engine = start(tmp_path)
    try:
        first = [engine.submit("wf").result(timeout=10) for _ in range(20)]
        assert all(r.ok for r in first)
        assert all(ID.match(r.execution_id) for r in first)
        counters = [number(r.execution_id) for r in first]
    finally:
        engine.stop()
    engine = start(tmp_path)
    try:
        later = engine.submit("wf").result(timeout=10)
        assert later.ok and ID.match(later.execution_id)
        assert counters == list(range(counters[0], counters[0] + 20))  # in counter order
        assert number(later.execution_id) == (counters[0] + RESERVE_BLOCK) % 2**32
    finally:
        engine.stop()


def test_a_journal_from_before_reservations_checks_ids_against_its_executions(
        tmp_path: Path) -> None:
    engine = start(tmp_path)
    try:
        assert engine.submit("wf").result(timeout=10).ok
    finally:
        engine.stop()
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        conn.execute("DELETE FROM state WHERE name = 'execution_ids'")
    engine = start(tmp_path)
    try:
        assert engine._ids._checked is True
        assert engine.submit("wf").result(timeout=10).ok
    finally:
        engine.stop()
