"""A child process running a whole engine on a data_dir, for the engine's crash and
disk-full tests (tests/test_engine_crash.py).

    python -m tests.engine_crash_child load DATA_DIR SIDE_FILE ROUND [HALT_AFTER]
        recover, then submit continuously (one by one and in bursts of 100) a workflow
        provider -> condition -> action, move a risk limit, and (HALT_AFTER > 0) halt once
        the subscriber has seen that many events; until killed
    python -m tests.engine_crash_child fsize DATA_DIR
        the same load under RLIMIT_FSIZE until the engine halts on a failed write; "DONE"

The action appends its idempotency key to SIDE_FILE (O_APPEND, fsync) before returning:
the parent counts how often each action really ran, across kills and recoveries.

Output lines (each flushed; the parent may SIGKILL at any point; a cut line is ignored):
    B                           about to start the engine (and recover)
    I <execution_id>            recovery has just published this one's interruption
    C <seq>                     (until R) a commit: events up to seq are durable
    O <execution_id> <status>   open in the journal at start (recovery ends it interrupted)
    U <idempotency_key>         an action intent without an outcome at start
    R <last_seq> <state> <pos>  started: recovery's last seq, the state, limit pos's value
    Z <status>                  a submit tried right after a start in HALT
    Q <seq>                     the subscriber was given this seq
    X <execution_id>            submit returned it and its record is committed
    D <execution_id> <json>     execution_completed seen by the subscriber: its results
    L <value>                   risk_update("pos", value) returned
    H <state>                   halt() returned
    F <failures> <state>        (fsize) the engine saw the failed write
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import sys
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import structlog

from actors import Config, EmergencyState, Engine, Node, NodeContext, Workflow
from actors.eventlog import EventLog
from actors.execution import ExecutionHandle

BURST = 100
_out = threading.Lock()


def say(line: str) -> None:
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def make_workflow(side_file: str | None) -> Workflow:
    def price(ctx: NodeContext) -> dict[str, float]:
        return {"price": 100.0 + ctx.inputs.get("n", 0) % 7}

    def check(ctx: NodeContext) -> bool:
        return bool(ctx.upstream["price"]["price"] > 0)

    def trade(ctx: NodeContext) -> dict[str, str]:
        key = ctx.idempotency_key
        if side_file is not None:
            fd = os.open(side_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{key}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        return {"order": key}

    return Workflow("crash_wf", nodes=[
        Node("price", price, category="provider"),
        Node("check", check, category="condition", depends_on=["price"]),
        Node("trade", trade, category="action", depends_on=["check"]),
    ])


def config(data_dir: str) -> Config:
    return Config.from_dict({
        "daemon": {"data_dir": data_dir, "max_concurrent_executions": 40},
        "emergency": {"limits": [{"name": "pos", "kind": "custom", "threshold": 1e15}]},
    })


class Load:
    """Submitters, a risk feed and a subscriber that print what they were given."""

    def __init__(self, engine: Engine, workflow: Workflow, round_: int, halt_after: int,
                 ) -> None:
        self.engine = engine
        self.workflow = workflow
        self.round = round_
        self.halt_after = halt_after
        self.seen = 0
        self.halt_due = threading.Event()
        self.stop = threading.Event()

    def on_event(self, event: dict[str, Any]) -> None:
        say(f"Q {event['seq']}")
        if event["type"] == "execution_completed":
            say(f"D {event['execution_id']} {json.dumps(event['results'], sort_keys=True)}")
        self.seen += 1
        if self.halt_after and self.seen >= self.halt_after:
            self.halt_due.set()

    def accepted(self, handle: ExecutionHandle) -> bool:
        """Printed once its record is committed: what a control client would be told."""
        if handle.done() and handle.result(0).status == "refused":
            return False  # refused (HALT, overloaded): never recorded
        if self.engine.wait_recorded(handle, 10.0):
            say(f"X {handle.execution_id}")
            return True
        return False

    def one_by_one(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            handle = self.engine.submit(self.workflow, {"n": n})
            if self.accepted(handle):
                handle.result(30.0)
            elif self.engine.state is EmergencyState.HALT:
                self.stop.wait(0.01)  # refused: nothing to do until killed

    def bursts(self) -> None:
        n = 0
        while not self.stop.is_set():
            handles = []
            for _ in range(BURST):
                n += 1
                handles.append(self.engine.submit(self.workflow, {"n": n}, priority=n % 3))
            accepted = [h for h in handles if self.accepted(h)]
            for handle in accepted:
                handle.result(30.0)
            if not accepted:
                self.stop.wait(0.01)

    def risk_feed(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            value = float(self.round * 1_000_000 + i)
            self.engine.risk_update("pos", value)
            say(f"L {value:.1f}")
            self.stop.wait(0.005)

    def halter(self) -> None:
        if self.halt_after and self.halt_due.wait():
            reply = self.engine.halt("crash test halt")
            say(f"H {reply['state']}")

    def start(self) -> None:
        for target in (self.one_by_one, self.bursts, self.risk_feed, self.halter):
            threading.Thread(target=target, daemon=True).start()


def start_engine(data_dir: str, side_file: str | None) -> tuple[Engine, Workflow]:
    workflow = make_workflow(side_file)
    engine = Engine.start(config(data_dir))
    durable = engine._durable
    assert durable is not None
    for record in durable.recovery.open_executions:
        say(f"O {record['execution_id']} {record['status']}")
    for intent in durable.recovery.unresolved_intents:
        say(f"U {intent['idempotency_key']}")
    engine.register(workflow)
    pos = engine.status()["limits"]["pos"]["value"]
    say(f"R {durable.recovery.last_seq} {engine.state.value} {pos:.1f}")
    return engine, workflow


def load(data_dir: str, side_file: str, round_: int, halt_after: int) -> None:
    started = tap_commits_until_started()
    say("B")  # starting: a kill now lands in the engine's start-up and recovery
    engine, workflow = start_engine(data_dir, side_file)
    started.set()
    if engine.state is EmergencyState.HALT:
        say(f"Z {engine.submit(workflow).result(5).status}")
        engine.resume("crash test: carry on")
    run = Load(engine, workflow, round_, halt_after)
    engine.subscribe(run.on_event)
    run.start()
    threading.Event().wait()  # until killed


def fsize(data_dir: str) -> None:
    engine, workflow = start_engine(data_dir, None)
    run = Load(engine, workflow, 1, 0)
    engine.subscribe(run.on_event)
    for n in range(20):  # some commits before the disk fills
        engine.submit(workflow, {"n": n}).result(10)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    sizes = [os.path.getsize(p) for p in Path(data_dir).glob("journal.db*")]
    limit = max(sizes) + 256 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    threading.Thread(target=run.one_by_one, daemon=True).start()
    threading.Thread(target=run.bursts, daemon=True).start()
    halted = threading.Event()
    while not halted.wait(0.005):  # the HALT event itself cannot be committed: poll
        if engine.state is EmergencyState.HALT:
            halted.set()
    status = engine.status()
    say(f"F {status['journal']['failures']} {status['state']}")
    say("DONE")
    sys.stdin.read()


def tap_recovery(logger: Any, method: str, entry: Any) -> Any:
    """A structlog processor: says which execution recovery just ended; drops the rest."""
    if entry.get("event") == "execution_interrupted":
        say(f"I {entry['execution_id']}")
    raise structlog.DropEvent


def tap_commits_until_started() -> threading.Event:
    """Say each commit ("C <seq>") until the returned event is set: the parent can kill
    between the commits of a recovery."""
    started = threading.Event()
    mark_committed = EventLog.mark_committed

    def tapped(log: EventLog, seq: int) -> None:
        mark_committed(log, seq)
        if not started.is_set():
            say(f"C {seq}")

    # patched for the rest of this child process (never stopped): it exits when done
    mock.patch.object(EventLog, "mark_committed", tapped).start()
    return started


def main() -> None:
    structlog.configure(processors=[tap_recovery],
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    mode = sys.argv[1]
    if mode == "load":
        halt_after = int(sys.argv[5]) if len(sys.argv) > 5 else 0
        load(sys.argv[2], sys.argv[3], int(sys.argv[4]), halt_after)
    elif mode == "fsize":
        fsize(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
