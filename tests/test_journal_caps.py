"""`[journal] max_event_bytes`: an event over the cap has its user data cut before it is
committed, so one huge node output never stops the journal (SQLite refuses a value of 1 GB;
a failed commit is retried with the same rows, so without the cap the engine would stay
halted behind it). Pure parts first (no threads), then an engine on a real journal."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Config, Engine, Node, Workflow
from actors.clock import SystemClock
from actors.errors import ConfigError
from actors.events import validate_event
from actors.journal_caps import cap_value, cut_to_fit, note
from actors.journal_group import GroupBuilder
from actors.journal_records import Codec, Submitted
from actors.packing import pack, unpack_stream_lenient
from tests.journal_helpers import run_events, wf_event

LIMIT = 64 * 1024
BIG = b"x" * (4 * LIMIT)


def numbered(events: list[dict[str, Any]], first: int = 1) -> list[dict[str, Any]]:
    return [{**event, "seq": first + i, "wseq": first + i, "timestamp": "t"}
            for i, event in enumerate(events)]


# -- the cut itself ---------------------------------------------------------------------------

def test_a_big_output_is_cut_and_listed_and_the_rest_kept() -> None:
    event = numbered([wf_event("node_completed", "exec_wf_1", node_id="fetch", attempt=1,
                               outputs={"book": BIG}, status="success",
                               duration_ms=1.0)])[0]
    data = cut_to_fit(event, LIMIT, pack)
    assert len(data) <= LIMIT
    assert msgpack.unpackb(data) == event
    assert event["omitted"] == ["outputs"]
    assert event["outputs"].startswith("<omitted by the journal: ")
    assert f"{len(pack({'book': BIG})):,} bytes packed" in event["outputs"]
    assert (event["node_id"], event["status"], event["seq"]) == ("fetch", "success", 1)


def test_only_the_big_results_entry_is_cut_and_the_shared_maps_are_not_changed() -> None:
    results = {"small": {"price": 1.5}, "big": BIG}
    nodes = {"small": {"status": "completed"},
             "big": {"status": "failed", "error": "e" * (2 * LIMIT)}}
    event = wf_event("execution_completed", "exec_wf_1", status="completed",
                     duration_ms=1.0, results=results, nodes=nodes)
    data = cut_to_fit(event, LIMIT, pack)
    assert len(data) <= LIMIT
    assert event["omitted"] == ["results.big", "nodes.big.error"]  # the largest first
    assert event["results"]["small"] == {"price": 1.5}
    assert event["nodes"]["big"]["status"] == "failed"
    assert results["big"] == BIG and nodes["big"]["error"] == "e" * (2 * LIMIT)


def test_a_value_too_big_to_pack_is_cut_as_unpackable() -> None:
    def pack_refusing_big(value: Any) -> bytes:
        if BIG in (value.get("outputs") if isinstance(value, dict) else None,
                   value):
            raise MemoryError
        return pack(value)

    event = wf_event("node_completed", "exec_wf_1", node_id="n", outputs=BIG)
    data = cut_to_fit(event, LIMIT, pack_refusing_big)
    assert event["omitted"] == ["outputs"]
    assert "too big to pack" in event["outputs"]
    assert msgpack.unpackb(data)["outputs"] == event["outputs"]
    assert cap_value(BIG, LIMIT, pack_refusing_big) == pack(note(2**63 - 1, LIMIT))


@settings(max_examples=60, deadline=None)
@given(sizes=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]),
                             st.integers(0, 3 * LIMIT), max_size=4),
       outputs=st.integers(0, 3 * LIMIT), error=st.integers(0, 3 * LIMIT),
       limit=st.integers(LIMIT // 4, 2 * LIMIT))
def test_any_event_is_cut_to_fit_and_only_its_cut_paths_change(
        sizes: dict[str, int], outputs: int, error: int, limit: int) -> None:
    results = {node: "r" * size for node, size in sizes.items()}
    original = wf_event("execution_failed", "exec_wf_1", status="failed", duration_ms=1.0,
                        outputs="o" * outputs, error="e" * error, results=results)
    event = dict(original)
    fits = len(pack(original)) <= limit
    data = cut_to_fit(event, limit, pack)
    assert len(data) <= limit
    assert (event == original) == fits  # an event that fits is left as it is
    cut = set(event.get("omitted", []))
    for key in ("outputs", "error"):
        assert (event[key] == original[key]) == (key not in cut)
    for node, value in results.items():
        if "results" in cut:  # the whole map went (only when small entries were what is big)
            assert event["results"].startswith("<omitted by the journal")
        else:
            assert (event["results"][node] == value) == (f"results.{node}" not in cut)
    assert len(cut) == len(event.get("omitted", []))  # nothing cut twice


def test_many_small_results_are_cut_with_few_packs_of_the_event() -> None:
    results = {f"n{i}": "r" * 200 for i in range(2000)}  # ~420 KB, none big alone
    event = wf_event("execution_completed", "exec_wf_1", status="completed",
                     duration_ms=1.0, results=results)
    packs = 0

    def counting(value: Any) -> bytes:
        nonlocal packs
        packs += value is event
        return pack(value)

    data = cut_to_fit(event, LIMIT, counting)
    assert len(data) <= LIMIT
    assert packs <= 5  # not once per cut entry (that was 2,000 packs of 420 KB)
    assert event["omitted"] == ["results"]  # no entry is worth a note: the map goes whole
    assert results["n0"] == "r" * 200  # the caller's map is not changed


# -- the group builder (the writer's thread, driven here without it) ------------------------

def test_the_builder_cuts_before_it_derives_the_execution_row() -> None:
    builder = GroupBuilder(next_seq=1, open_intents=set(), clock=SystemClock(),
                           max_event_bytes=LIMIT)
    events = numbered(run_events("exec_wf_1"))
    events[2]["outputs"] = {"book": BIG}
    events[-1]["results"] = {"price": {"book": BIG}, "trade": {"id": 7}}
    submitted = Submitted(execution_id="exec_wf_2", workflow_id="wf", inputs={"blob": BIG})
    group = builder.build([events, submitted])
    payloads = [p for _, chunk in group.wire for p in chunk]
    assert max(map(len, payloads)) <= LIMIT
    stored = unpack_stream_lenient(group.batches[0][3])
    assert stored[2]["omitted"] == ["outputs"] and stored[-1]["omitted"] == ["results.price"]
    assert stored == events  # the events themselves were cut: every consumer sees this
    row = group.executions["exec_wf_1"]
    assert len(row[11]) <= LIMIT  # results, packed from the cut terminal event
    assert msgpack.unpackb(row[11])["trade"] == {"id": 7}
    assert "omitted by the journal" in msgpack.unpackb(group.executions["exec_wf_2"][6])
    assert builder.codec.events_cut == 2


def test_an_event_still_over_the_cap_after_its_rows_cut_keeps_its_omitted_list() -> None:
    # A terminal event of 2,500 nodes: its `nodes` map alone is over the cap and is not user
    # data. The row's derivation cuts `results` whole; the batch row's packing then finds the
    # event still over the cap and cut it again, with a new, empty `omitted`.
    builder = GroupBuilder(next_seq=1, open_intents=set(), clock=SystemClock(),
                           max_event_bytes=LIMIT)
    ids = [f"node_{i:05d}" for i in range(2500)]
    events = numbered([wf_event("execution_completed", "exec_wf_1", status="completed",
                                duration_ms=1.0, results=dict.fromkeys(ids, 7),
                                nodes={i: {"status": "completed", "attempts": 1}
                                       for i in ids})])
    group = builder.build([events])
    [stored] = unpack_stream_lenient(group.batches[0][3])
    assert stored["omitted"] == ["results"] and stored["results"].startswith("<omitted")
    assert builder.codec.events_cut == 1


def test_the_codec_does_not_keep_a_cut_events_size_in_memory() -> None:
    # A msgpack Packer keeps its buffer at the largest size it packed: after a 1 GB output
    # the journal's writer held that gigabyte until the daemon stopped.
    codec = Codec(LIMIT)
    big = b"x" * (10 * 1024 * 1024)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        event = numbered([wf_event("node_completed", "exec_wf_1", node_id="n", outputs=big)])
        codec.pack_each(event)
        assert event[0]["omitted"] == ["outputs"]
        assert "omitted by the journal" in msgpack.unpackb(codec.pack_capped({"blob": big}))
        del event
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < len(big) // 4, kept


def test_batch_rows_end_at_their_byte_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("actors.journal_group.MAX_ROW_BYTES", 3000)
    builder = GroupBuilder(next_seq=1, open_intents=set(), clock=SystemClock())
    events = numbered([wf_event("node_completed", "exec_wf_1", node_id=f"n{i}",
                                outputs="x" * 1000) for i in range(10)])
    group = builder.build([events[:4], events[4:]])
    rows = group.batches
    assert len(rows) >= 4 and all(len(row[3]) <= 3000 for row in rows)
    assert [row[0] for row in rows] == [chunk[0] for chunk in group.wire]
    assert [e for row in rows for e in unpack_stream_lenient(row[3])] == events
    assert [(row[0], row[1]) for row in rows] == [
        (seq, seq + len(chunk) - 1) for seq, chunk in group.wire]


def test_codec_packs_small_events_unchanged() -> None:
    codec = Codec(LIMIT)
    events = numbered(run_events("exec_wf_1"))
    payloads = [pack(e) for e in events]
    assert codec.pack_each(events) == (payloads, sum(map(len, payloads)))
    assert all("omitted" not in e for e in events) and codec.events_cut == 0


# -- an engine on a real journal ----------------------------------------------------------------

def test_a_huge_output_does_not_stop_the_engine(tmp_path: Path) -> None:
    huge = Workflow("huge", nodes=[Node("fetch", lambda ctx: {"book": BIG}),
                                   Node("use", lambda ctx: len(ctx.upstream["fetch"]["book"]),
                                        depends_on=["fetch"])])
    seen: list[dict[str, Any]] = []
    ended = threading.Event()

    def subscriber(event: dict[str, Any]) -> None:
        if event.get("workflow_id") == "huge":
            seen.append(event)
            if event["type"] == "execution_completed":
                ended.set()

    config = Config.from_dict({"daemon": {"data_dir": str(tmp_path)},
                               "journal": {"max_event_bytes": LIMIT}})
    engine = Engine.start(config)
    try:
        engine.subscribe(subscriber)
        result = engine.submit(huge).result(timeout=10)
        assert result.status == "completed"
        assert result.results["fetch"] == {"book": BIG}  # in-process: the full value
        assert result.results["use"] == len(BIG)  # the next node got it too
        assert ended.wait(10)
        assert all(validate_event(e, strict=True) == [] for e in seen)  # `omitted` too
        cut = {e["type"]: e for e in seen if "omitted" in e}
        assert cut["node_completed"]["omitted"] == ["outputs"]
        assert cut["execution_completed"]["omitted"] == ["results.fetch"]
        replayed = [e for e in engine.replay(since_seq=1, limit=1000)["events"]
                    if e.get("workflow_id") == "huge"]
        assert replayed == seen
        stored = engine.execution(result.execution_id)
        assert stored is not None and stored["status"] == "completed"
        assert stored["results"]["use"] == len(BIG)
        assert stored["results"]["fetch"].startswith("<omitted by the journal")
        status = engine.status()
        assert status["state"] == "NORMAL" and status["journal"]["events_cut"] == 2
        assert engine.submit(huge).result(timeout=10).status == "completed"
    finally:
        engine.stop()


@pytest.mark.parametrize("value, ok", [(65535, False), (65536, True),
                                       (268435456, True), (268435457, False),
                                       (True, False), (1e6, False)])
def test_max_event_bytes_range(value: Any, ok: bool) -> None:
    raw = {"journal": {"max_event_bytes": value}}
    if ok:
        assert Config.from_dict(raw).journal.max_event_bytes == value
    else:
        with pytest.raises(ConfigError, match=r"journal\.max_event_bytes"):
            Config.from_dict(raw)


def test_the_result_keeps_a_full_node_error_the_journal_cut_before_the_result_was_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer may cut the terminal event while the supervisor is still making the
    in-process result from it: the result must keep the full values all the same."""
    from actors.supervisor_closing import ExecutionClosing

    real = ExecutionClosing._finish

    def finish_after_the_cut(self: Any, exe: Any, ending: Any, terminal: Any,
                             *rest: Any) -> None:
        deadline = time.monotonic() + 10
        while "omitted" not in terminal and time.monotonic() < deadline:
            time.sleep(0.005)  # (the journal's writer cuts it meanwhile)
        real(self, exe, ending, terminal, *rest)

    monkeypatch.setattr(ExecutionClosing, "_finish", finish_after_the_cut)
    message = "e" * (2 * LIMIT)

    def boom(ctx: Any) -> None:
        raise ValueError(message)

    engine = Engine.start(Config.from_dict({"daemon": {"data_dir": str(tmp_path)},
                                            "journal": {"max_event_bytes": LIMIT}}))
    try:
        result = engine.submit(Workflow("boom", nodes=[Node("n", boom)])).result(timeout=15)
    finally:
        engine.stop()
    assert result.status == "failed" and result.error is not None
    assert message in result.nodes["n"]["error"]


@pytest.mark.timeout(10)  # a copy of the map per cut entry took minutes at this size
def test_thousands_of_results_over_their_notes_size_are_cut_in_linear_time() -> None:
    results = {f"n{i}": "r" * 300 for i in range(40_000)}
    event = wf_event("execution_completed", "exec_wf_1", status="completed",
                     duration_ms=1.0, results=results)
    data = cut_to_fit(event, LIMIT, pack)
    assert len(data) <= LIMIT and event["omitted"] == ["results"]
    assert f"{len(pack(results)):,} bytes packed" in event["results"]  # the map's whole size
    assert results["n0"] == "r" * 300  # the caller's map is not changed


def test_an_event_with_no_user_data_to_cut_is_kept_and_not_counted() -> None:
    codec = Codec(LIMIT)
    event = numbered([{"v": 1, "type": "circuit_closed", "breaker": "b" * (2 * LIMIT),
                       "failures": 0}])
    payloads, size = codec.pack_each(event)
    assert size > LIMIT and "omitted" not in event[0] and codec.events_cut == 0
    assert msgpack.unpackb(payloads[0]) == event[0]


def test_a_halt_reason_over_the_cap_comes_back_after_a_restart(tmp_path: Path) -> None:
    """The engine's own saved state is never replaced by a note (it would not read back:
    the next start failed), whatever the cap."""
    config = Config.from_dict({"daemon": {"data_dir": str(tmp_path)},
                               "journal": {"max_event_bytes": LIMIT}})
    reason = "r" * (2 * LIMIT)
    engine = Engine.start(config)
    try:
        engine.halt(reason)
    finally:
        engine.stop()
    engine = Engine.start(config)
    try:
        status = engine.status()
        assert (status["state"], status["reason"]) == ("HALT", reason)
    finally:
        engine.stop()
