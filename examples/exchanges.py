"""A simulated exchange: a random-walk price, a small latency, occasional hiccups.

Deterministic per name when seeded, thread-safe, and with an order book of client order
ids so that an action that ran twice would show (it never should).
"""

from __future__ import annotations

import random
import threading
import time


class SimulatedExchange:
    def __init__(self, name: str, *, price: float = 50_000.0, latency_s: float = 0.0005,
                 error_rate: float = 0.0, seed: int | None = None) -> None:
        self.name = name
        self._price = price
        self._latency_s = latency_s
        self._error_rate = error_rate
        self._rng = random.Random(seed if seed is not None else hash(name))
        self._lock = threading.Lock()
        self.orders: dict[str, dict[str, float | str]] = {}

    def ticker(self) -> float:
        with self._lock:
            self._maybe_fail()
            self._price *= 1 + self._rng.gauss(0, 0.0005)
            price = self._price
        if self._latency_s:
            time.sleep(self._latency_s)
        return round(price, 2)

    def place_order(self, client_order_id: str, side: str, amount: float,
                    price: float) -> dict[str, float | str]:
        with self._lock:
            if client_order_id in self.orders:  # idempotent on the client order id
                return self.orders[client_order_id]
            self._maybe_fail()
            order = {"id": f"{self.name}-{len(self.orders) + 1}", "side": side,
                     "amount": amount, "price": price, "client_order_id": client_order_id}
            self.orders[client_order_id] = order
        if self._latency_s:
            time.sleep(self._latency_s)
        return order

    def _maybe_fail(self) -> None:
        if self._error_rate and self._rng.random() < self._error_rate:
            raise ConnectionError(f"{self.name}: connection reset")
