"""The journal's packed events reused as wire payloads (actors/wire_ring.py): the writer
hands them over before the committed mark moves, the publisher's reader sends them as they
are, and a slot is dropped once every cursor has passed it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from actors import Node, Workflow
from actors.events import topic_of
from actors.journal import Journal
from actors.packing import pack, unpack
from actors.wire_ring import Chunk, WireRing
from tests.conftest import EngineFactory
from tests.engine_journal_helpers import eventually, journal_config
from tests.journal_helpers import Sequencer, all_events, sys_event

WORKFLOW = Workflow("wf", nodes=[
    Node("quote", lambda ctx: {"price": 1.5}, category="provider"),
    Node("order", lambda ctx: {"id": ctx.idempotency_key}, category="action",
         depends_on=["quote"]),
])


def test_a_kept_payload_is_found_by_its_seq_across_the_wrap() -> None:
    ring = WireRing(base=1, size=4)
    assert ring.payload(1) is None  # nothing kept yet: not even allocated
    ring.keep([(1, [b"a", b"b", b"c"]), (4, [b"d", b"e"])])  # seq 5 wraps onto seq 1's slot
    assert [ring.payload(s) for s in range(1, 6)] == [None, b"b", b"c", b"d", b"e"]
    assert ring.payload(9) is None  # seq 9 shares seq 5's slot: a later lap is not taken


def test_clear_drops_the_slots_named_wrapping_around() -> None:
    ring = WireRing(base=1, size=4)
    ring.keep([(1, [b"a", b"b", b"c", b"d"])])
    ring.clear(3, 2)  # index 3 then 0: seqs 4 and 1
    assert [ring.payload(s) for s in range(1, 5)] == [None, b"b", b"c", None]


class Handovers:
    """A journal writer's `on_packed` and `on_commit` calls, in order; `done` is set once
    `last_seq` is committed."""

    def __init__(self, last_seq: int) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.done = threading.Event()
        self._last_seq = last_seq

    def start(self, journal: Journal) -> None:
        journal.start(on_commit=self._on_commit, on_error=lambda exc: None,
                      on_packed=self._on_packed)

    def _on_commit(self, seq: int) -> None:
        self.calls.append(("commit", seq))
        if seq >= self._last_seq:
            self.done.set()

    def _on_packed(self, chunks: list[Chunk]) -> None:
        self.calls.append(("packed", [(first, list(payloads)) for first, payloads in chunks]))

    def handed(self) -> list[tuple[int, bytes]]:
        """`(seq, payload)` in hand-over order, checking that every seq a commit reported
        was handed over before it."""
        handed: list[tuple[int, bytes]] = []
        for kind, value in self.calls:
            if kind == "packed":
                for first, payloads in value:
                    handed += enumerate(payloads, first)
            else:
                assert set(range(1, value + 1)) <= {s for s, _ in handed}, value
        return handed


def test_the_writer_hands_each_commits_payloads_over_before_its_committed_mark(
        tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    handovers = Handovers(300)
    try:
        seq = Sequencer(journal)
        handovers.start(journal)
        for i in range(300):
            seq.emit(sys_event("tick", n=i))
        assert handovers.done.wait(10)
        kept = dict(handovers.handed())
        stored = {event["seq"]: event for event in all_events(journal)}
        assert sorted(kept) == sorted(stored) == list(range(1, 301))
        for s, payload in kept.items():
            assert unpack(payload) == stored[s]  # the journal's row holds the same bytes
    finally:
        journal.close()


def test_the_publishers_reader_sends_the_journals_bytes_and_packs_only_without_them(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    for data_dir in (tmp_path, None):
        engine = make_engine(journal_config(data_dir) if data_dir is not None else {})
        log = engine.sink.log
        reader = log.reader()
        try:
            first = reader.next_seq
            assert engine.submit(WORKFLOW).result(10).status == "completed"
            rows = reader.read_packed(first, 1000)
            events = reader.read(first, 1000)
        finally:
            reader.close()
        assert [row[0] for row in rows] == [e["seq"] for e in events] and len(rows) >= 4
        for (seq, topic, payload), event in zip(rows, events, strict=True):
            assert topic == topic_of(event) and unpack(payload) == event
            if data_dir is not None:
                assert payload is log.wire.payload(seq)  # the journal's own bytes object
            else:
                assert log.wire.payload(seq) is None and payload == pack(event)


def test_payloads_every_cursor_has_passed_are_let_go(make_engine: EngineFactory,
                                                     tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path))
    log = engine.sink.log
    reader = log.reader()
    try:
        first = reader.next_seq
        engine.submit(WORKFLOW).result(10)
        end = log.committed_seq
        assert all(log.wire.payload(s) is not None for s in range(first, end + 1))
        reader.read_packed(end + 1, 1)  # the reader is past them now
        engine.submit(WORKFLOW).result(10)  # its appends clear what every cursor passed
        eventually(lambda: all(log.wire.payload(s) is None for s in range(first, end + 1)),
                   what="passed payloads dropped")
    finally:
        reader.close()
