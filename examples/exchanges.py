"""A simulated exchange: a random-walk price, a small latency, occasional hiccups.

Deterministic per name when seeded, thread-safe, and with an order book of client order
ids so that an action that ran twice would show (it never should).

Two kinds of order: `place_order` fills at once (a market order, what the arbitrage
uses); `place_limit_order` rests on the book (status "open") until `cancel_all_orders`
cancels it. Every exchange made in this process is listed by `all_exchanges()`, so an
on-halt hook can reach the ones the workflows trade on (examples/hooks.py).
"""

from __future__ import annotations

import random
import threading
import time
import weakref

Order = dict[str, float | str]

# Every SimulatedExchange of this process, by name (weak: an exchange a test drops goes).
_registry: weakref.WeakValueDictionary[str, SimulatedExchange] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


def all_exchanges() -> list[SimulatedExchange]:
    """Every simulated exchange alive in this process, sorted by name."""
    with _registry_lock:
        return sorted(_registry.values(), key=lambda exchange: exchange.name)


class SimulatedExchange:
    def __init__(self, name: str, *, price: float = 50_000.0, latency_s: float = 0.0005,
                 error_rate: float = 0.0, seed: int | None = None) -> None:
        self.name = name
        self._price = price
        self._latency_s = latency_s
        self._error_rate = error_rate
        self._rng = random.Random(seed if seed is not None else hash(name))
        self._lock = threading.Lock()
        self.orders: dict[str, Order] = {}
        with _registry_lock:
            _registry[name] = self

    def ticker(self) -> float:
        with self._lock:
            self._maybe_fail()
            self._price *= 1 + self._rng.gauss(0, 0.0005)
            price = self._price
        if self._latency_s:
            time.sleep(self._latency_s)
        return round(price, 2)

    def place_order(self, client_order_id: str, side: str, amount: float,
                    price: float) -> Order:
        """A market order: filled at once."""
        return self._place(client_order_id, side, amount, price, "filled")

    def place_limit_order(self, client_order_id: str, side: str, amount: float,
                          price: float) -> Order:
        """A limit order: it rests on the book ("open") until cancelled."""
        return self._place(client_order_id, side, amount, price, "open")

    def open_orders(self) -> list[Order]:
        with self._lock:
            return [dict(o) for o in self.orders.values() if o["status"] == "open"]

    def cancel_all_orders(self) -> list[str]:
        """Cancel every resting order; the ids of those cancelled. Never fails: a kill
        switch's clean-up must not be the thing that breaks."""
        with self._lock:
            cancelled = []
            for order in self.orders.values():
                if order["status"] == "open":
                    order["status"] = "cancelled"
                    cancelled.append(str(order["id"]))
            return cancelled

    def _place(self, client_order_id: str, side: str, amount: float, price: float,
               status: str) -> Order:
        with self._lock:
            if client_order_id in self.orders:  # idempotent on the client order id
                return dict(self.orders[client_order_id])
            self._maybe_fail()
            order: Order = {"id": f"{self.name}-{len(self.orders) + 1}", "side": side,
                            "amount": amount, "price": price,
                            "client_order_id": client_order_id, "status": status}
            self.orders[client_order_id] = order
            placed = dict(order)
        if self._latency_s:
            time.sleep(self._latency_s)
        return placed

    def _maybe_fail(self) -> None:
        if self._error_rate and self._rng.random() < self._error_rate:
            raise ConnectionError(f"{self.name}: connection reset")
