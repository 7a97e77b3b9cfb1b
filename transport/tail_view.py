"""How `tradeloom tail` shows events to people: one styled line per event (`event_line`) and
the status header kept current (`StatusHeader`), both as rich renderables.

Colours say what kind of thing happened: failures red, completions green, emergency events
bold (HALT white on red), skips and progress dim. Without a terminal the same lines are
printed as plain text (`Text.plain`), and there is no header.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from transport.cli_output import compact, duration, number, percent, printable

#: Style of each event type's name and details.
TYPE_STYLES: dict[str, str] = {
    "execution_started": "cyan",
    "node_started": "blue",
    "node_completed": "green",
    "node_failed": "red",
    "node_retrying": "yellow",
    "node_skipped": "dim",
    "progress": "dim",
    "execution_completed": "bold green",
    "execution_failed": "bold red",
    "execution_halted": "bold yellow",
    "execution_cancelled": "yellow",
    "risk_limit_warning": "bold yellow",
    "risk_limit_exceeded": "bold red",
    "circuit_opened": "bold red",
    "circuit_half_open": "yellow",
    "circuit_closed": "green",
    "daemon_started": "bold magenta",
    "daemon_stopping": "bold magenta",
}
#: emergency_state_changed is styled by the state it enters.
STATE_STYLES: dict[str, str] = {
    "NORMAL": "bold green",
    "ALERT": "bold yellow",
    "REDUCE_ONLY": "bold magenta",
    "HALT": "bold white on red",
}
#: Outputs, inputs, error texts and halt reasons longer than this are cut on a line (tail is for
#: watching; `--json` has them whole). An error of a megabyte took 0.6 s to draw.
MAX_VALUE_CHARS = 120


def style_of(event: Mapping[str, Any]) -> str:
    kind = str(event.get("type", ""))
    if kind == "emergency_state_changed":
        return STATE_STYLES.get(str(event.get("state")), "bold yellow")
    return TYPE_STYLES.get(kind, "")


def event_line(event: Mapping[str, Any]) -> Text:
    """`   seq  time  type  workflow/execution  details` as one styled line."""
    style = style_of(event)
    stamp = str(event.get("timestamp", ""))[11:23] or "-"
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"{event.get('seq', '-'):>7}  ", style="dim")
    line.append(f"{stamp}  ", style="dim")
    line.append(f"{event.get('type', '?'):<23}", style=style)
    where = execution_label(event)
    if where:
        line.append(f"  {printable(where)}", style="bold" if style.startswith("bold") else "")
    details = describe(event)
    if details:
        line.append(f"  {printable(details)}", style=style if style not in ("blue", "cyan") else "")
    return line


def execution_label(event: Mapping[str, Any]) -> str:
    """`arb_btc/1f2e3d4c`: the workflow and the execution id's own part."""
    workflow = event.get("workflow_id")
    execution = str(event.get("execution_id") or "")
    if not workflow:
        return ""
    prefix = f"exec_{workflow}_"
    return f"{workflow}/{execution.removeprefix(prefix)}" if execution else str(workflow)


def _cut(value: Any) -> str:
    """A value (outputs, inputs) as one-line JSON, cut to MAX_VALUE_CHARS."""
    return shorten(compact(value))


def shorten(text: str) -> str:
    """`text` cut to MAX_VALUE_CHARS, the cut marked with "…"."""
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 1] + "…"


def _attempt(event: Mapping[str, Any]) -> str:
    attempt = event.get("attempt")
    return f" (attempt {attempt})" if isinstance(attempt, int) and attempt > 1 else ""


def describe(event: Mapping[str, Any]) -> str:
    """The interesting fields of an event, by type."""
    e = event
    kind = e.get("type")
    node = str(e.get("node_id", ""))
    if kind == "execution_started":
        inputs = e.get("inputs")
        return f"{e.get('node_count', '?')} nodes" + (f"  inputs {_cut(inputs)}" if inputs
                                                      else "")
    if kind == "node_started":
        return f"{node} ({e.get('node_category', '?')}){_attempt(e)}"
    if kind == "node_completed":
        cached = " cached" if e.get("cached") else ""
        return (f"{node} {duration(e.get('duration_ms'))}{cached}{_attempt(e)}  -> "
                f"{_cut(e.get('outputs'))}")
    if kind == "node_failed":
        final = "" if e.get("final", True) else ", will retry"
        return (f"{node} {e.get('error_type')}: {shorten(str(e.get('error')))} "
                f"(attempt {e.get('attempt', '?')}{final})")
    if kind == "node_retrying":
        return (f"{node} attempt {e.get('attempt', '?')} in "
                f"{duration(e.get('delay_ms'))} after {e.get('error_type')}")
    if kind == "node_skipped":
        return f"{node} {e.get('reason', '')}"
    if kind == "progress":
        return (f"{e.get('nodes_completed', '?')}/{e.get('nodes_total', '?')} done, "
                f"{e.get('nodes_in_progress', 0)} running")
    if kind == "execution_completed":
        return f"completed in {duration(e.get('duration_ms'))}"
    if isinstance(kind, str) and kind.startswith("execution_"):
        return (f"{e.get('status')} after {duration(e.get('duration_ms'))}: "
                f"{e.get('error_type')}: {shorten(str(e.get('error')))}")
    if kind == "emergency_state_changed":
        reason = f": {shorten(str(e['reason']))}" if e.get("reason") else ""
        return (f"{e.get('previous_state')} -> {e.get('state')}{reason} "
                f"(source {e.get('source')}, origin {e.get('origin')})")
    if kind in ("risk_limit_warning", "risk_limit_exceeded"):
        return (f"{e.get('limit')} {number(e.get('value'))}/{number(e.get('threshold'))} "
                f"({percent(e.get('utilization'))})")
    if isinstance(kind, str) and kind.startswith("circuit_"):
        return f"{e.get('breaker')} after {e.get('failures')} failures"
    if kind in ("daemon_started", "daemon_stopping"):
        return f"version {e.get('version')}, pid {e.get('pid')}"
    known = {"v", "seq", "wseq", "type", "timestamp", "execution_id", "correlation_id",
             "workflow_id", "bot_id", "strategy_id", "state"}
    return _cut({k: v for k, v in e.items() if k not in known})


class StatusHeader:
    """The header `tail` keeps on screen: a rich renderable built from the latest `status`
    reply (`update`), corrected at once by emergency events (`on_event`), and marked stale
    when the daemon does not answer (`unreachable`). Thread-safe: a poller thread updates
    it while rich's refresh thread renders it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {}
        self._unreachable_since: float | None = None
        self._clock = clock
        self.shown = 0

    def update(self, status: Mapping[str, Any]) -> None:
        with self._lock:
            self._status = dict(status)
            self._unreachable_since = None

    def unreachable(self) -> None:
        with self._lock:
            if self._unreachable_since is None:
                self._unreachable_since = self._clock()

    def on_event(self, event: Mapping[str, Any]) -> None:
        """Apply what an event says about the status before the next poll does."""
        with self._lock:
            self.shown += 1
            seq = event.get("seq")
            if isinstance(seq, int) and seq > self._status.get("last_seq", 0):
                self._status["last_seq"] = seq
            kind = event.get("type")
            if kind == "emergency_state_changed" and event.get("state"):
                self._status["state"] = event["state"]
                self._status["reason"] = event.get("reason")
            elif kind in ("risk_limit_warning", "risk_limit_exceeded") and event.get("limit"):
                limits = dict(self._status.get("limits") or {})
                limits[str(event["limit"])] = {key: event.get(key) for key in
                                               ("value", "threshold", "utilization")}
                self._status["limits"] = limits

    def __rich__(self) -> RenderableType:
        with self._lock:
            status = dict(self._status)
            down = self._unreachable_since
        state = str(status.get("state", "?"))
        top = Text()
        top.append(" tradeloom ", style="bold reverse")
        top.append("  ")
        top.append(f" {printable(state)} ", style=STATE_STYLES.get(state, "bold"))
        reason = status.get("reason")
        if reason and state != "NORMAL":
            top.append(f" {printable(shorten(str(reason)))}", style="italic")
        top.append(f"   running {status.get('running', '-')}   queued "
                   f"{status.get('queued', '-')}   seq {status.get('last_seq', '-')}   "
                   f"shown {self.shown}")
        if down is not None:
            top.append(f"   daemon unreachable for {self._clock() - down:.0f} s",
                       style="bold red")
        return Group(top, self._details(status))

    @staticmethod
    def _details(status: Mapping[str, Any]) -> Text:
        line = Text(" breakers: ", style="dim")
        open_breakers = {key: state for key, state in (status.get("breakers") or {}).items()
                         if state != "closed"}
        if open_breakers:
            for key, state in sorted(open_breakers.items()):
                line.append(f"{printable(str(key))} {printable(str(state))} ",
                            style="red" if state == "open" else "yellow")
        else:
            line.append("all closed ", style="green")
        line.append("  limits: ", style="dim")
        limits = status.get("limits") or {}
        if not limits:
            line.append("none")
        for name, figures in sorted(limits.items()):
            utilization = figures.get("utilization") if isinstance(figures, Mapping) else None
            level = utilization if isinstance(utilization, int | float) else 0.0
            style = "bold red" if level >= 1 else "yellow" if level >= 0.8 else "green"
            line.append(f"{printable(str(name))} {percent(utilization)} ", style=style)
        return line
