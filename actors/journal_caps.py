"""The journal's cap on one event's size (`[journal] max_event_bytes`).

Without it one oversized node output stops the journal for good: SQLite refuses a value of
1 GB or more (and Python's sqlite3 one past 2 GiB), a commit that fails is retried with the
same rows, and every later event waits behind it in HALT. So an event whose packed form is
over the cap has its user data cut before it is committed: the largest pieces first, until
it fits, each replaced by a note that says how big it was. The pieces are `inputs`,
`outputs`, `error`, each entry of `results` and the `error` of each entry of `nodes`; when
many small results are what is big, `results` goes whole. The event gains `omitted`, the
paths cut (`outputs`, `results.fetch`, `results`, `nodes.fetch.error`).

The event is changed in place before its commit, so every consumer (subscribers, the
stream, replay, webhooks, the executions table) sees the same cut event. Maps are replaced,
never changed, so the in-process `ExecutionResult` keeps the full values. A value too big to
pack at all (MemoryError) is cut the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from actors.logs import get_logger

log = get_logger("tradeloom.journal")

#: The default cap: far past any sensible node output, far below SQLite's 1 GB.
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
#: The cap's range (README, docs/operations.md). A batch row holds at least one event, so
#: the top leaves SQLite's limit a margin.
MAX_EVENT_BYTES_RANGE = (64 * 1024, 256 * 1024 * 1024)
#: Top-level fields that carry user data, cut whole.
_WHOLE = ("inputs", "outputs", "error")
#: A piece smaller than this is not cut on its own: its note would be about as big.
MIN_CUT_BYTES = 256
#: A size for a value that could not be packed at all (MemoryError).
_UNPACKABLE = sys.maxsize

Pack = Callable[[Any], bytes]


def packed_size(value: Any, pack: Pack) -> int:
    try:
        return len(pack(value))
    except MemoryError:
        return _UNPACKABLE


def note(size: int, limit: int) -> str:
    """What a cut value is replaced by."""
    what = "too big to pack" if size == _UNPACKABLE else f"{size:,} bytes packed"
    return f"<omitted by the journal: {what}, over max_event_bytes ({limit:,})>"


def cap_value(value: Any, limit: int, pack: Pack) -> bytes:
    """`value` packed, or its `note` packed if that is over `limit` (a journal column)."""
    try:
        data = pack(value)
    except MemoryError:
        return pack(note(_UNPACKABLE, limit))
    return data if len(data) <= limit else pack(note(len(data), limit))


def cut_to_fit(event: dict[str, Any], limit: int, pack: Pack) -> bytes:
    """Cut `event`'s user data in place until it packs within `limit`; its packed form.
    An event that already fits is left as it is; one with nothing left to cut is kept over
    the cap (its ids, names and statuses are its own) and gets no `omitted`."""
    data = _pack_or_empty(event, pack)
    if data and len(data) <= limit:
        return data
    original_results = event.get("results")
    omitted: list[str] = []
    data = _cut_pieces(event, limit, pack, omitted, len(data) if data else _UNPACKABLE)
    if not (data and len(data) <= limit) and type(original_results) is dict and \
            original_results:
        # Many small results, each no bigger than its note: the whole map goes.
        event["results"] = note(packed_size(original_results, pack), limit)
        omitted[:] = [path for path in omitted if not path.startswith("results.")]
        omitted.append("results")
        data = _pack_or_empty(event, pack)
    if omitted:
        event["omitted"] = omitted
        data = _pack_or_empty(event, pack)
    if not data:
        data = pack(event)
    log.error("journal_event_cut" if omitted else "journal_event_over_cap",
              seq=event.get("seq"), type=event.get("type"),
              execution_id=event.get("execution_id"), cut=len(omitted),
              omitted=omitted[:10], max_event_bytes=limit, packed_bytes=len(data))
    return data


def _cut_pieces(event: dict[str, Any], limit: int, pack: Pack, omitted: list[str],
                total: int) -> bytes:
    """Cut the pieces, the largest first, until the event fits; its packed form (b"" if
    it still does not pack). The event is packed again only when an estimate says it may
    fit: cutting a thousand results one by one must not pack it a thousand times."""
    sized = sorted(((packed_size(value, pack), path, put)
                    for path, value, put in _pieces(event)),
                   key=lambda piece: piece[0], reverse=True)
    data = b""
    for size, path, put in sized:
        if size < MIN_CUT_BYTES:
            break  # (sorted: the rest are smaller still)
        text = note(size, limit)
        put(text)
        omitted.append(path)
        if total != _UNPACKABLE and size != _UNPACKABLE:
            total += len(text) + len(path) + 8 - size
        if total == _UNPACKABLE or total <= limit:
            event["omitted"] = omitted  # (its own size counts too)
            data = _pack_or_empty(event, pack)
            del event["omitted"]
            total = len(data) if data else _UNPACKABLE
            if data and total <= limit:
                return data
    return data


def _pack_or_empty(event: dict[str, Any], pack: Pack) -> bytes:
    try:
        return pack(event)
    except MemoryError:
        return b""


def _pieces(event: dict[str, Any]) -> list[tuple[str, Any, Callable[[Any], None]]]:
    """(path, value, put) of each piece of user data; `put(x)` replaces it in the event."""
    pieces: list[tuple[str, Any, Callable[[Any], None]]] = []
    for key in _WHOLE:
        if key in event:
            pieces.append((key, event[key], _setter(event, key)))
    results = event.get("results")
    if type(results) is dict:
        copy = _MapCopy(event, "results")
        for node_id, output in results.items():
            pieces.append((f"results.{node_id}", output, copy.setter(node_id)))
    nodes = event.get("nodes")
    if type(nodes) is dict:
        copy = _MapCopy(event, "nodes")
        for node_id, entry in nodes.items():
            if type(entry) is dict and "error" in entry:
                pieces.append((f"nodes.{node_id}.error", entry["error"],
                               copy.entry_setter(node_id, "error")))
    return pieces


def _setter(event: dict[str, Any], key: str) -> Callable[[Any], None]:
    def put(value: Any) -> None:
        event[key] = value
    return put


class _MapCopy:
    """Replaces entries of the map `event[key]` in a copy of it, made at the first
    replacement: the map may be shared (the in-process result's), and a copy per cut
    would make cutting n entries O(n^2)."""

    def __init__(self, event: dict[str, Any], key: str) -> None:
        self.event, self.key, self.copied = event, key, False

    def map(self) -> dict[Any, Any]:
        if not self.copied:
            self.event[self.key] = dict(self.event[self.key])
            self.copied = True
        copy: dict[Any, Any] = self.event[self.key]
        return copy

    def setter(self, entry: Any) -> Callable[[Any], None]:
        def put(value: Any) -> None:
            self.map()[entry] = value
        return put

    def entry_setter(self, entry: Any, field: str) -> Callable[[Any], None]:
        def put(value: Any) -> None:  # (each entry is cut once: one copy of it)
            copy = self.map()
            copy[entry] = {**copy[entry], field: value}
        return put
