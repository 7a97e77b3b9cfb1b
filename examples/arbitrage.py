"""Cross-exchange arbitrage on simulated exchanges: two price providers, a spread
condition, and an action that buys low and sells high when the spread is worth it.

    .venv/bin/python examples/arbitrage.py            # 20 runs, then the journal's history
    .venv/bin/python examples/arbitrage.py --quick    # 5 runs
    tradeloom run examples.arbitrage:workflow --input threshold=5

As a script it runs in its own engine with a journal in a temporary directory, then reads
the execution history back from that journal (`engine.executions()`, `engine.execution(id)`).
`make run`'s daemon triggers the same workflow every second (examples/daemon.toml).
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
import json
import tempfile
from typing import Any

from actors import Config, Engine, Node, NodeContext, Workflow
from actors.logs import configure
from examples.exchanges import SimulatedExchange

binance = SimulatedExchange("binance", price=50_000.0, error_rate=0.02, seed=1)
coinbase = SimulatedExchange("coinbase", price=50_010.0, error_rate=0.02, seed=2)


def price_binance(ctx: NodeContext) -> dict[str, Any]:
    return {"exchange": "binance", "price": binance.ticker()}


def price_coinbase(ctx: NodeContext) -> dict[str, Any]:
    return {"exchange": "coinbase", "price": coinbase.ticker()}


def spread(ctx: NodeContext) -> bool:
    a = ctx.upstream["price_binance"]["price"]
    b = ctx.upstream["price_coinbase"]["price"]
    threshold = float(ctx.inputs.get("threshold", 10.0))
    ctx.log.info("spread", binance=a, coinbase=b, spread=round(abs(a - b), 2))
    return bool(abs(a - b) >= threshold)


def trade(ctx: NodeContext) -> dict[str, Any]:
    a = ctx.upstream["price_binance"]["price"]
    b = ctx.upstream["price_coinbase"]["price"]
    amount = float(ctx.inputs.get("amount", 0.01))
    low, high = (binance, coinbase) if a < b else (coinbase, binance)
    # The idempotency key is the client order id: a retry could never double the order.
    buy = low.place_order(f"{ctx.idempotency_key}:buy", "buy", amount, min(a, b))
    sell = high.place_order(f"{ctx.idempotency_key}:sell", "sell", amount, max(a, b))
    return {"buy": buy["id"], "sell": sell["id"], "profit": round(abs(a - b) * amount, 4)}


workflow = Workflow("arb_btc", nodes=[
    Node("price_binance", price_binance, category="provider", breaker="binance",
         timeout_s=2.0, backoff_min_s=0.05, backoff_max_s=1.0),
    Node("price_coinbase", price_coinbase, category="provider", breaker="coinbase",
         timeout_s=2.0, backoff_min_s=0.05, backoff_max_s=1.0),
    Node("spread", spread, category="condition", depends_on=["price_binance", "price_coinbase"]),
    Node("trade", trade, category="action", depends_on=["spread"], timeout_s=5.0),
])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 runs instead of 20")
    parser.add_argument("--threshold", type=float, default=5.0, help="spread worth trading")
    args = parser.parse_args(argv)
    runs = 5 if args.quick else 20
    configure(fmt="console", level="warning")  # the runs and the history, not every log line
    with tempfile.TemporaryDirectory(prefix="tradeloom-arbitrage-") as data_dir:
        config = Config.from_dict({"daemon": {"data_dir": data_dir}})
        engine = Engine.start(config)
        try:
            print(f"{runs} runs of {workflow.id}, journal in {data_dir}")
            for _ in range(runs):
                result = engine.submit(workflow, inputs={"threshold": args.threshold},
                                       bot_id="bot_001").result(timeout=30)
                trade_out = result.results.get("trade")
                what = (f"traded, profit {trade_out['profit']}" if trade_out
                        else "spread too small" if result.ok else result.error_type)
                print(f"  {result.execution_id}  {result.status:<9}  {what}")
            print_history(engine, runs)
        finally:
            engine.stop()
    return 0


def print_history(engine: Engine, runs: int) -> None:
    """What the journal says: the history table, and one execution in full."""
    history = engine.executions(workflow=workflow.id, limit=runs)
    print(f"execution history from the journal ({len(history)} executions, newest first):")
    for row in history:
        print(f"  {row['execution_id']}  {row['status']:<9}  {row['duration_ms']:7.1f} ms"
              f"  ended {row['ended_at']}")
    newest = engine.execution(history[0]["execution_id"])
    assert newest is not None
    print(f"execution {newest['execution_id']} from the journal:")
    for node_id, node in newest["nodes"].items():
        detail = node.get("outputs", node.get("error"))
        print(f"  {node_id:<15} {node['status']:<9} attempts {node['attempts']}  "
              f"{json.dumps(detail, default=str)}")


if __name__ == "__main__":
    sys.exit(main())
