"""The web gateway when the OS refuses the thread for a new connection (`can't start new
thread`): that connection is closed at once and its slot given back, the failure is one log
line, and the gateway goes on serving the next connections and stops cleanly."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from actors import Config, Engine
from actors.web_config import WebConfig
from transport.web.gateway import WebGateway

TOKEN = "test-token-0123456789"
DEADLINE_S = 5.0


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = Engine.start(Config.from_dict({"daemon": {"data_dir": str(tmp_path / "data")}}))
    yield engine
    engine.stop(timeout=5.0)


def test_a_connection_refused_its_thread_is_closed_and_the_next_one_served(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = WebGateway(WebConfig(listen="127.0.0.1:0", max_clients=1), engine,
                         env={"TRADELOOM_WEB_TOKEN": TOKEN})
    gateway.start()
    refusing = threading.Event()
    real_start = threading.Thread.start
    server: Any = gateway._server  # its connection handler: the thread to refuse

    def start(thread: threading.Thread) -> None:
        if refusing.is_set() and getattr(thread, "_target", None) is server.handler:
            refusing.clear()  # once
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    try:
        refusing.set()
        with capture_logs() as logs, pytest.raises((ConnectionClosed, InvalidHandshake,
                                                    OSError)), \
                connect(gateway.ws_url, open_timeout=DEADLINE_S) as refused:
            refused.recv(timeout=DEADLINE_S)
        assert not refusing.is_set()
        assert [line["event"] for line in logs] == ["web_connection_thread_failed"]
        # Served again, in the one slot there is (the refused connection gave it back).
        with connect(gateway.ws_url, open_timeout=DEADLINE_S) as ws:
            ws.send(json.dumps({"token": TOKEN}))
            assert json.loads(ws.recv(timeout=DEADLINE_S))["msg"] == "welcome"
    finally:
        stopper = threading.Thread(target=gateway.stop, daemon=True)
        stopper.start()
        stopper.join(15.0)
    assert not stopper.is_alive()
