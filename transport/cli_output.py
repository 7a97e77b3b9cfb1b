"""Plain-text output of the CLI's client commands, for people (`--json` is for machines).

Each function takes a reply of the control protocol (docs/protocol.md section 4) and returns
the lines to print; fields a reply lacks show as `-`, fields it adds are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from actors.json_text import plain_json

#: Control characters (C0, DEL, C1) as escapes: `\x1b`, `\n`.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
#: ... and the Unicode controls that reorder text (bidi embeddings, overrides, isolates,
#: marks) or end a line (U+2028, U+2029) as `\u202e`: a workflow id or an error holding
#: U+202E would show the rest of its line, "(attempt 1, will retry)" say, reversed.
_ESCAPES.update({code: f"\\u{code:04x}" for code in (
    0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)})


def printable(text: str) -> str:
    """`text` with its control characters written as escapes (`\\x1b`, `\\n`, `\\u202e`).
    Values come from user code and operators: an ANSI escape in one must not restyle, clear
    or retitle the terminal, nor a newline start a line that looks like another event's or
    row's, nor a bidi override reverse what follows it."""
    return text.translate(_ESCAPES)


def compact(value: Any) -> str:
    """One-line JSON of a value (outputs, inputs), as a person reads it."""
    try:
        return json.dumps(value, default=repr, separators=(", ", ": "))
    except (TypeError, ValueError, RecursionError):  # a bytes key, say: as its repr
        return json.dumps(plain_json(value), separators=(", ", ": "))


def a_map(value: Any) -> Mapping[str, Any]:
    """`value` if it is a map, else an empty one: a field of the wrong type shows as absent."""
    return value if isinstance(value, Mapping) else {}


def maps_in(value: Any) -> list[Mapping[str, Any]]:
    """The maps in `value` if it is a list (rows of another type are skipped), else none."""
    return [row for row in value if isinstance(row, Mapping)] if isinstance(value, list) else []


def text(value: Any) -> str:
    """A field as shown: `-` when absent (None)."""
    return "-" if value is None else str(value)


#: Past this, a utilisation is shown as ">" it: a limit fed a huge value (1e308) printed
#: a 300-digit percentage.
PERCENT_SHOWN_MAX = 9999


def percent(utilization: Any) -> str:
    if not isinstance(utilization, int | float) or utilization != utilization:  # (NaN)
        return "-"
    shown = utilization * 100
    if shown > PERCENT_SHOWN_MAX:
        return f">{PERCENT_SHOWN_MAX}%"
    if shown < -PERCENT_SHOWN_MAX:
        return f"<-{PERCENT_SHOWN_MAX}%"
    return f"{shown:.0f}%"


def number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else "-"


def duration(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "-"
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def uptime(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def limits_text(limits: Mapping[str, Any]) -> str:
    """`daily_loss 120/1000 (12%)` for each limit."""
    return ", ".join(
        f"{name} {number(figures.get('value'))}/{number(figures.get('threshold'))} "
        f"({percent(figures.get('utilization'))})"
        for name, figures in sorted(limits.items()) if isinstance(figures, Mapping)) or "none"


def breakers_text(breakers: Mapping[str, Any], *, open_only: bool = False) -> str:
    shown = {key: state for key, state in sorted(breakers.items())
             if not open_only or state != "closed"}
    return ", ".join(f"{key} {state}" for key, state in shown.items()) or "none"


def format_status(status: Mapping[str, Any]) -> str:
    state = text(status.get("state"))
    reason = status.get("reason")
    rows = [
        ("state", f"{state} ({reason})" if reason and state != "NORMAL" else state),
        ("running", f"{status.get('running', '-')}   queued {status.get('queued', '-')}"),
        ("workflows", ", ".join(map(str, _a_list(status.get("workflows")))) or "none"),
        ("breakers", breakers_text(a_map(status.get("breakers")))),
        ("limits", limits_text(a_map(status.get("limits")))),
        ("last seq", text(status.get("last_seq"))),
        ("uptime", uptime(status.get("uptime_s"))),
    ]
    if status.get("version"):
        rows.append(("version", str(status["version"])))
    return _pairs(rows)


def format_executions(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no executions"
    return _table(("EXECUTION", "WORKFLOW", "STATUS", "STARTED", "DURATION"), [
        (text(row.get("execution_id")), text(row.get("workflow_id")),
         text(row.get("status")), str(row.get("started_at") or "-"),
         duration(row.get("duration_ms")))
        for row in rows])


def format_execution(execution: Mapping[str, Any]) -> str:
    rows = [
        ("execution", text(execution.get("execution_id"))),
        ("workflow", text(execution.get("workflow_id"))),
        ("status", text(execution.get("status"))),
        ("started", str(execution.get("started_at") or "-")),
        ("ended", str(execution.get("ended_at") or "-")),
        ("duration", duration(execution.get("duration_ms"))),
    ]
    if "inputs" in execution:
        rows.append(("inputs", compact(execution["inputs"])))
    for key in ("bot_id", "strategy_id"):
        if execution.get(key):
            rows.append((key.replace("_", " "), str(execution[key])))
    if isinstance(execution.get("results"), str):  # cut whole by the journal: its note
        rows.append(("results", execution["results"]))
    if execution.get("error") or execution.get("error_type"):
        rows.append(("error", f"{execution.get('error_type') or 'Error'}: "
                              f"{execution.get('error') or ''}".rstrip()))
    lines = [_pairs(rows)]
    nodes = a_map(execution.get("nodes"))
    if nodes:
        lines.append("nodes:")
        lines.append(_table(("  NODE", "STATUS", "ATTEMPTS", "OUTPUT / ERROR"), [
            (f"  {node_id}", text(node.get("status")), text(node.get("attempts")),
             str(node["error"]) if node.get("error") is not None
             else compact(node["outputs"]) if "outputs" in node else "")
            for node_id, node in nodes.items() if isinstance(node, Mapping)]))
    return "\n".join(lines)


def format_intents(rows: Sequence[Mapping[str, Any]], *, resolved_too: bool) -> str:
    if not rows:
        return "no intents" if resolved_too else "no unresolved intents"
    return _table(("IDEMPOTENCY KEY", "NODE", "ATTEMPT", "OUTCOME", "STARTED"), [
        (text(row.get("idempotency_key")), text(row.get("node_id")),
         text(row.get("attempt")), str(row.get("outcome") or "unresolved"),
         str(row.get("started_at") or "-"))
        for row in rows])


def _a_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _pairs(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {printable(value)}" for key, value in rows)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip() for row in (header, *rows))
