"""JSON for what events hold, outward (the web gateway's frames, webhook bodies): always
valid JSON (RFC 8259), never an exception.

    json_text({"x": float("nan")}, default=repr)   # '{"x":"nan"}', not '{"x":NaN}'

`json.dumps` alone writes `NaN`/`Infinity` (which a browser's `JSON.parse` and most
receivers refuse), raises on a key it cannot write (bytes, tuples), on an int past Python's
4300-digit limit, on a lone surrogate once encoded, and on nesting past the recursion limit.
An event holds whatever a node's outputs held, so the fast path is plain `json.dumps`, and
only what it refuses goes through `plain_json`: a non-finite float as its repr string
(`"nan"`, `"inf"`, `"-inf"`), a key as its string form, a lone surrogate as U+FFFD, an int
too long to print as a short note, anything deeper than `MAX_DEPTH` as its `default` text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from actors.errors import type_name

#: Deeper containers are written as their `default` text.
MAX_DEPTH = 64


def json_text(value: Any, *, default: Callable[[Any], str] = repr,
              ensure_ascii: bool = True) -> str:
    """`value` as compact JSON text; with `ensure_ascii=False` it also encodes to UTF-8."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=ensure_ascii,
                          allow_nan=False, default=default)
        if not ensure_ascii:
            text.encode()  # a lone surrogate passes dumps but not UTF-8
        return text
    except (ValueError, TypeError, RecursionError):
        return json.dumps(plain_json(value, default), separators=(",", ":"),
                          ensure_ascii=ensure_ascii, allow_nan=False)


def plain_json(value: Any, default: Callable[[Any], str] = repr, depth: int = 0) -> Any:
    """`value` reduced to what `json.dumps(allow_nan=False)` writes and UTF-8 encodes."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int):
        try:
            return int(str(value))  # past sys.get_int_max_str_digits str() raises
        except ValueError:
            return f"<int of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth >= MAX_DEPTH:
        return _text(_default_text(value, default))
    if isinstance(value, dict):
        return {_key(k, default): plain_json(v, default, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v, default, depth + 1) for v in value]
    return _text(_default_text(value, default))


def _key(key: Any, default: Callable[[Any], str]) -> str:
    return _text(key if isinstance(key, str) else _default_text(key, default))


def _default_text(value: Any, default: Callable[[Any], str]) -> str:
    try:
        return str(default(value))
    except Exception:  # noqa: BLE001 - a user __repr__/__str__ raises anything
        return f"<{type_name(value)}>"


def _text(text: str) -> str:
    """Lone surrogates (from surrogateescape'd bytes) as U+FFFD: UTF-8 has no form for them."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
