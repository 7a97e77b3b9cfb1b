"""Five symbols trading at once on one engine, started one after another, and a halt in
the middle that stops every one of them.

    .venv/bin/python examples/concurrent.py           # a few rounds per symbol, then the halt
    .venv/bin/python examples/concurrent.py --quick   # the halt once every symbol has run once

Each symbol (BTC, ETH, SOL, MATIC, AVAX) has its own workflow (price -> analyse -> order) on
its own simulated exchange, submitted again and again by its own thread; the starts are
staggered. When every symbol has finished its rounds and has an execution in the middle of
its analysis, the engine is halted: those executions end `halted` before their order node
could start, and the threads' next submits are refused.
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
import threading
import time
from collections.abc import Callable
from typing import Any

from actors import Engine, Node, NodeContext, Workflow
from actors.execution import ExecutionResult
from actors.logs import configure
from examples.exchanges import SimulatedExchange

SYMBOLS = {"BTC": 50_000.0, "ETH": 3_000.0, "SOL": 150.0, "MATIC": 0.9, "AVAX": 35.0}
WAIT_S = 30.0


class Desk:
    """What the symbols' analyse nodes are doing right now, for the halt to be timed on a
    condition: every symbol in the middle of an analysis."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.analysing: set[str] = set()
        self.rounds: dict[str, int] = dict.fromkeys(SYMBOLS, 0)

    def wait_all_analysing(self, rounds: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(
                lambda: len(self.analysing) == len(SYMBOLS)
                and min(self.rounds.values()) >= rounds, timeout)


def symbol_workflow(symbol: str, exchange: SimulatedExchange, desk: Desk,
                    hold_s: float) -> Workflow:
    def price(ctx: NodeContext) -> dict[str, Any]:
        return {"symbol": symbol, "price": exchange.ticker()}

    def analyse(ctx: NodeContext) -> dict[str, Any]:
        with desk.changed:
            desk.analysing.add(symbol)
            desk.changed.notify_all()
        try:
            ctx.cancelled.wait(hold_s)  # the analysis takes a while; a halt cuts it short
        finally:
            with desk.changed:
                desk.analysing.discard(symbol)
        side = "buy" if exchange.ticker() >= ctx.upstream["price"]["price"] else "sell"
        return {"side": side}

    def order(ctx: NodeContext) -> dict[str, Any]:
        side, px = ctx.upstream["analyse"]["side"], ctx.upstream["price"]["price"]
        placed = exchange.place_order(ctx.idempotency_key, side, 1.0, px)
        return {"order": placed["id"], "side": side, "price": px}

    return Workflow(f"trend_{symbol.lower()}", nodes=[
        Node("price", price, category="provider", breaker=exchange.name),
        Node("analyse", analyse, depends_on=["price"], timeout_s=hold_s + 5.0),
        Node("order", order, category="action", depends_on=["analyse"]),
    ])


def trade(symbol: str, workflow: Workflow, engine: Engine, delay_s: float, desk: Desk,
          out: Callable[[str], None], results: list[ExecutionResult]) -> None:
    """One symbol's thread: starts after `delay_s`, submits round after round until the
    halt ends one (or refuses the next)."""
    time.sleep(delay_s)  # the staggered start
    out(f"{symbol:<5} starts")
    while True:
        result = engine.submit(workflow, bot_id=f"trend_{symbol.lower()}").result(WAIT_S)
        results.append(result)
        if result.status == "completed":
            placed = result.results["order"]
            out(f"{symbol:<5} {result.execution_id}  completed  {placed['side']} 1 @ "
                f"{placed['price']:g} ({placed['order']})")
            with desk.changed:
                desk.rounds[symbol] += 1
                desk.changed.notify_all()
            continue
        where = [n for n, node in result.nodes.items() if node["status"] == "cancelled"]
        out(f"{symbol:<5} {result.execution_id}  {result.status.upper()}"
            + (f" in {', '.join(where)}" if where else "") + f"  ({result.error})")
        return


def run(*, rounds: int, stagger_s: float, hold_s: float) -> dict[str, list[ExecutionResult]]:
    engine = Engine.start()
    desk = Desk()
    lock = threading.Lock()

    def out(line: str) -> None:
        with lock:
            print(line, flush=True)

    results: dict[str, list[ExecutionResult]] = {s: [] for s in SYMBOLS}
    threads = []
    workflows: dict[str, Workflow] = {}
    try:
        for i, (symbol, px) in enumerate(SYMBOLS.items()):
            exchange = SimulatedExchange(f"sim_{symbol.lower()}", price=px, seed=i)
            workflows[symbol] = symbol_workflow(symbol, exchange, desk, hold_s)
            thread = threading.Thread(target=trade, name=symbol, args=(
                symbol, workflows[symbol], engine, i * stagger_s, desk, out, results[symbol]))
            thread.start()
            threads.append(thread)
        if not desk.wait_all_analysing(rounds, WAIT_S):
            raise SystemExit(f"the five symbols were not all analysing within {WAIT_S} s")
        out(f"--- HALT while {len(desk.analysing)} symbols are mid-analysis ---")
        engine.halt("demo: stop every symbol at once")
        for thread in threads:
            thread.join(WAIT_S)
        after = engine.submit(workflows["BTC"]).result(WAIT_S)
        out(f"a new submit after the halt: {after.status}")
    finally:
        engine.stop()
    return results


def summary(results: dict[str, list[ExecutionResult]]) -> None:
    print("\nsymbol  completed  ended by the halt")
    stopped = 0
    for symbol, runs in results.items():
        done = sum(r.status == "completed" for r in runs)
        halted = [r.execution_id for r in runs if r.status == "halted"]
        stopped += bool(halted)
        print(f"{symbol:<7} {done:>9}  {', '.join(halted) or '-'}")
    print(f"{stopped} of {len(results)} symbols stopped by the halt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round per symbol, short")
    args = parser.parse_args(argv)
    configure(fmt="console", level="error")
    if args.quick:
        results = run(rounds=1, stagger_s=0.05, hold_s=0.15)
    else:
        results = run(rounds=3, stagger_s=0.5, hold_s=0.6)
    summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
