"""A market maker on one simulated exchange: read the price, requote a bid and an ask
around it as limit orders that rest on the book. A halt leaves those quotes behind; the
on-halt hook (examples/hooks.py) cancels them.

    tradeloom run examples.market_maker:workflow --input spread=20
"""

from __future__ import annotations

from typing import Any

from actors import Node, NodeContext, Workflow
from examples.exchanges import SimulatedExchange

kraken = SimulatedExchange("kraken", price=3_000.0, seed=3)


def mid_price(ctx: NodeContext) -> dict[str, Any]:
    return {"exchange": kraken.name, "price": kraken.ticker()}


def requote(ctx: NodeContext) -> dict[str, Any]:
    mid = ctx.upstream["mid_price"]["price"]
    half = float(ctx.inputs.get("spread", 20.0)) / 2
    amount = float(ctx.inputs.get("amount", 0.5))
    replaced = kraken.cancel_all_orders()  # one bid and one ask at a time
    bid = kraken.place_limit_order(f"{ctx.idempotency_key}:bid", "buy", amount, mid - half)
    ask = kraken.place_limit_order(f"{ctx.idempotency_key}:ask", "sell", amount, mid + half)
    return {"bid": bid["id"], "ask": ask["id"], "replaced": len(replaced)}


workflow = Workflow("mm_eth", nodes=[
    Node("mid_price", mid_price, category="provider", breaker="kraken", timeout_s=2.0),
    Node("requote", requote, category="action", depends_on=["mid_price"], timeout_s=5.0),
])
