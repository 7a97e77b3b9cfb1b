"""A small webhook receiver for tradeloom's `[[webhooks]]` (stdlib only).

    WEBHOOK_SECRET=... python examples/webhook_receiver.py --port 8088

It checks what every receiver should (docs/operations.md, "Webhooks"):

1. The signature: X-Tradeloom-Signature is "sha256=" + the hex HMAC-SHA256, keyed with the
   shared secret, of "<X-Tradeloom-Timestamp>.<raw body>". Compared in constant time.
2. The timestamp: older or newer than `tolerance_s` (default 300 s) is refused, so a
   captured request cannot be replayed later.
3. Duplicates: delivery is at least once, so the same seq may come twice (a retry, a
   restart); each event is handled once, by its `seq`.

Answers: 204 handled (or a duplicate), 401 bad signature or stale timestamp, 400 not JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Seqs remembered for de-duplication (the oldest are forgotten first).
SEEN_MAX = 100_000


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, *, now: float,
           tolerance_s: float = 300.0) -> bool:
    """True when `signature` signs "<timestamp>.<body>" with `secret` and `timestamp` is
    within `tolerance_s` of `now`."""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now - sent_at) > tolerance_s:
        return False
    expected = "sha256=" + hmac.new(secret, f"{timestamp}.".encode() + body,
                                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature or "")


class Receiver:
    """Verifies, de-duplicates by seq, and hands each new event to `handle(event)`."""

    def __init__(self, secret: bytes, handle: Callable[[dict[str, Any]], None], *,
                 tolerance_s: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.handle = handle
        self.tolerance_s = tolerance_s
        self.clock = clock
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()
        self.rejected = 0
        self.duplicates = 0

    def receive(self, headers: Any, body: bytes) -> int:
        """The HTTP status to answer."""
        ok = verify(self.secret, headers.get("X-Tradeloom-Timestamp", ""), body,
                    headers.get("X-Tradeloom-Signature", ""), now=self.clock(),
                    tolerance_s=self.tolerance_s)
        if not ok:
            self.rejected += 1
            return 401
        try:
            value = json.loads(body)
        except ValueError:
            return 400
        for event in value if isinstance(value, list) else [value]:
            with self._lock:
                seq = event.get("seq")
                if seq in self._seen:
                    self.duplicates += 1
                    continue
                self._seen[seq] = None
                if len(self._seen) > SEEN_MAX:
                    self._seen.popitem(last=False)
            self.handle(event)
        return 204


def make_server(receiver: Receiver, host: str = "127.0.0.1", port: int = 0
                ) -> ThreadingHTTPServer:
    """An HTTP server (not started) that answers every POST with `receiver`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status = receiver.receive(self.headers, self.rfile.read(length))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the events are what this prints."""

    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--secret-env", default="WEBHOOK_SECRET",
                        help="the environment variable holding the shared secret")
    args = parser.parse_args()
    secret = os.environ.get(args.secret_env)
    if not secret:
        parser.error(f"set {args.secret_env} to the webhook's secret")
    receiver = Receiver(secret.encode(), lambda event: print(
        f"{event.get('seq')} {event.get('type')}", flush=True))
    server = make_server(receiver, args.host, args.port)
    print(f"listening on http://{args.host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
