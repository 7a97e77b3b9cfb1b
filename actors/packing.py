"""msgpack packing of event payloads, shared by the in-process event log and the transport.

An event is packed once (the same bytes a publisher sends and a journal stores) and every
in-process subscriber gets its own unpacked copy: what one subscriber does to its event
cannot change what another sees, and in-process events are exactly the wire payload maps.

Anything msgpack cannot carry natively (a node's output may hold a Decimal or a datetime)
travels as its string form rather than failing the event: the stream must never stop
because of one odd output. Sets and tuples travel as arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from actors.copies import plain_copy
from actors.errors import type_name, valid_text

#: Nesting deeper than this (or a reference cycle) is cut off as a string.
_MAX_DEPTH = 64
_SCALARS = (bytes, bool, float, type(None))
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def fallback(obj: Any) -> Any:
    """msgpack's `default` hook: arrays for sets and tuples, maps for mappings that are not
    dicts, the string form otherwise."""
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, int):  # an int or an int subclass past 64 bits
        return int_text(obj)
    return str(obj)


def new_packer() -> Any:
    """A reusable packer (a third cheaper than `packb`); one per thread, never shared."""
    return msgpack.Packer(default=fallback, use_bin_type=True)


def pack(obj: Any, packer: Any = None) -> bytes:
    """Pack `obj` (a map with string keys, normally); never raises.

    The fast path is one msgpack pack (with `packer` when given); what it refuses (a
    `str()` that raises, a reference cycle, a lone surrogate) is packed as `pack_plain`
    does. A map with tuple keys packs but does not read back: see `pack_plain`.
    """
    try:
        if packer is not None:
            return packer.pack(obj)  # type: ignore[no-any-return]
        return _packb(obj)
    except BaseException:  # noqa: BLE001 - msgpack and user __str__ raise anything
        return pack_plain(obj)


#: Types msgpack packs without calling any user code (and no subclasses: a subclass may
#: override what msgpack or `str()` calls).
_NATIVE = frozenset({str, int, float, bool, type(None), bytes})


def event_form(value: Any) -> Any:
    """`value` as an event carries it: itself when msgpack packs it without running user
    code (exact dicts, lists and tuples of exact str/int/float/bool/None/bytes), else
    `plain(value)`, made now. Called in the thread that produced the value (a node's, a
    submitter's), so a slow or blocking `__str__` or `items()` of a user object (a big
    DataFrame's) runs there and never in the journal's writer or a subscription's thread.
    The flat map, the common output, is checked in C."""
    try:
        if _native(value, 0):
            return value
    except Exception:  # noqa: BLE001 - e.g. a dict changed size while read by another thread
        pass
    return plain_form(value)


def event_snapshot(value: Any) -> tuple[Any, bool]:
    """`value` as events carry it, and whether it is a user object (not plain data: freeing
    it may run user code). Plain data is copied (its containers; scalars are shared), so
    the events, the journal and every subscriber hold it as it was when it was produced,
    whatever changes the original later: the node that keeps and reuses what it returned,
    a downstream node writing into `ctx.upstream`, a submitter into its inputs. A user
    object's form (`plain_form`) is its own already."""
    shown = event_form(value)
    if shown is value:
        return plain_copy(value), False
    return shown, True


def _native(value: Any, depth: int) -> bool:
    kind = type(value)
    if kind in _NATIVE:
        return True
    if depth >= _MAX_DEPTH:  # (a reference cycle ends here too)
        return False
    if kind is dict:
        if _NATIVE.issuperset(map(type, value.values())) and _NATIVE.issuperset(
                map(type, value)):
            return True
        return _NATIVE.issuperset(map(type, value)) and all(
            _native(item, depth + 1) for item in value.values())
    if kind is list or kind is tuple:
        return _NATIVE.issuperset(map(type, value)) or all(
            _native(item, depth + 1) for item in value)
    return False


def pack_plain(obj: Any) -> bytes:
    """Pack `plain_form(obj)`: slower, and always read back by `unpack`."""
    return _packb(plain_form(obj))


def plain_form(obj: Any) -> Any:
    """`plain(obj)`, tried again if another thread changed a dict while it was read (user
    code mutating it), and its string form after three such tries."""
    for _ in range(3):
        try:
            return plain(obj)
        except RuntimeError:
            continue
    return as_text(obj)


def unpack(data: bytes) -> Any:
    """A fresh copy of what `pack` packed: the caller owns every dict and list in it."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def unpack_lenient(data: bytes) -> Any:
    """`unpack`, also for what it refuses with TypeError: a map with a tuple key packs (as
    an array) but an array cannot be a dict key when read back. Such a key becomes the
    string `pack_plain` makes of the tuple ("(1, 2)"), so a stored or sent event reads."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except TypeError:
        return msgpack.unpackb(data, raw=False, strict_map_key=False,
                               object_pairs_hook=_pairs)


def unpack_stream_lenient(data: bytes) -> list[Any]:
    """`unpack_lenient`'s slow path for concatenated objects (a journal batch row)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0,
                                object_pairs_hook=_pairs)
    unpacker.feed(data)
    return list(unpacker)


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, value in pairs:
        try:
            out[key] = value
        except TypeError:  # unhashable: an array (a tuple key) or a map
            out[as_text(_as_tuple(key))] = value
    return out


def _as_tuple(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_as_tuple(item) for item in obj)
    return obj


def plain(obj: Any, depth: int = 0) -> Any:
    """`obj` reduced to what msgpack packs and reads back: str/bytes/int/float/bool/None,
    lists, and maps whose keys are scalars; anything else as its string form."""
    if isinstance(obj, str):
        return valid_text(obj)
    if isinstance(obj, _SCALARS):
        return obj
    if isinstance(obj, int):
        return obj if _INT_MIN <= obj <= _INT_MAX else int_text(obj)
    if depth >= _MAX_DEPTH:
        return as_text(obj)
    try:
        # msgpack packs these as bin: carried as the same bytes, not as their repr.
        if isinstance(obj, bytearray):
            return bytes(obj)
        if isinstance(obj, memoryview) and obj.c_contiguous:  # (a released one raises)
            return obj.tobytes()
        if isinstance(obj, Mapping):
            return {_key(k): plain(v, depth + 1) for k, v in obj.items()}
        if isinstance(obj, list | tuple | set | frozenset):
            return [plain(v, depth + 1) for v in obj]
    except RuntimeError:  # maybe a dict changed size while read: pack_plain tries again
        raise
    except BaseException:  # noqa: BLE001 - a user container's items()/__iter__ raised
        pass
    return as_text(obj)


def _packb(obj: Any) -> bytes:
    return msgpack.packb(obj, default=fallback, use_bin_type=True)  # type: ignore[no-any-return]


def _key(key: Any) -> Any:
    if isinstance(key, str):
        return valid_text(key)
    if isinstance(key, _SCALARS):
        return key
    if isinstance(key, int) and _INT_MIN <= key <= _INT_MAX:
        return key
    return as_text(key)


def as_text(obj: Any) -> str:
    """`str(obj)` as UTF-8 carries it (lone surrogates as `?`), or a stand-in when it raises."""
    try:
        if isinstance(obj, int):
            return int_text(obj)
        return valid_text(str(obj))
    except BaseException:  # noqa: BLE001 - a user object's __str__ may raise anything
        return f"<unprintable {type_name(obj)}>"


def int_text(number: int) -> str:
    """The decimal form of an int; past Python's limit on decimal conversion (4,300
    digits: `str()` raises ValueError) its hex form, which has no limit and is exact."""
    try:
        return str(number)
    except ValueError:
        return hex(number)
