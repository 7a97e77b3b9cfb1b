"""Copies of node outputs, made off the hot path: one walk over the plain containers (exact
dicts, lists and tuples, with a memo so that shared and cyclic ones keep their shape) and a
policy for what is inside them.

- `plain_copy` (what `handle.result()` hands each call): the containers copied, everything
  else shared; no user code runs.
- `deep_copy` (what the provider cache keeps and hands each hit): the containers copied by
  hand, about 3x `copy.deepcopy`'s speed on what providers return, and any other object by
  `copy.deepcopy` (its `__deepcopy__` may run and raise).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

__all__ = ["deep_copy", "plain_copy"]

_CONTAINERS = frozenset({dict, list, tuple})
_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes})


def plain_copy(value: Any) -> Any:
    """`value` with its exact dicts, lists and tuples copied, as deep as they go; anything
    else inside is shared, and no user code runs. Beyond Python's recursion limit, or if
    another thread changes a dict while it is read, `value` itself."""
    kind = type(value)
    if kind not in _CONTAINERS:
        return value
    try:
        if kind is dict and _CONTAINERS.isdisjoint(map(type, value.values())):
            return dict(value)  # the common output, a flat map: checked and copied in C
        return _walk(value, {}, None)
    except (RecursionError, RuntimeError):  # (RuntimeError: changed while it was read)
        return value


def deep_copy(value: Any) -> Any:
    """A deep copy of `value`; raises what copying raises (a `__deepcopy__`, nesting past
    the recursion limit)."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if kind is dict and _IMMUTABLE.issuperset(map(type, value.values())):
        return dict(value)
    if kind in _CONTAINERS:
        return _walk(value, {}, copy.deepcopy)
    return copy.deepcopy(value)


def _walk(value: Any, memo: dict[int, Any], leaf: Callable[[Any], Any] | None) -> Any:
    """`value`, a container, copied; an item that is neither a container nor immutable is
    `leaf(item)` (None: shared)."""
    done = memo.get(id(value))
    if done is not None:
        return done

    def item_of(item: Any) -> Any:
        kind = type(item)
        if kind is dict and _IMMUTABLE.issuperset(map(type, item.values())):
            flat = memo.get(id(item))  # a flat map (a book level): copied in C
            if flat is None:
                flat = memo[id(item)] = dict(item)
            return flat
        if kind in _CONTAINERS:
            return _walk(item, memo, leaf)
        return item if leaf is None or kind in _IMMUTABLE else leaf(item)

    kind = type(value)
    copied: Any
    if kind is dict:
        copied = memo[id(value)] = {}
        for key, item in value.items():
            copied[key] = item_of(item)
        return copied
    if kind is list:
        copied = memo[id(value)] = []
        copied.extend(map(item_of, value))
        return copied
    memo[id(value)] = value  # a tuple reached again while it is copied: shared there
    copied = memo[id(value)] = tuple(map(item_of, value))
    return copied
