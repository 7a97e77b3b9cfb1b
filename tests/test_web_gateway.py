"""The WebSocket gateway without a browser: a real engine (journal on) and a real gateway
on 127.0.0.1 (an OS-picked port), spoken to with websockets' own sync client.

Events are synthetic `circuit_closed` events emitted through the engine's sink: valid
events with a `breaker` string as big as a test needs, cheap to make by the thousand.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from actors import Config, Engine
from actors.errors import ConfigError
from actors.subscription import LogReader
from actors.web_config import WebConfig, parse_web
from tests.engine_journal_helpers import captured_logs
from transport.web.actions import WebActions
from transport.web.gateway import WebGateway
from transport.web.refusals import RefusalLog
from transport.web.session import FIRST_READ, STALL_S

TOKEN = "test-token-0123456789"
DEADLINE_S = 20.0


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = Engine.start(Config.from_dict({
        "daemon": {"data_dir": str(tmp_path / "data")},
        "emergency": {"limits": [{"name": "daily_loss", "kind": "daily_loss",
                                  "threshold": 100.0}]},
    }))
    yield engine
    engine.stop(timeout=5.0)


def start_gateway(engine: Engine, *, max_clients: int = 16, **knobs: Any) -> WebGateway:
    gateway = WebGateway(WebConfig(listen="127.0.0.1:0", max_clients=max_clients), engine,
                         env={"TRADELOOM_WEB_TOKEN": TOKEN}, **knobs)
    gateway.start()
    return gateway


@pytest.fixture
def gateway(engine: Engine) -> Iterator[WebGateway]:
    gateway = start_gateway(engine)
    yield gateway
    gateway.stop()


def emit(engine: Engine, count: int, size: int = 8) -> None:
    """`count` valid events, in batches, and wait until they are committed."""
    for start in range(0, count, 500):
        engine.sink.emit([{"v": 1, "type": "circuit_closed", "breaker": "b" * size,
                           "failures": 0} for _ in range(min(500, count - start))])
    assert engine.journal_flush(DEADLINE_S)  # committed: what readers (and clients) see


def hello(ws: ClientConnection, **fields: Any) -> dict[str, Any]:
    """Send a hello (the test token unless given) and return the welcome."""
    ws.send(json.dumps({"token": TOKEN, **fields}))
    return recv(ws)


def recv(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=DEADLINE_S))
    return message


def collect_until(ws: ClientConnection, last_seq: int) -> list[int]:
    """Every event seq received until `last_seq` (heartbeats skipped; anything else fails)."""
    seqs: list[int] = []
    while not seqs or seqs[-1] < last_seq:
        message = recv(ws)
        if message["msg"] == "events":
            seqs += [e["seq"] for e in message["events"]]
        else:
            assert message["msg"] == "heartbeat", message
    return seqs


def wait_until(predicate: Callable[[], bool]) -> bool:
    """Poll a condition in the gateway (no event to wait on there) until DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def request(ws: ClientConnection, op: str, **args: Any) -> dict[str, Any]:
    """A request and its reply (events and heartbeats in between skipped)."""
    ws.send(json.dumps({"id": op, "op": op, **args}))
    while True:
        message = recv(ws)
        if message["msg"] == "reply" and message["id"] == op:
            return message


def test_replay_then_live_in_seq_order_no_gap_no_duplicate(engine: Engine,
                                                           gateway: WebGateway) -> None:
    emit(engine, 1200)  # more than one batch of replay
    replayed_to = engine.sink.log.committed_seq
    more = threading.Thread(target=emit, args=(engine, 1500))
    with connect(gateway.ws_url) as ws:
        welcome = hello(ws, since_seq=1)
        assert welcome["msg"] == "welcome" and welcome["last_seq"] >= replayed_to
        more.start()  # live events committed while the replay is streaming
        more.join(DEADLINE_S)
        seqs = collect_until(ws, engine.sink.log.committed_seq)
    assert seqs == list(range(1, seqs[-1] + 1))
    assert seqs[-1] >= replayed_to + 1500


def test_topics_filter_and_live_start(engine: Engine, gateway: WebGateway) -> None:
    emit(engine, 10)
    with connect(gateway.ws_url) as ws:
        welcome = hello(ws, topics=["emergency/"])  # no since_seq: live from now
        assert welcome["next_seq"] == engine.sink.log.committed_seq + 1
        emit(engine, 5)
        engine.halt("filter test", origin="api")
        message = recv(ws)
        while message["msg"] != "events":
            message = recv(ws)
    assert [e["type"] for e in message["events"]] == ["emergency_state_changed"]
    assert message["next_seq"] == engine.sink.log.committed_seq + 1


@pytest.mark.parametrize("fields", [{}, {"token": ""}, {"token": "wrong"}, {"token": 123}])
def test_missing_or_wrong_token_refused(gateway: WebGateway, fields: dict[str, Any]) -> None:
    with connect(gateway.ws_url) as ws:
        ws.send(json.dumps({"since_seq": 1, **fields}))
        message = recv(ws)
        assert message == {"msg": "error", "error": {"code": "unauthorized",
                                                     "message": "missing or wrong token"}}
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=DEADLINE_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_wrong_origin_refused_own_origin_accepted(gateway: WebGateway) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(gateway.ws_url, origin=Origin("http://evil.example:8450"))
    assert refused.value.response.status_code == 403
    own = Origin(f"http://127.0.0.1:{gateway.port}")
    with connect(gateway.ws_url, origin=own) as ws:
        assert hello(ws)["msg"] == "welcome"


def test_clients_past_max_clients_are_answered_503_until_one_leaves(engine: Engine) -> None:
    gateway = start_gateway(engine, max_clients=2)
    try:
        with connect(gateway.ws_url) as first, connect(gateway.ws_url) as second:
            assert hello(first)["msg"] == hello(second)["msg"] == "welcome"
            with pytest.raises(InvalidStatus) as refused:
                connect(gateway.ws_url)
            assert refused.value.response.status_code == 503
        assert wait_until(lambda: not gateway.sessions())
        with connect(gateway.ws_url) as third:
            assert hello(third)["msg"] == "welcome"
    finally:
        gateway.stop()


def test_control_actions_go_through_the_engine_with_origin_web(engine: Engine,
                                                               gateway: WebGateway) -> None:
    with connect(gateway.ws_url) as ws:
        hello(ws)
        reply = request(ws, "halt", reason="from the page", origin="cli")
        assert reply["ok"] and reply["result"] == {"state": "HALT", "previous_state": "NORMAL"}
        assert engine.state.value == "HALT"
        changed = [e for e in engine.replay(1)["events"]
                   if e["type"] == "emergency_state_changed"]
        assert changed[-1]["origin"] == "web" and changed[-1]["reason"] == "from the page"

        engine.risk_update("daily_loss", 150.0)  # exceeded: resume refused unless forced
        refused = request(ws, "resume", reason="try")
        assert not refused["ok"] and refused["error"]["code"] == "limit_exceeded"
        assert engine.state.value == "HALT"
        forced = request(ws, "resume", reason="forced", force=True)
        assert forced["ok"] and forced["result"]["state"] == "NORMAL"

        status = request(ws, "status")["result"]
        assert status["limits"]["daily_loss"]["value"] == 150.0 and status["warn_at"] == 0.8
        assert request(ws, "submit", workflow="x")["error"]["code"] == "unknown_op"
        assert request(ws, "halt")["error"]["code"] == "bad_request"  # no reason
        assert request(ws, "execution", execution_id="nope")["error"]["code"] == "not_found"


def test_static_page_served_with_csp(gateway: WebGateway) -> None:
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(gateway.url, timeout=DEADLINE_S) as page:
        assert page.status == 200 and b"app.js" in page.read()
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    with urllib.request.urlopen(gateway.url + "app.js", timeout=DEADLINE_S) as script:
        assert script.headers["Content-Type"].startswith(("text/javascript",
                                                           "application/javascript"))
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(gateway.url + "../actors/config.py", timeout=DEADLINE_S)
    missing.value.close()
    assert missing.value.code == 404


def test_slow_client_lags_without_stalling_others(engine: Engine) -> None:
    gateway = start_gateway(engine, max_lag=1000)
    # The slow client's receive buffer is tiny, it queues one message at most, and it
    # reads nothing while 12 MB stream: more than the socket buffers hold.
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", gateway.port))
    with contextlib.ExitStack() as stack:
        stack.callback(gateway.stop)
        slow = stack.enter_context(connect(gateway.ws_url, sock=raw, max_size=None,
                                              max_queue=1))
        first = hello(slow)["next_seq"]
        with connect(gateway.ws_url, max_size=None) as fast:
            hello(fast)
            emit(engine, 6000, size=2000)
            last = engine.sink.log.committed_seq
            # The other client and the engine went on: everything, in order, already.
            assert collect_until(fast, last) == list(range(first, last + 1))
        # The slow one's stream has been waiting on its full socket long enough to count.
        assert wait_until(lambda: any(s.stalled_s() >= STALL_S for s in gateway.sessions()))
        # Now the slow one reads: events in order up to where it stalled, then `lagged`.
        seqs: list[int] = []
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            message = recv(slow)
            if message["msg"] == "lagged":
                break
            if message["msg"] == "events":
                seqs += [e["seq"] for e in message["events"]]
        assert message["msg"] == "lagged", "no lagged message"
        assert seqs == list(range(first, message["resume_seq"]))
        assert message["last_seq"] - message["resume_seq"] + 1 > 1000
        with pytest.raises(ConnectionClosed):
            slow.recv(timeout=DEADLINE_S)
        # It resumes by seq: the rest, no gap, no duplicate.
        with connect(gateway.ws_url, max_size=None) as again:
            hello(again, since_seq=message["resume_seq"])
            rest = collect_until(again, last)
        assert seqs + rest == list(range(first, last + 1))


def test_web_config_keys() -> None:
    assert Config.from_dict({}).web.listen is None
    web = Config.from_dict({"web": {"listen": "127.0.0.1:8450", "token_env": "MY_TOKEN",
                                    "allowed_origins": ["https://ops.example:8450"]}}).web
    assert (web.listen, web.token_env, web.allowed_origins, web.max_clients) == (
        "127.0.0.1:8450", "MY_TOKEN", ("https://ops.example:8450",), 16)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"port": 1}, "web.port"), ({"listen": "nohost"}, "web.listen"),
        ({"listen": 8450}, "web.listen"), ({"allowed_origins": ["a/b"]}, "web.allowed_origins[0]"),
        ({"certfile": "c.pem"}, "web.keyfile"), ({"token_env": "1 bad"}, "web.token_env"),
        ({"listen": "0.0.0.0:8450"}, "web.certfile"), ({"max_clients": 0}, "web.max_clients"),
        ({"max_clients": True}, "web.max_clients"), ({"max_clients": "9"}, "web.max_clients")]
    for raw, key in bad:
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            parse_web(raw)


def test_non_loopback_needs_a_token_from_the_environment(engine: Engine) -> None:
    config = WebConfig(listen="0.0.0.0:0", certfile="c.pem", keyfile="k.pem")
    with pytest.raises(ConfigError, match="TRADELOOM_WEB_TOKEN"):
        WebGateway(config, engine, env={})
    generated = WebGateway(WebConfig(listen="127.0.0.1:0"), engine, env={})
    assert generated.token_generated and len(generated.token) >= 32


def test_tls_listener_serves_wss(engine: Engine, tmp_path: Path) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "web.crt", tmp_path / "web.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=DEADLINE_S)
    gateway = WebGateway(WebConfig(listen="127.0.0.1:0", certfile=str(cert),
                                   keyfile=str(key)), engine, env={"TRADELOOM_WEB_TOKEN": TOKEN})
    gateway.start()
    try:
        assert gateway.ws_url.startswith("wss://") and gateway.url.startswith("https://")
        trusting = ssl.create_default_context(cafile=str(cert))
        with connect(gateway.ws_url, ssl=trusting,
                     origin=Origin(f"https://127.0.0.1:{gateway.port}")) as ws:
            assert hello(ws)["msg"] == "welcome"
    finally:
        gateway.stop()
    with pytest.raises(ConfigError, match=r"web\.certfile"):
        WebGateway(WebConfig(listen="127.0.0.1:0", certfile=str(tmp_path / "none.crt"),
                             keyfile=str(key)), engine, env={"TRADELOOM_WEB_TOKEN": TOKEN}).start()


def test_big_batches_are_split_into_messages_under_the_limit(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """An `events` message over MESSAGE_CHARS_MAX is split (a page never gets hundreds of big
    events in one message); an event bigger than the limit alone goes as it is."""
    monkeypatch.setattr("transport.web.session.MESSAGE_CHARS_MAX", 20_000)
    emit(engine, 300, size=1000)  # one read of ~330 KB of JSON
    emit(engine, 1, size=50_000)
    last = engine.sink.log.committed_seq
    gateway = start_gateway(engine)
    try:
        with connect(gateway.ws_url) as ws:
            hello(ws, since_seq=1)
            seqs: list[int] = []
            sizes: list[tuple[int, int]] = []
            while not seqs or seqs[-1] < last:
                text = ws.recv(timeout=DEADLINE_S)
                message = json.loads(text)
                if message["msg"] == "events":
                    got = [e["seq"] for e in message["events"]]
                    assert message["next_seq"] == got[-1] + 1
                    seqs += got
                    sizes.append((len(text), len(got)))
    finally:
        gateway.stop()
    assert seqs == list(range(1, last + 1))
    assert all(chars <= 20_000 or count == 1 for chars, count in sizes), sizes
    assert len(sizes) > 16 and (max(sizes)[1] == 1 and max(sizes)[0] > 50_000)


def raw_handshake(port: int, origins: list[str]) -> bytes:
    """A WebSocket upgrade request with these Origin headers; the first line of the answer."""
    lines = ["GET /ws HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13", *(f"Origin: {o}" for o in origins)]
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_refused_origins_are_logged_short_and_once_a_minute(engine: Engine) -> None:
    # One handshake with many long Origin headers logged about 1 MB, with no token needed.
    gateway = start_gateway(engine)
    huge = ["http://evil.example/" + "x" * 4000 + str(i) for i in range(100)]
    try:
        with captured_logs() as logs:
            for _ in range(5):
                assert raw_handshake(gateway.port, huge) == b"HTTP/1.1 403 Forbidden"
            gateway.stop()
    finally:
        gateway.stop()
    lines = [e for e in logs if e["event"] == "web_origin_refused"]
    assert [(e["origin_headers"], e["refused_since_last_line"], e["refused_total"])
            for e in lines] == [(100, 1, 1), (100, 4, 5)], "the first, then the rest at stop"
    assert all(len(e["origin"]) <= 210 and e["origin"].endswith("...(cut)") for e in lines)


def test_a_request_during_the_stop_is_refused_with_a_warning_not_an_error() -> None:
    engine = Engine.start()
    actions = WebActions(engine, warn_at=0.8)
    engine.stop()
    with captured_logs() as logs:
        reply = actions.answer({"op": "halt", "reason": "from the page"})
    assert reply["ok"] is False and "stopped" in reply["error"]["message"]
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("web_request_refused_stopping", "warning")]


def test_websockets_assertion_on_a_pipelined_request_is_not_logged_as_an_error(
        gateway: WebGateway) -> None:
    logger = logging.getLogger("websockets.server")
    def record(exc: BaseException) -> logging.LogRecord:
        return logger.makeRecord("websockets.server", logging.ERROR, __file__, 1,
                                 "unexpected internal error", (), (type(exc), exc, None))
    assert not logger.filter(record(AssertionError()))
    assert logger.filter(record(RuntimeError("a real one")))


def test_a_replay_of_big_events_reads_about_a_message_at_a_time(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each replaying client held a whole read of BATCH events, their JSON and its parts:
    about 250 MB per client for 80 MB of 1 MB events. Reads now start small, grow while a
    read fits in a message and shrink to fit when it does not."""
    monkeypatch.setattr("transport.web.session.MESSAGE_CHARS_MAX", 20_000)
    reads: list[int] = []
    real_read = LogReader.read

    def counting_read(self: LogReader, since_seq: int, limit: int) -> list[dict[str, Any]]:
        events = real_read(self, since_seq, limit)
        if events and threading.current_thread().name == "tradeloom-web-sender":
            reads.append(len(events))
        return events

    monkeypatch.setattr(LogReader, "read", counting_read)
    emit(engine, 200, size=5_000)  # four events fill a message
    emit(engine, 2_000, size=8)  # small ones: reads grow again
    last = engine.sink.log.committed_seq
    gateway = start_gateway(engine)
    try:
        with connect(gateway.ws_url) as ws:
            hello(ws, since_seq=1)
            assert collect_until(ws, last) == list(range(1, last + 1))
    finally:
        gateway.stop()
    big_reads, read_so_far = [], 0
    for count in reads:  # the reads that hold big events (the first 200)
        if read_so_far >= 200:
            break
        big_reads.append(count)
        read_so_far += count
    assert big_reads[0] == FIRST_READ and max(big_reads[1:]) <= 8, big_reads
    assert max(reads) > 100, "small events are read in big batches again"


def test_refusals_of_each_code_are_told_apart_and_held_ones_once_the_period_is_up() -> None:
    now = [100.0]
    refusals = RefusalLog(every_s=60.0, monotonic=lambda: now[0])
    with captured_logs() as logs:
        refusals.refused("web_client_refused", "bad_request", peer="a")
        for _ in range(20):  # token guessing is not hidden behind one junk hello
            refusals.refused("web_client_refused", "unauthorized", peer="b")
        refusals.flush()  # what the gateway's watchdog does every half second
        assert [(e["code"], e["refused_since_last_line"]) for e in logs] == [
            ("bad_request", 1), ("unauthorized", 1)], "held back within the minute"
        now[0] += 60.0
        refusals.flush()
    assert [(e["code"], e["refused_since_last_line"], e["refused_total"]) for e in logs] == [
        ("bad_request", 1, 1), ("unauthorized", 1, 1), ("unauthorized", 19, 20)]
