"""A small webhook receiver for tradeloom's `[[webhooks]]` (stdlib only).

    WEBHOOK_SECRET=... python examples/webhook_receiver.py --port 8088

It checks what every receiver should (docs/operations.md, "Webhooks"):

1. The signature: X-Tradeloom-Signature is "sha256=" + the hex HMAC-SHA256, keyed with the
   shared secret, of "<X-Tradeloom-Timestamp>.<raw body>". Compared in constant time.
2. The timestamp: older or newer than `tolerance_s` (default 300 s) is refused, so a
   captured request cannot be replayed later.
3. Duplicates: delivery is at least once, so the same seq may come twice (a retry, a
   restart); each event is handled once, by its `seq`. A seq counts as seen only once its
   handler returned: if the handler raises, the answer is 500 and tradeloom sends it again.

Answers: 204 handled (or a duplicate), 401 bad signature or stale timestamp, 400 not JSON
or no usable Content-Length, 413 a body over `BODY_MAX` bytes, 500 the handler failed.
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
#: Larger bodies are refused unread (a batch of 1000 events is far smaller).
BODY_MAX = 16 * 1024 * 1024


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
    # As bytes: compare_digest refuses str with non-ASCII characters (a forged header).
    return hmac.compare_digest(expected.encode(),
                               (signature or "").encode("utf-8", "surrogateescape"))


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
        self.failed = 0

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
            seq = event.get("seq")
            with self._lock:
                if seq in self._seen:
                    self.duplicates += 1
                    continue
            try:
                self.handle(event)
            except Exception:  # noqa: BLE001 - not seen: the retry hands it over again
                self.failed += 1
                return 500
            with self._lock:  # seen only once handled, or a failure would lose it
                self._seen[seq] = None
                if len(self._seen) > SEEN_MAX:
                    self._seen.popitem(last=False)
        return 204


def make_server(receiver: Receiver, host: str = "127.0.0.1", port: int = 0
                ) -> ThreadingHTTPServer:
    """An HTTP server (not started) that answers every POST with `receiver`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            status = self._status()
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _status(self) -> int:
            length = self.headers.get("Content-Length", "")
            if not (length.isascii() and length.isdigit()):
                self.close_connection = True  # the body's end is unknown
                return 400
            if int(length) > BODY_MAX:
                self.close_connection = True
                return 413
            return receiver.receive(self.headers, self.rfile.read(int(length)))

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
