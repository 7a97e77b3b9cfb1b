"""Interval triggers: `[[workflows]] every_s` submits a workflow on a fixed schedule.

No drift: the n-th run is due at `start + n * every_s`, whatever the previous submits cost.
No pile-up: a trigger whose previous execution is still going skips its turn (counted, and
logged once per such execution), and a trigger that fell several periods behind (a stalled
process) runs once and counts the rest as skipped. One thread serves every trigger of an
engine; it sleeps until the next due time or until it is stopped.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from actors.config import WorkflowEntry
from actors.errors import EngineStopped, TradeloomError
from actors.execution import ExecutionHandle
from actors.inbox import MAX_WAIT_S
from actors.logs import get_logger

log = get_logger("tradeloom.triggers")

Submit = Callable[[str, str | None, str | None], ExecutionHandle]


@dataclass(slots=True)
class Trigger:
    workflow_id: str
    every_s: float
    bot_id: str | None
    strategy_id: str | None
    #: How many periods have passed since the start (the next is due at start + n * every).
    n: int = 0
    last: ExecutionHandle | None = None
    submitted: int = 0
    skipped: int = 0
    refused: int = 0
    #: The execution a skipped turn was last logged for: a run ten thousand periods long
    #: logged ten thousand `trigger_skipped` lines (a hundred a second at every_s = 0.01).
    skipped_for: str | None = None
    #: Refused since its last accepted submit: logged once when it starts and once when it
    #: ends (a halted daemon refuses every period, silently before).
    refusing: bool = False


class IntervalTriggers:
    def __init__(self, entries: Sequence[WorkflowEntry], submit: Submit, *,
                 monotonic: Callable[[], float],
                 wait: Callable[[float], bool] | None = None) -> None:
        """`monotonic` and `wait(seconds) -> stopped` are the clock (tests inject one)."""
        self._submit = submit
        self._monotonic = monotonic
        self.triggers = [Trigger(e.workflow.id, e.every_s, e.bot_id, e.strategy_id)
                         for e in entries if e.every_s is not None and e.workflow is not None]
        self._stopping = threading.Event()
        self._wait = wait if wait is not None else self._stopping.wait
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.triggers:
            return
        self._thread = threading.Thread(target=self.run, name="tradeloom-triggers",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, dict[str, int]]:
        """Counts by workflow id, summed over its triggers: one workflow listed twice (say
        for two bots) once reported the last one's counts only."""
        stats: dict[str, dict[str, int]] = {}
        for t in self.triggers:
            counts = stats.setdefault(t.workflow_id,
                                      {"submitted": 0, "skipped": 0, "refused": 0})
            counts["submitted"] += t.submitted
            counts["skipped"] += t.skipped
            counts["refused"] += t.refused
        return stats

    def run(self) -> None:
        """The trigger loop (`start()` runs it in its own thread)."""
        start = self._monotonic()
        due = [(start + t.every_s, i) for i, t in enumerate(self.triggers)]
        heapq.heapify(due)
        while not self._stopping.is_set():
            at, i = due[0]
            delay = at - self._monotonic()
            if delay > 0:
                # Capped: an `every_s` of 1e12 ("never") overflowed the wait and killed
                # the thread serving every trigger.
                if self._wait(min(delay, MAX_WAIT_S)):
                    return
                continue
            trigger = self.triggers[i]
            self._fire(trigger)
            now = self._monotonic()
            trigger.n += 1
            behind = int((now - start) // trigger.every_s) - trigger.n
            if behind > 0:  # stalled past whole periods: run once, count the rest
                trigger.n += behind
                trigger.skipped += behind
                log.warning("trigger_behind", workflow_id=trigger.workflow_id,
                            skipped=behind)
            heapq.heapreplace(due, (start + (trigger.n + 1) * trigger.every_s, i))

    def _fire(self, trigger: Trigger) -> None:
        last = trigger.last
        if last is not None and not last.done():
            trigger.skipped += 1
            if trigger.skipped_for != last.execution_id:  # once per run, however long
                trigger.skipped_for = last.execution_id
                log.info("trigger_skipped", workflow_id=trigger.workflow_id,
                         still_running=last.execution_id)
            return
        try:
            handle = self._submit(trigger.workflow_id, trigger.bot_id, trigger.strategy_id)
        except EngineStopped:
            self._stopping.set()
            return
        except TradeloomError as exc:
            trigger.refused += 1
            log.error("trigger_failed", workflow_id=trigger.workflow_id, error=str(exc))
            return
        result = handle.outcome()
        if result is not None and result.status == "refused":
            trigger.refused += 1  # HALT or a full queue: the next period tries again
            if not trigger.refusing:
                trigger.refusing = True
                log.warning("trigger_refused", workflow_id=trigger.workflow_id,
                            error_type=result.error_type, error=result.error,
                            note="logged once; each period tries again")
        else:
            trigger.submitted += 1
            if trigger.refusing:
                trigger.refusing = False
                log.info("trigger_accepted_again", workflow_id=trigger.workflow_id,
                         refused=trigger.refused)
        trigger.last = handle
