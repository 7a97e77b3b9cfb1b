"""The real daemon as a subprocess under faults: garbage on the control socket, CURVE
refusals, bad configs and refused starts, SIGTERM with executions in flight, a second
signal, and `kill -9` under load (tests/daemon_fixture.py runs the daemons)."""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from tests.daemon_fixture import (
    ROOT,
    DaemonFleet,
    DaemonProcess,
    child_env,
    replay_all,
    submit_many,
    toml_text,
    wait_ended,
    wait_started,
    wait_until,
)
from tests.ports import free_port
from transport.client import (
    BadRequestError,
    ClientKeys,
    ControlClient,
    DaemonUnreachable,
    HaltedError,
    OverloadedError,
)
from transport.codec import MAX_MESSAGE_BYTES, encode
from transport.envelopes import split_envelope
from transport.stop_signals import REPEAT_SIGNAL_WINDOW_S


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[DaemonFleet]:
    with DaemonFleet(tmp_path) as fleet:
        yield fleet


def run_daemon(config_path: Path, *args: str,
               timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """`tradeloom daemon --config FILE` expected to refuse to start: it must exit by itself."""
    return subprocess.run([sys.executable, "-m", "actors.cli", "daemon", "--config",
                           str(config_path), *args], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    return lines[0]


# -- garbage on the control socket ---------------------------------------------------------

OPS = ["ping", "status", "submit", "execution", "executions", "cancel", "intents",
       "resolve_intent", "risk_update", "replay", "nope", "", "PING"]
ODD_VALUES: list[Any] = [None, True, -1, 0, 2**63, -(2**63), 1.5, float("nan"), float("inf"),
                         "", "x" * 300, "fast", b"\xff\x00", [], [1, [2, [3]]], {"a": {}},
                         {1: 2}]


def odd_value(rng: random.Random) -> Any:
    if rng.random() < 0.1:
        nested: Any = 1
        for _ in range(rng.randrange(10, 200)):  # deep nesting
            nested = [nested]
        return nested
    return rng.choice(ODD_VALUES)


def fuzz_message(rng: random.Random) -> list[bytes]:
    """One malformed, truncated, odd or multi-frame control message (DEALER frames)."""
    kind = rng.randrange(8)
    if kind == 0:  # random bytes
        body = rng.randbytes(rng.randrange(1, 300))
    elif kind == 1:  # a real request, truncated
        full = encode({"v": 1, "op": rng.choice(OPS), "workflow": "fast",
                       "inputs": {"n": rng.random()}, "since_seq": 1, "id": rng.randrange(99)})
        body = full[:rng.randrange(1, len(full))]
    elif kind == 2:  # msgpack, but not a map
        body = msgpack.packb(rng.choice([1, "op", [1, 2], None, 3.5, b"raw"]))
    elif kind == 3:  # a map with odd fields and types
        request: dict[Any, Any] = {"v": rng.choice([1, 1, 1, 2, "1", None]),
                                   "op": rng.choice([*OPS, 7, None])}
        for name in rng.sample(["workflow", "inputs", "execution_id", "since_seq", "limit",
                                "topic_prefix", "priority", "reason", "id", "status",
                                "unresolved", "limit", "value", "delta", "outcome"], 3):
            request[name] = odd_value(rng)
        body = msgpack.packb(request, use_bin_type=True)
    elif kind == 4:  # a map with non-string keys
        body = msgpack.packb({1: "ping", b"op": "ping", "v": 1}, use_bin_type=True)
    else:  # random multi-frame messages, delimiters anywhere or nowhere
        frames = [rng.choice([b"", rng.randbytes(rng.randrange(0, 40)),
                              encode({"v": 1, "op": "ping"})])
                  for _ in range(rng.randrange(1, 24))]
        if not any(frames):
            frames.append(b"x")
        return frames
    return [b"", body] if rng.random() < 0.8 else [body]


def answerable(frames: list[bytes]) -> bool:
    """Whether the server can reply to these DEALER frames (its envelope rule)."""
    envelope, _ = split_envelope([b"peer", *frames])
    return envelope is not None


@pytest.mark.timeout(60)
def test_a_signal_once_the_stop_is_done_leaves_its_exit_0(fleet: DaemonFleet) -> None:
    """A stop signal that comes after `daemon_stopped` (a supervisor's second try, past
    the repeat window) neither exits 1 as an operator's "now" nor kills the interpreter's
    teardown (exit 143): the stop was clean."""
    daemon, _stuck = running_slow(fleet, 1, shutdown_grace_s=1.0)
    daemon.signal(signal.SIGTERM)
    wait_until(lambda: any(e.get("event") == "daemon_stopped" for e in daemon.log_events()),
               20, "the stop to end")
    proc = daemon.proc
    assert proc is not None
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.01)
    assert daemon.wait_exit(5.0) == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_fuzz_of_10000_bad_messages_leaves_the_daemon_answering_with_executions_intact(
        fleet: DaemonFleet) -> None:
    daemon = fleet.daemon(workflows=("fast",)).start()
    accepted = submit_many(daemon, "fast", 30, threads=2)
    with daemon.client() as control:
        wait_ended(control, accepted)
        before = {i: control.execution(i) for i in accepted}
    rng = random.Random(20241122)
    context = zmq.Context()
    dealers = []
    for _ in range(4):
        dealer = context.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.rcvhwm = 0  # never make the server drop a reply for want of room here
        dealer.connect(daemon.control)
        dealers.append(dealer)
    expected = replies = 0
    codes: dict[str, int] = {}

    def drain(dealer: zmq.Socket[Any], wait_ms: int = 0) -> int:
        got = 0
        while dealer.poll(wait_ms, zmq.POLLIN):
            reply = msgpack.unpackb(dealer.recv_multipart()[-1], raw=False)
            assert isinstance(reply, dict) and reply["v"] == 1 and reply["ok"] in (True, False)
            if not reply["ok"]:
                codes[reply["error"]["code"]] = codes.get(reply["error"]["code"], 0) + 1
            got += 1
            wait_ms = 0
        return got

    deadline = time.monotonic() + 60
    try:
        for n in range(10_000):
            assert time.monotonic() < deadline, f"only {n} sent within the deadline"
            frames = fuzz_message(rng)
            dealer = dealers[n % len(dealers)]
            assert dealer.poll(10_000, zmq.POLLOUT), "the control socket stopped reading"
            dealer.send_multipart(frames, zmq.NOBLOCK)
            expected += answerable(frames)
            if n % 50 == 0:
                replies += sum(drain(d) for d in dealers)
        # A raw TCP peer that does not speak ZMTP at all.
        port = int(daemon.control.rsplit(":", 1)[1])
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.sendall(rng.randbytes(rng.randrange(1, 2000)))
        while replies < expected and time.monotonic() < deadline:
            replies += sum(drain(d, 100) for d in dealers)
    finally:
        for dealer in dealers:
            dealer.close(0)
        context.term()
    assert replies == expected, f"{replies} replies to {expected} answerable messages"
    assert codes.get("bad_request", 0) > 5000 and "internal" not in codes, codes

    # Oversized: a reply (bad_request), not a dropped connection. Sent raw: ControlClient
    # refuses them unsent.
    oversized = zmq.Context()
    try:
        for size in (MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES + 4096, 4 * MAX_MESSAGE_BYTES):
            req = oversized.socket(zmq.REQ)
            req.linger = 0
            req.connect(daemon.control)
            req.send(encode({"v": 1, "op": "submit", "workflow": "fast",
                             "inputs": {"pad": "x" * size}}))
            assert req.poll(10_000, zmq.POLLIN), "no reply to an oversized request"
            reply = msgpack.unpackb(req.recv(), raw=False)
            assert reply["error"]["code"] == "bad_request" and "limit" in reply["error"]["message"]
            req.close(0)
    finally:
        oversized.term()
    with daemon.client(timeout=10.0) as control:
        with pytest.raises(BadRequestError, match="limit"):  # the client's own check
            control.request("submit", workflow="fast", inputs={"pad": "x" * MAX_MESSAGE_BYTES})
        assert control.ping()["pong"] is True
        for execution_id, was in before.items():
            assert control.execution(execution_id) == was
        assert control.status()["state"] == "NORMAL"
        fresh = control.submit("fast")["execution_id"]
        assert wait_ended(control, [fresh]) == {fresh: "completed"}
    assert daemon.terminate() == 0


# -- CURVE ----------------------------------------------------------------------------------

def make_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """`tradeloom keys DIR --name NAME`: (public .key, .key_secret)."""
    proc = subprocess.run([sys.executable, "-m", "actors.cli", "keys", str(directory),
                           "--name", name], cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return directory / f"{name}.key", directory / f"{name}.key_secret"


def heartbeat_within(endpoint: str, keys: ClientKeys | None, timeout: float) -> bool:
    """Whether a raw SUB socket (with `keys`, or plain) gets a heartbeat within `timeout`."""
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.linger = 0
    if keys is not None:
        keys.apply(sub)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    try:
        return bool(sub.poll(int(timeout * 1000), zmq.POLLIN))
    finally:
        sub.close(0)
        context.term()


@pytest.mark.timeout(90)
def test_curve_refuses_an_unknown_client_key_and_serves_a_known_one(
        fleet: DaemonFleet, tmp_path: Path) -> None:
    keys_dir, authorized = tmp_path / "keys", tmp_path / "keys" / "authorized"
    daemon_public, daemon_secret = make_keys(keys_dir, "daemon")
    client_public, client_secret = make_keys(keys_dir, "client")
    _, stranger_secret = make_keys(keys_dir, "stranger")
    authorized.mkdir()
    (authorized / "client.key").write_bytes(client_public.read_bytes())
    known = ClientKeys(client_secret, daemon_public)
    stranger = ClientKeys(stranger_secret, daemon_public)
    daemon = fleet.daemon(workflows=("fast",), keys=known, config={"transport": {
        "curve_secret_key_file": str(daemon_secret),
        "curve_authorized_keys_dir": str(authorized)}}).start()

    # Known: control and stream both work (the library's Subscriber in another process).
    subscriber = fleet.subscriber(daemon, "--secret-key", str(client_secret),
                                  "--server-key", str(daemon_public))
    live = subscriber.wait_live()
    with daemon.client() as control:
        execution_id = control.submit("fast")["execution_id"]
        subscriber.wait_terminals(1)
        last = control.status()["last_seq"]
    summary = subscriber.finish(last, timeout=30)
    assert summary["terminals"] == {execution_id: "completed"}
    assert summary["first_seq"] == live["last_seq"] + 1

    # Unknown key, or no CURVE at all: no heartbeat (heartbeat_s is 0.2: ten would have
    # come in 1 s), and requests time out, whatever the op: it can neither halt nor submit.
    assert heartbeat_within(daemon.events, known, 10.0)
    for keys in (stranger, None):
        assert not heartbeat_within(daemon.events, keys, 1.0)
        with ControlClient(daemon.control, timeout=0.5, keys=keys) as refused:
            with pytest.raises(DaemonUnreachable):
                refused.ping()
            with pytest.raises(DaemonUnreachable):
                refused.halt("intruder")
            with pytest.raises(DaemonUnreachable):
                refused.submit("fast")
    with daemon.client() as control:
        status = control.status()
        assert status["state"] == "NORMAL"
        assert len(control.executions(workflow="fast")) == 1
    assert daemon.terminate() == 0


@pytest.mark.timeout(60)
def test_a_non_loopback_address_without_keys_exits_2_unless_insecure(
        fleet: DaemonFleet) -> None:
    # 0.0.0.0 only here, and only ever bound: all traffic goes to 127.0.0.1.
    port = free_port()
    daemon = fleet.daemon(workflows=("fast",), config={"transport": {
        "events": f"tcp://0.0.0.0:{port}"}})
    proc = run_daemon(daemon.config_path)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert f"tcp://0.0.0.0:{port}" in line and "CURVE" in line and "--insecure" in line
    assert "Traceback" not in proc.stderr

    insecure = fleet.daemon("insecure", workflows=("fast",), insecure=True, config={
        "transport": {"events": f"tcp://0.0.0.0:{port}"}})
    insecure.start()
    with insecure.client() as control:
        assert control.ping()["pong"] is True
    assert heartbeat_within(f"tcp://127.0.0.1:{port}", None, 10.0)
    assert insecure.terminate() == 0


# -- refused starts ------------------------------------------------------------------------

@pytest.mark.parametrize(("extra", "key"), [
    ({"daemon": {"bogus_key": 1}}, "daemon.bogus_key"),
    ({"transport": {"heartbeat_s": "often"}}, "transport.heartbeat_s"),
    ({"daemon": {"max_concurrent_executions": 1.5}}, "daemon.max_concurrent_executions"),
    ({"daemon": {"shutdown_grace_s": float("nan")}}, "daemon.shutdown_grace_s"),
    ({"resilience": {"timeout_s": float("inf")}}, "resilience.timeout_s"),
    ({"workflows": [{"ref": "tests.no_such_module:workflow"}]}, "workflows[0].ref"),
    ({"workflows": [{"ref": "tests.e2e_workflows:no_such_workflow"}]}, "workflows[0].ref"),
])
def test_a_bad_config_exits_2_with_one_line_naming_the_key(
        tmp_path: Path, extra: dict[str, Any], key: str) -> None:
    data_dir = tmp_path / "data"
    config = {"daemon": {"data_dir": str(data_dir)},
              "transport": {"events": f"tcp://127.0.0.1:{free_port()}",
                            "control": f"tcp://127.0.0.1:{free_port()}"}}
    for table, values in extra.items():
        config[table] = {**config.get(table, {}), **values} if isinstance(values, dict) else values
    path = tmp_path / "bad.toml"
    path.write_text(toml_text(config), encoding="utf-8")
    proc = run_daemon(path)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert key in line and "Traceback" not in proc.stderr
    assert not (data_dir / "journal.db").exists()  # refused before anything was opened


@pytest.mark.timeout(60)
def test_a_data_dir_held_by_a_running_daemon_is_refused_naming_its_pid(
        fleet: DaemonFleet) -> None:
    first = fleet.daemon(workflows=("fast",)).start()
    # The same data_dir, other ports.
    second = fleet.daemon("second", workflows=("fast",),
                          config={"daemon": {"data_dir": str(first.data_dir)}})
    proc = run_daemon(second.config_path)
    assert proc.returncode != 0
    line = one_line(proc.stderr)
    assert str(first.data_dir) in line and f"pid {first.pid}" in line
    with first.client() as control:  # the first one is unharmed
        assert control.ping()["pong"] is True
    assert first.terminate() == 0


@pytest.mark.timeout(60)
def test_the_fixture_moves_a_first_start_off_a_port_taken_meanwhile(
        fleet: DaemonFleet) -> None:
    daemon = fleet.daemon(workflows=("fast",))
    taken = daemon.events
    with socket.socket() as squatter:  # what another process may do after free_port()
        squatter.bind(("127.0.0.1", int(taken.rsplit(":", 1)[1])))
        squatter.listen()
        daemon.start()
        assert daemon.events != taken and daemon.runs == 2
        with daemon.client() as control:
            assert control.ping()["pong"] is True
    assert daemon.terminate() == 0


@pytest.mark.timeout(60)
def test_a_port_in_use_is_refused_with_one_line(fleet: DaemonFleet) -> None:
    first = fleet.daemon(workflows=("fast",)).start()
    for which in ("events", "control"):
        other = fleet.daemon(f"other-{which}", workflows=("fast",),
                             config={"transport": {which: getattr(first, which)}})
        proc = run_daemon(other.config_path)
        assert proc.returncode != 0
        line = one_line(proc.stderr)
        assert getattr(first, which) in line and "in use" in line
    assert first.terminate() == 0


# -- stopping: SIGTERM, a second signal, kill -9 --------------------------------------------

def submit_slow(daemon: DaemonProcess, workflow: str, count: int,
                sleep_s: float) -> list[str]:
    with daemon.client() as control:
        return [control.submit(workflow, {"sleep_s": sleep_s})["execution_id"]
                for _ in range(count)]


@pytest.mark.timeout(90)
def test_sigterm_with_executions_in_flight_exits_0_and_loses_nothing(
        fleet: DaemonFleet) -> None:
    daemon = fleet.daemon(workflows=("slow", "act"), config={"daemon": {
        "shutdown_grace_s": 3.0, "max_concurrent_executions": 9}}).start()
    subscriber = fleet.subscriber(daemon)
    subscriber.wait_live()
    quick = submit_slow(daemon, "slow", 4, 1.0)      # finish within the grace
    stuck = submit_slow(daemon, "slow", 4, 60.0)     # do not: cancelled
    action = submit_slow(daemon, "act", 1, 60.0)     # an action in flight: its intent stays
    queued = submit_slow(daemon, "slow", 3, 0.0)     # over max_concurrent: still queued
    with daemon.client() as control:
        wait_until(lambda: control.status()["running"] == 9, 10, "9 executions running")
        assert control.status()["queued"] == 3
    t0 = time.monotonic()
    assert daemon.terminate(timeout=30) == 0
    assert time.monotonic() - t0 < 3.0 + 10  # the grace, then a prompt exit

    daemon.start()
    with daemon.client() as control:
        statuses = {i: control.execution(i)["status"] for i in quick + stuck + action + queued}
        intents = control.intents()
        # The first run ended right before the second one's daemon_started.
        first_run_end = wait_started(control, 2) - 1
    summary = subscriber.finish(first_run_end, timeout=30)
    assert {i: statuses[i] for i in quick} == dict.fromkeys(quick, "completed")
    assert {i: statuses[i] for i in stuck + action + queued} == dict.fromkeys(
        stuck + action + queued, "cancelled")
    assert [i["execution_id"] for i in intents] == action
    # The subscriber saw every one of them end before the daemon went away.
    assert summary["terminals"] == statuses
    assert summary["types"].get("daemon_stopping") == 1 and summary["contiguous"]
    assert daemon.terminate() == 0


def running_slow(fleet: DaemonFleet, n: int, *,
                 shutdown_grace_s: float) -> tuple[DaemonProcess, list[str]]:
    """A daemon with `n` executions of the `slow` workflow running (60 s each)."""
    daemon = fleet.daemon(workflows=("slow",),
                          config={"daemon": {"shutdown_grace_s": shutdown_grace_s}}).start()
    stuck = submit_slow(daemon, "slow", n, 60.0)
    with daemon.client() as control:
        wait_until(lambda: control.status()["running"] == n, 10, f"{n} executions running")
    return daemon, stuck


@pytest.mark.timeout(90)
def test_after_a_kill_the_execution_view_of_an_interrupted_one_lists_every_node(
        fleet: DaemonFleet) -> None:
    """`execution.nodes` shows every node, as for an execution halted at the same point:
    one the daemon died under keeps what completed, its running node is `cancelled` and
    the nodes that never started are `skipped`; a queued one's are all `skipped`. Its
    terminal event, published at the next start, carries the same map and the completed
    nodes' outputs in `results`, as every terminal event does."""
    daemon = fleet.daemon(workflows=("chain",),
                          config={"daemon": {"max_concurrent_executions": 1}}).start()
    running, queued = submit_slow(daemon, "chain", 2, 60.0)
    with daemon.client() as control:
        wait_until(lambda: control.execution(running)["nodes"].get("wait", {}).get(
            "status") == "running", 10, "the chain's second node running")
    assert daemon.kill() == -signal.SIGKILL
    daemon.start()
    with daemon.client() as control:
        killed, never_ran = control.execution(running), control.execution(queued)
        endings = {e["execution_id"]: e for e in replay_all(control)
                   if e["type"] == "execution_failed"}
    assert killed["status"] == never_ran["status"] == "interrupted"
    assert killed["nodes"] == {
        "first": {"status": "completed", "attempts": 1, "outputs": {"n": 0}},
        "wait": {"status": "cancelled", "attempts": 1},
        "third": {"status": "skipped", "attempts": 0},
        "last": {"status": "skipped", "attempts": 0}}, killed["nodes"]
    assert killed["results"] == {"first": {"n": 0}}
    never = {node: {"status": "skipped", "attempts": 0}
             for node in ("first", "wait", "third", "last")}
    assert never_ran["nodes"] == never and never_ran["results"] == {}
    ending = endings[running]
    assert (ending["status"], ending["error_type"]) == ("interrupted", "Interrupted")
    assert ending["results"] == {"first": {"n": 0}}
    assert ending["nodes"] == {node: {"status": entry["status"], "attempts": entry["attempts"]}
                               for node, entry in killed["nodes"].items()}
    assert endings[queued]["nodes"] == never and endings[queued]["results"] == {}
    assert daemon.terminate() == 0


@pytest.mark.timeout(60)
def test_a_second_signal_exits_at_once(fleet: DaemonFleet) -> None:
    daemon, stuck = running_slow(fleet, 2, shutdown_grace_s=60.0)
    daemon.signal(signal.SIGTERM)
    first_at = time.monotonic()
    wait_until(lambda: any(e.get("event") == "daemon_stopping" for e in daemon.log_events()),
               10, "the daemon to start its graceful stop")
    # Sooner, it would be taken for the same stop delivered twice (the test below).
    wait_until(lambda: time.monotonic() - first_at > REPEAT_SIGNAL_WINDOW_S + 0.1, 5,
               "the repeat window to pass")
    assert daemon.running()  # waiting out its 60 s grace
    t0 = time.monotonic()
    daemon.signal(signal.SIGINT)
    code = daemon.wait_exit(5.0)
    assert code != 0 and time.monotonic() - t0 < 5.0
    # What was committed stayed committed: the executions come back interrupted.
    daemon.start()
    with daemon.client() as control:
        assert {i: control.execution(i)["status"] for i in stuck} == dict.fromkeys(
            stuck, "interrupted")
    assert daemon.terminate() == 0


@pytest.mark.timeout(60)
def test_a_submit_during_the_shutdown_grace_is_refused_as_overloaded(
        fleet: DaemonFleet) -> None:
    """No new execution is admitted once a stop has begun: the refusal is `overloaded`
    (the CLI's exit 4, as for a full queue), not `internal` (exit 1, a bug)."""
    daemon, _stuck = running_slow(fleet, 1, shutdown_grace_s=60.0)
    daemon.signal(signal.SIGTERM)
    first_at = time.monotonic()
    wait_until(lambda: any(e.get("event") == "daemon_stopping" for e in daemon.log_events()),
               10, "the daemon to start its graceful stop")
    with daemon.client() as control, pytest.raises(OverloadedError, match="stopping"):
        control.submit("slow", {"sleep_s": 1.0})
    done = subprocess.run([sys.executable, "-m", "actors.cli", "submit", "slow",
                           "--control", daemon.control, "--events", daemon.events],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 4, (done.returncode, done.stderr)
    assert done.stderr.startswith("tradeloom: error: overloaded: the daemon is stopping")
    assert daemon.running()  # still in its grace, with `stuck` running
    wait_until(lambda: time.monotonic() - first_at > REPEAT_SIGNAL_WINDOW_S + 0.1, 5,
               "the repeat window to pass")
    daemon.signal(signal.SIGINT)  # an operator's second signal: exit now
    daemon.wait_exit(10.0)


@pytest.mark.timeout(60)
def test_one_stop_delivered_twice_still_stops_cleanly(fleet: DaemonFleet) -> None:
    # A SIGTERM to `make run`'s process group reaches the daemon, and make forwards it
    # again a moment later: that is one stop, not an operator's "exit at once".
    daemon, stuck = running_slow(fleet, 1, shutdown_grace_s=1.0)
    daemon.signal(signal.SIGTERM)
    wait_until(lambda: any(e.get("event") == "stop_requested" for e in daemon.log_events()),
               5, "the first signal handled")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(20.0) == 0  # the grace, then the rest cancelled: a clean stop
    events = [e.get("event") for e in daemon.log_events()]
    assert "repeat_signal_ignored" in events and "daemon_stopped" in events
    daemon.start()
    with daemon.client() as control:
        assert control.execution(stuck[0])["status"] == "cancelled"
    assert daemon.terminate() == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kill_9_under_load_loses_no_seen_seq_and_interrupts_what_ran(
        fleet: DaemonFleet) -> None:
    daemon = fleet.daemon(workflows=("fast", "slow")).start()
    subscriber = fleet.subscriber(daemon, "--echo")
    subscriber.wait_live()
    running = submit_slow(daemon, "slow", 5, 120.0)
    acknowledged: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load() -> None:  # submits until the daemon is gone; keeps every id it was given
        with daemon.client(timeout=1.0) as control:
            while not stop.is_set():
                try:
                    execution_id = control.submit("fast")["execution_id"]
                except DaemonUnreachable:
                    return
                with lock:
                    acknowledged.append(execution_id)

    loaders = [threading.Thread(target=load) for _ in range(3)]
    for loader in loaders:
        loader.start()
    with daemon.client() as control:
        wait_until(lambda: control.status()["last_seq"] > 2000, 60, "2,000 events under load")
    assert daemon.kill() == -signal.SIGKILL
    stop.set()
    for loader in loaders:
        loader.join(10)
    with lock:
        got = list(acknowledged)
    assert len(got) > 300

    daemon.start()
    with daemon.client() as control:
        summary = subscriber.finish(wait_started(control, 2), timeout=60)
        journal = {e["seq"]: e for e in replay_all(control)}
        statuses = {i: control.execution(i)["status"] for i in got + running}
    # Every event the subscriber saw, before and after the crash, is the journal's.
    seen = subscriber.events
    assert len(seen) == summary["count"] and summary["contiguous"]
    for event in seen:
        committed = journal[event["seq"]]
        assert (committed["type"], committed.get("execution_id")) == (
            event["type"], event["execution_id"])
    # Every id a client was given is in the journal; what ran is interrupted, published
    # after the restart as execution_failed / Interrupted.
    assert set(statuses.values()) <= {"completed", "interrupted"}
    assert {i: statuses[i] for i in running} == dict.fromkeys(running, "interrupted")
    assert set(running) <= set(summary["interrupted"])
    assert summary["restarts"] == 1
    assert daemon.terminate() == 0


@pytest.mark.timeout(90)
def test_a_daemon_killed_while_halted_comes_back_halted(fleet: DaemonFleet) -> None:
    daemon = fleet.daemon(workflows=("fast",)).start()
    with daemon.client() as control:
        done = control.submit("fast")["execution_id"]
        wait_ended(control, [done])
        assert control.halt("e2e: before the crash")["state"] == "HALT"
    assert daemon.kill() == -signal.SIGKILL
    daemon.start()
    with daemon.client() as control:
        assert control.status()["state"] == "HALT"
        with pytest.raises(HaltedError) as refused:
            control.submit("fast")
        assert refused.value.code == "halted"
        assert control.execution(done)["status"] == "completed"
    assert daemon.terminate() == 0


@pytest.mark.timeout(60)
def test_a_port_in_use_on_a_restart_is_refused_without_waiting_for_a_publisher(
        fleet: DaemonFleet) -> None:
    # A daemon with a journal to recover, restarted while its events port is taken: the
    # refusal comes as fast as on an empty data_dir (no wait for a publisher that never
    # bound to send the recovered events).
    daemon = fleet.daemon(workflows=("fast",)).start()
    with daemon.client() as control:
        control.submit("fast")
    assert daemon.terminate() == 0
    squatter = fleet.daemon("squatter", workflows=("fast",),
                            config={"transport": {"events": daemon.events}}).start()
    fresh = fleet.daemon("fresh", workflows=("fast",),
                         config={"transport": {"events": daemon.events}})
    t0 = time.monotonic()
    assert run_daemon(fresh.config_path).returncode == 2
    baseline = time.monotonic() - t0
    t0 = time.monotonic()
    proc = run_daemon(daemon.config_path)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2 and "in use" in one_line(proc.stderr)
    assert elapsed < baseline + 1.5, f"{elapsed:.2f} s vs {baseline:.2f} s on an empty data_dir"
    assert squatter.terminate() == 0
