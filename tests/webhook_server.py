"""A real HTTP endpoint on 127.0.0.1 for the webhook tests: scripted answers, recorded
requests, waits on a condition (never a bare sleep).

    with EndpointServer() as endpoint:          # an OS-picked port
        endpoint.script(503, 503)               # the next answers; then 200 by default
        ...
        endpoint.wait_for(lambda reqs: len(reqs) >= 3)
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    headers: dict[str, str]
    body: bytes
    #: What the endpoint answered.
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def seqs(self) -> list[int]:
        value = self.json
        return [e["seq"] for e in (value if isinstance(value, list) else [value])]


class EndpointServer:
    def __init__(self, port: int = 0) -> None:
        self.requests: list[Request] = []
        self._answers: deque[tuple[int, dict[str, str]]] = deque()
        self._changed = threading.Condition()
        self.default_status = 200
        #: When set: each request is held (after it is recorded) until this is set.
        self.gate: threading.Event | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server._changed:  # recorded as it arrives, before it is answered
                    status, headers = (server._answers.popleft() if server._answers
                                       else (server.default_status, {}))
                    server.requests.append(Request(dict(self.headers.items()), body, status))
                    server._changed.notify_all()
                if server.gate is not None:
                    server.gate.wait(30.0)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def script(self, *answers: int | tuple[int, dict[str, str]]) -> None:
        with self._changed:
            for answer in answers:
                self._answers.append(answer if isinstance(answer, tuple) else (answer, {}))

    def wait_for(self, predicate: Callable[[list[Request]], bool],
                 timeout: float = 10.0) -> list[Request]:
        with self._changed:
            ok = self._changed.wait_for(lambda: predicate(self.requests), timeout)
            assert ok, f"not within {timeout} s; requests: {[r.headers for r in self.requests]}"
            return list(self.requests)

    def delivered_seqs(self) -> list[int]:
        with self._changed:
            return [seq for r in self.requests for seq in r.seqs]

    def __enter__(self) -> EndpointServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
