"""Topic prefixes: which can match an event, and why one cannot.

An event goes out on `workflow/<workflow_id>/<type>`, `emergency/<type>` or
`system/<type>` (`actors.events.topic_of`). A filter on topic prefixes (a webhook's `events`,
a dashboard's hello `topics`) that no topic can start with is a typo that would silently
match nothing, so it is refused with the reason this module gives.
"""

from __future__ import annotations

import re

from actors.event_types import EVENT_TYPES, SEQUENCED_TYPES, WorkflowEvent

__all__ = ["EMERGENCY_TYPES", "TOPIC_ROOTS", "prefix_problem", "topic_root"]

#: What every topic starts with (then a `/`).
TOPIC_ROOTS = ("workflow", "emergency", "system")

#: The types published under `emergency/`.
EMERGENCY_TYPES = frozenset({
    "emergency_state_changed", "risk_limit_warning", "risk_limit_exceeded",
})

#: What may stand where a workflow id goes in a prefix (ids are [A-Za-z0-9_.-]{1,128}).
_WORKFLOW_ID_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{0,128}")


def topic_root(kind: str) -> str:
    """The first part of the topic events of type `kind` go out on (a workflow event
    carries the WorkflowEvent keys)."""
    required: frozenset[str] = getattr(EVENT_TYPES[kind], "__required_keys__", frozenset())
    if WorkflowEvent.__required_keys__ <= required:
        return "workflow"
    return "emergency" if kind in EMERGENCY_TYPES else "system"


def prefix_problem(prefix: str) -> str | None:
    """Why no sequenced event's topic can start with `prefix`; None when one can."""
    if "/" not in prefix:  # "", "w", "workflow": the start of a root
        if any(root.startswith(prefix) for root in TOPIC_ROOTS):
            return None
        return f"{prefix!r} is no topic prefix: topics start with workflow/, emergency/ or system/"
    root, _, rest = prefix.partition("/")
    if root not in TOPIC_ROOTS:
        return f"{prefix!r} is no topic prefix: topics start with workflow/, emergency/ or system/"
    if root == "workflow":
        workflow_id, slash, rest = rest.partition("/")
        if not _WORKFLOW_ID_PREFIX_RE.fullmatch(workflow_id) or (slash and not workflow_id):
            return (f"{prefix!r}: no workflow id is {workflow_id!r} "
                    "(ids match [A-Za-z0-9_.-]{1,128})")
        if not slash:
            return None
    under = sorted(kind for kind in SEQUENCED_TYPES if topic_root(kind) == root)
    if any(kind.startswith(rest) for kind in under):
        return None
    return f"{prefix!r}: no {root}/ event type starts with {rest!r} (known: {', '.join(under)})"
