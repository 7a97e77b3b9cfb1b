"""Webhooks benchmark: a slow endpoint must not slow workflows.

In one run, interleaved rounds (A, B, A, B, ...) of the core workflow (bench/core.py:
provider -> condition -> action, closed loop at `--concurrency`) on an engine with a
journal, A without webhooks, B with a `[[webhooks]]` deliverer attached to a local endpoint
that takes `--endpoint-s` (2 s) per request and gets every event. Reports workflows/s per
round, medians, and B/A (the target: within 10 %, i.e. >= 0.90), plus how far behind the
deliverer was at the end (it reads committed events at its own pace; the engine never
waits for it).

    .venv/bin/python bench/webhooks.py               # 3 rounds each of 3,000 workflows
    .venv/bin/python bench/webhooks.py --quick       # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors import Config, Engine
from actors.webhook import WebhookManager
from bench.core import engine_throughput


def slow_endpoint(delay_s: float) -> ThreadingHTTPServer:
    """A local endpoint that answers 204 after `delay_s` (a slow receiver)."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            stop.wait(delay_s)  # the receiver's own slowness; cut short at shutdown
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.stop_event = stop  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server


def one_round(with_webhook: bool, port: int, concurrency: int, total: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="tl-bench-webhooks-") as data_dir:
        raw: dict[str, Any] = {"daemon": {"data_dir": data_dir}}
        if with_webhook:
            raw["webhooks"] = [{"name": "slow", "url": f"http://127.0.0.1:{port}/",
                                "secret": "bench", "allow_private": True, "timeout_s": 30}]
        config = Config.from_dict(raw)
        engine = Engine.start(config)
        manager = None
        try:
            if with_webhook:
                assert engine.journal is not None
                manager = WebhookManager(config.webhooks, engine.journal, environ={})
                manager.start()
            engine_throughput(engine, concurrency, max(50, total // 10))  # warm-up
            rate = engine_throughput(engine, concurrency, total)
            behind = 0.0
            if manager is not None:
                status = manager.status()[0]
                behind = float(engine.status()["last_seq"] - status["next_seq"] + 1)
            return {"wf_s": rate, "behind": behind}
        finally:
            if manager is not None:
                manager.stop(timeout=0.5)
            engine.stop(timeout=5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (1 small round)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--total", type=int, default=3000, help="workflows per round")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--endpoint-s", type=float, default=2.0,
                        help="seconds the endpoint takes per request (default 2)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.total = 1, 200
    server = slow_endpoint(args.endpoint_s)
    port = server.server_address[1]
    rates: dict[bool, list[float]] = {False: [], True: []}
    try:
        for i in range(args.rounds):
            order = (False, True) if i % 2 == 0 else (True, False)
            for with_webhook in order:
                result = one_round(with_webhook, port, args.concurrency, args.total)
                rates[with_webhook].append(result["wf_s"])
                label = "with slow webhook" if with_webhook else "without webhook  "
                extra = (f", deliverer {result['behind']:.0f} events behind"
                         if with_webhook else "")
                print(f"round {i + 1} {label}: {result['wf_s']:8.1f} wf/s{extra}", flush=True)
    finally:
        server.stop_event.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
    a, b = statistics.median(rates[False]), statistics.median(rates[True])
    ratio = b / a
    note = " (quick: a smoke run, not a measurement)" if args.quick else ""
    print(f"median wf/s: without {a:.1f}, with a {args.endpoint_s:g} s endpoint {b:.1f}; "
          f"ratio with/without {ratio:.3f} (target >= 0.90){note}", flush=True)


if __name__ == "__main__":
    main()
