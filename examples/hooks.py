"""An on-halt hook: cancel every resting order on the simulated exchanges.

    [[emergency.on_halt]]
    ref = "examples.hooks:cancel_resting_orders"

The engine submits it each time HALT is entered, exempt from the halt, with the halt's
`halt_reason`, `halt_source` and `halt_origin` as inputs. Its action runs even though no
other action may start in HALT (a hook's actions count as `reduces_risk`).
"""

from __future__ import annotations

from typing import Any

from actors import Node, NodeContext, Workflow
from examples.exchanges import all_exchanges


def cancel_everything(ctx: NodeContext) -> dict[str, Any]:
    cancelled = {exchange.name: exchange.cancel_all_orders() for exchange in all_exchanges()}
    count = sum(len(ids) for ids in cancelled.values())
    ctx.log.warning("resting_orders_cancelled", count=count,
                    halt_reason=ctx.inputs.get("halt_reason"))
    return {"cancelled": {name: ids for name, ids in cancelled.items() if ids},
            "count": count, "halt_reason": ctx.inputs.get("halt_reason")}


cancel_resting_orders = Workflow("cancel_resting_orders", nodes=[
    Node("cancel_all", cancel_everything, category="action", timeout_s=5.0),
])
