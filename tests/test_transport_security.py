"""CURVE + ZAP on both daemon sockets: a known client key works, an unknown one (or none)
gets neither control nor stream; the plain-text bind rule."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth

from tests.transport_fakes import FakeHandler, FakeLog, workflow_events
from transport import ControlServer, CurveServer, Publisher, TransportError, is_loopback
from transport.client import ClientKeys, ControlClient, DaemonUnreachable, Subscriber
from transport.security import check_bind

LOCAL = "tcp://127.0.0.1:*"


class Keys:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.authorized = root / "authorized"
        self.authorized.mkdir()
        zmq.auth.create_certificates(str(root), "daemon")
        zmq.auth.create_certificates(str(root), "client")
        zmq.auth.create_certificates(str(root), "stranger")
        (self.authorized / "client.key").write_bytes((root / "client.key").read_bytes())

    def client(self, name: str) -> ClientKeys:
        return ClientKeys(self.root / f"{name}.key_secret", self.root / "daemon.key")


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
def secured(keys: Keys) -> Iterator[tuple[Publisher, ControlServer, FakeLog]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    curve = CurveServer(context, keys.root / "daemon.key_secret", keys.authorized)
    curve.start()
    log = FakeLog()
    publisher = Publisher(LOCAL, log, heartbeat_s=0.2, context=context, curve=curve)
    control = ControlServer(LOCAL, FakeHandler(log), context=context, curve=curve)
    publisher.start()
    control.start()
    yield publisher, control, log
    publisher.stop()
    control.stop()
    curve.stop()
    context.term()


def test_a_known_client_key_gets_control_and_stream(
        keys: Keys, secured: tuple[Publisher, ControlServer, FakeLog]) -> None:
    publisher, control, log = secured
    client_keys = keys.client("client")
    with ControlClient(control.endpoint, keys=client_keys, timeout=5.0) as client:
        assert client.ping()["pong"] is True
    with Subscriber(publisher.endpoint, control.endpoint, keys=client_keys,
                    since_seq=1) as sub:
        sub.wait_live(5.0)
        log.append(workflow_events("w", 3))
        assert [sub.next(5.0)["seq"] for _ in range(3)] == [1, 2, 3]  # type: ignore[index]


@pytest.mark.parametrize("who", ["stranger", "plain"])
def test_an_unknown_or_missing_client_key_gets_neither_control_nor_stream(
        keys: Keys, secured: tuple[Publisher, ControlServer, FakeLog], who: str) -> None:
    publisher, control, log = secured
    client_keys = keys.client("stranger") if who == "stranger" else None
    with ControlClient(control.endpoint, keys=client_keys, timeout=0.5) as client, \
            pytest.raises(DaemonUnreachable):
        client.halt("should never arrive")
    with Subscriber(publisher.endpoint, control.endpoint, keys=client_keys,
                    timeout=0.5) as sub:
        log.append(workflow_events("w", 3))
        with pytest.raises(DaemonUnreachable):
            sub.wait_live(1.0)
        assert sub.next(0.5) is None
    assert control.stats()["requests"] == 0


def test_key_files_are_checked_when_loaded(keys: Keys, tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="holds no secret key"):
        ClientKeys(keys.root / "client.key", keys.root / "daemon.key")
    with pytest.raises(TransportError, match="cannot load a CURVE key"):
        ClientKeys(tmp_path / "missing.key_secret", keys.root / "daemon.key")
    with pytest.raises(TransportError, match="not a directory"):
        CurveServer(zmq.Context.instance(), keys.root / "daemon.key_secret",
                    tmp_path / "nowhere")


@pytest.mark.parametrize("junk", [b"", b"not a certificate\n", b'public-key = "short"\n',
                                  b'public-key = "' + b"~" * 40 + b'"\n',
                                  b"curve\n    public-key\n",  # (zmq.auth: IndexError)
                                  b'public-key = "' + b"#" * 40 + b'"\n'])  # (overflows)
def test_a_junk_key_file_in_the_authorized_directory_stops_start_up_named(
        keys: Keys, junk: bytes) -> None:
    """zmq.auth's own loader logged such a file and then admitted no key at all: every
    client, the operator's halt included, was locked out of a daemon that kept running."""
    (keys.authorized / "leftover.key").write_bytes(junk)
    with pytest.raises(TransportError, match=r"leftover\.key"):
        CurveServer(zmq.Context.instance(), keys.root / "daemon.key_secret", keys.authorized)


def test_a_fifo_named_key_stops_start_up_instead_of_hanging_it(keys: Keys) -> None:
    os.mkfifo(keys.authorized / "pipe.key")
    with pytest.raises(TransportError, match=r"pipe\.key: not a regular file"):
        CurveServer(zmq.Context.instance(), keys.root / "daemon.key_secret", keys.authorized)


def test_the_authorized_keys_are_the_public_keys_of_the_key_files(keys: Keys) -> None:
    (keys.authorized / "notes.txt").write_text("not a key file, not read")
    (keys.authorized / ".#client.key").write_text("an editor's lock: hidden, not read")
    (keys.authorized / "client.key_secret").write_bytes(  # (not *.key: not read)
        (keys.root / "stranger.key_secret").read_bytes())
    curve = CurveServer(zmq.Context.instance(), keys.root / "daemon.key_secret",
                        keys.authorized)
    client_public, _ = zmq.auth.load_certificate(str(keys.root / "client.key"))
    assert curve.authorized == {client_public}


@pytest.mark.parametrize("which", ["public-key", "secret-key"])
def test_a_malformed_key_in_a_key_pair_file_is_named(keys: Keys, which: str) -> None:
    """libzmq took it and the bind then failed with a bare "Invalid argument"."""
    path = keys.root / "daemon.key_secret"
    lines = [f'    {which} = "tooshort"' if line.strip().startswith(which) else line
             for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TransportError, match=f"daemon.key_secret: its {which} is not a CURVE"):
        CurveServer(zmq.Context.instance(), path, keys.authorized)
    with pytest.raises(TransportError, match=f"its {which} is not a CURVE key"):
        ClientKeys(path, keys.root / "daemon.key")


@pytest.mark.parametrize(("endpoint", "loopback"), [
    ("tcp://127.0.0.1:7450", True), ("tcp://127.1.2.3:*", True), ("tcp://localhost:7450", True),
    ("tcp://[::1]:7450", True), ("ipc:///tmp/tradeloom.sock", True), ("inproc://x", True),
    ("tcp://lo:7450", True), ("tcp://0.0.0.0:7450", False), ("tcp://*:7450", False),
    ("tcp://10.0.0.5:7450", False), ("tcp://eth0:7450", False), ("tcp://[::]:7450", False),
    ("tcp://example.com:7450", False), ("udp://127.0.0.1:1", False),
])
def test_is_loopback(endpoint: str, loopback: bool) -> None:
    assert is_loopback(endpoint) is loopback


def test_plain_text_on_a_reachable_address_needs_curve_or_insecure() -> None:
    with pytest.raises(TransportError, match=r"refusing to bind tcp://\*:7451 without CURVE"):
        check_bind("tcp://*:7451", curve=False, insecure=False)
    check_bind("tcp://*:7451", curve=True, insecure=False)
    check_bind("tcp://*:7451", curve=False, insecure=True)
    check_bind("tcp://127.0.0.1:7451", curve=False, insecure=False)
    with pytest.raises(TransportError, match="without CURVE"):
        ControlServer("tcp://0.0.0.0:*", FakeHandler()).start()
