"""A child process that halts an engine with an on-halt hook and stops at one point of the
hook's run, for tests/test_hook_crash.py to SIGKILL it there.

    python -m tests.hook_crash_child DATA_DIR SIDE_FILE POINT

POINT: `unsubmitted` (HALT committed and acknowledged, the hook not yet recorded: the kill
-9 right after a halt's reply), `running` (the hook recorded and running, its action not
started), `acted` (its action started: the intent is committed and the action has written
to SIDE_FILE), `ended` (the hook completed, and the HALT owes nothing). Prints "READY" once
there, with what the point needs committed, then waits to be killed.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any
from unittest import mock

from actors import Config, Engine, Node, NodeContext, Workflow

HOOK_ID = "cancel_all_orders"


def hook_workflow(side_file: Path, *, block_in: str | None = None,
                  reached: threading.Event | None = None) -> Workflow:
    """The hook: a provider, then the action that appends its execution id to
    `side_file` (the exchange's record of each cancel-all). `block_in`: the node that tells
    `reached` and then blocks for ever."""
    def blocks_here(node_id: str) -> None:
        if block_in == node_id:
            assert reached is not None
            reached.set()
            threading.Event().wait()

    def open_orders(ctx: NodeContext) -> list[str]:
        blocks_here("open_orders")
        return ["o1", "o2"]

    def cancel_all(ctx: NodeContext) -> int:
        with side_file.open("a", encoding="utf-8") as out:
            out.write(ctx.execution_id + "\n")
        blocks_here("cancel_all")
        return len(ctx.upstream["open_orders"])

    return Workflow(HOOK_ID, nodes=[
        Node("open_orders", open_orders, category="provider"),
        Node("cancel_all", cancel_all, category="action", depends_on=["open_orders"]),
    ])


def main(data_dir: str, side_file: str, point: str) -> None:
    reached = threading.Event()
    block_in = {"running": "open_orders", "acted": "cancel_all"}.get(point)
    hook = hook_workflow(Path(side_file), block_in=block_in, reached=reached)
    config = Config.from_dict({"daemon": {"data_dir": data_dir}})
    def never_submitted(*args: Any) -> None:
        reached.set()
        threading.Event().wait()

    if point == "unsubmitted":
        mock.patch.object(Engine, "_submit_hook", side_effect=never_submitted).start()
    engine = Engine.start(config, on_halt=[hook])
    engine.halt("crash test")  # returns once the HALT is committed
    if point == "ended":
        while engine.gate.hooks_owed is not None:
            reached.wait(0.01)
    else:
        assert reached.wait(20.0), f"the hook never reached {point}"
    assert engine.journal is not None
    engine.journal.barrier().wait(20.0)  # what the point needs is committed
    print("READY", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(*sys.argv[1:4])
