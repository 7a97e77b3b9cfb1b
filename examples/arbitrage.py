"""Cross-exchange arbitrage on simulated exchanges: two price providers, a spread
condition, and an action that buys low and sells high when the spread is worth it.

    tradeloom run examples.arbitrage:workflow --input threshold=5
"""

from __future__ import annotations

from typing import Any

from actors import Node, NodeContext, Workflow
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
    return abs(a - b) >= threshold


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
