"""The kill switch, step by step: a daily loss limit that warns at 80 % and halts at 100 %,
a manual halt and resume, the alert and reduce-only states, the on-halt hook that cancels
resting orders, the refusal to resume while a limit is exceeded, and the forced resume.

    .venv/bin/python examples/emergency_halt.py           # with short pauses between steps
    .venv/bin/python examples/emergency_halt.py --quick   # no pauses

It runs its own engine, in memory: never the daemon's journal (a halted journal stays
halted across restarts, so a demo halt there would stop `make run`'s workflows).
Each step prints what was done, then the events the engine published because of it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, sys.path[0] is examples/, where this directory's modules would shadow
# others (concurrent.py the standard library's concurrent package): put the repo root there
# instead, so that `examples.*` imports the way it does inside the daemon.
if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import queue
import time
from typing import Any

from actors import Config, Engine, Node, NodeContext, Workflow
from actors.errors import LimitExceeded
from actors.logs import configure
from examples import market_maker
from examples.market_maker import kraken

CONFIG = {
    "emergency": {
        "warn_at": 0.8,
        "limits": [{"name": "daily_loss", "kind": "daily_loss", "threshold": 1000.0,
                    "auto_halt": True}],
        "on_halt": [{"ref": "examples.hooks:cancel_resting_orders"}],
    },
}
EMERGENCY_TYPES = {"emergency_state_changed", "risk_limit_warning", "risk_limit_exceeded"}
#: The longest any one expected event may take to arrive.
WAIT_S = 10.0


def close_position(ctx: NodeContext) -> dict[str, Any]:
    return {"closed": "BTC", "amount": 0.5}


def open_position(ctx: NodeContext) -> dict[str, Any]:
    return {"opened": "ETH", "amount": 2.0}


# Two independent actions: one reduces exposure (allowed in REDUCE_ONLY), one adds to it.
rebalance = Workflow("rebalance", nodes=[
    Node("close_btc", close_position, category="action", reduces_risk=True),
    Node("open_eth", open_position, category="action"),
])


class Narrator:
    """Prints each step and the emergency events (and hook results) it caused, in order:
    events are queued by the subscription's thread and printed by the main one. One
    subscription for both kinds: two would each keep seq order, but not with each other."""

    def __init__(self, engine: Engine, pause_s: float) -> None:
        self.engine = engine
        self.pause_s = pause_s
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.step_no = 0
        engine.subscribe(self._queue, types={*EMERGENCY_TYPES, "execution_completed",
                                             "execution_failed"})

    def _queue(self, event: dict[str, Any]) -> None:
        if event["type"] in EMERGENCY_TYPES or event["workflow_id"] == "cancel_resting_orders":
            self.events.put(event)

    def step(self, text: str) -> None:
        if self.step_no and self.pause_s:
            time.sleep(self.pause_s)  # a pause for the reader, not a wait for the engine
        self.step_no += 1
        print(f"\n{self.step_no}. {text}")

    def say(self, text: str) -> None:
        print(f"   {text}")

    def expect(self, event_type: str, **fields: Any) -> dict[str, Any]:
        """Print events until one of `event_type` with `fields` arrives; it."""
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise SystemExit(f"no {event_type} {fields} within {WAIT_S} s") from None
            self.show(event)
            if event["type"] == event_type and all(event.get(k) == v for k, v in fields.items()):
                return event

    def show(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "emergency_state_changed":
            self.say(f"-> {event['previous_state']} to {event['state']}  "
                     f"(source {event['source']}, origin {event['origin']}): {event['reason']}")
        elif kind.startswith("risk_limit_"):
            self.say(f"-> {kind}: {event['limit']} {event['value']:g} of "
                     f"{event['threshold']:g} ({event['utilization']:.0%})")
        elif event.get("workflow_id") == "cancel_resting_orders":
            out = event.get("results", {}).get("cancel_all", {})
            self.say(f"-> on-halt hook {event['status']}: cancelled {out.get('count', 0)} "
                     f"resting order(s) {out.get('cancelled', {})}")


def quote(engine: Engine, narrator: Narrator) -> None:
    result = engine.submit(market_maker.workflow).result(timeout=WAIT_S)
    narrator.say(f"market maker {result.status}: resting orders on kraken: "
                 f"{[o['id'] for o in kraken.open_orders()]}")


def run(pause_s: float) -> None:
    engine = Engine.start(Config.from_dict(CONFIG))
    narrator = Narrator(engine, pause_s)
    try:
        narrator.step("NORMAL. The market maker quotes; its limit orders rest on the book.")
        quote(engine, narrator)

        narrator.step("The day's loss reaches 850 of the 1,000 limit: a warning, no halt.")
        engine.risk_update("daily_loss", value=850.0)
        narrator.expect("risk_limit_warning", limit="daily_loss")
        narrator.say(f"state is still {engine.state.value}")

        narrator.step("An operator halts by hand. The on-halt hook cancels the quotes.")
        engine.halt("operator: exchange feed looks wrong")
        narrator.expect("emergency_state_changed", state="HALT")
        narrator.expect("execution_completed")
        refused = engine.submit(market_maker.workflow).result(timeout=WAIT_S)
        narrator.say(f"a submit during HALT: {refused.status} ({refused.error})")

        narrator.step("The feed is fine again: resume.")
        engine.resume("operator: feed checked")
        narrator.expect("emergency_state_changed", state="NORMAL")

        narrator.step("Volatility: ALERT. Everything still runs; events carry the state.")
        engine.alert("volatility spike")
        narrator.expect("emergency_state_changed", state="ALERT")
        quote(engine, narrator)

        narrator.step("REDUCE_ONLY: only actions marked reduces_risk may run.")
        engine.reduce_only("cut exposure before the close")
        narrator.expect("emergency_state_changed", state="REDUCE_ONLY")
        result = engine.submit(rebalance).result(timeout=WAIT_S)
        for node_id, node in result.nodes.items():
            narrator.say(f"rebalance/{node_id}: {node['status']}"
                         + (f" {node['outputs']}" if node["status"] == "completed" else
                            " (refused: REDUCE_ONLY)"))
        engine.resume("exposure reduced")
        narrator.expect("emergency_state_changed", state="NORMAL")
        quote(engine, narrator)

        narrator.step("Another 200 lost: 1,050 is over the limit, and the engine halts itself.")
        engine.risk_update("daily_loss", delta=200.0)
        narrator.expect("risk_limit_exceeded", limit="daily_loss")
        narrator.expect("emergency_state_changed", state="HALT", source="risk_limit")
        narrator.expect("execution_completed")

        narrator.step("A plain resume is refused while the limit is exceeded.")
        try:
            engine.resume("let's carry on")
        except LimitExceeded as exc:
            narrator.say(f"resume refused: LimitExceeded: {exc}")
        else:
            raise SystemExit("a resume went through while the limit was exceeded")
        narrator.say(f"state is still {engine.state.value}")

        narrator.step("The risk officer forces it (resume with force=True).")
        engine.resume("risk officer: positions flat, accepted", force=True)
        narrator.expect("emergency_state_changed", state="NORMAL")

        narrator.step("The emergency history (engine.emergency_history()):")
        for entry in engine.emergency_history():
            narrator.say(f"seq {entry['seq']:>3}  {entry['previous_state']:>11} -> "
                         f"{entry['state']:<11} {entry['source']:<10} {entry['origin']:<6} "
                         f"{entry['reason']}")
    finally:
        engine.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="no pauses between the steps")
    args = parser.parse_args(argv)
    configure(fmt="console", level="error")  # the narrative, not the engine's logs
    run(pause_s=0.0 if args.quick else 0.8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
