"""Every example runs as the README says (`python examples/<name>.py --quick`, from the repo,
as a subprocess) and prints what it promises; examples/daemon.toml's on-halt hook cancels
the resting orders; examples/subscriber.py follows a real daemon across a late join and a
restart with consecutive seqs."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

from actors import Config, Engine
from tests.conftest import Recorder
from tests.daemon_fixture import ROOT, DaemonFleet, child_env, wait_idle, wait_last_seq

EXAMPLES = ROOT / "examples"
RUN_S = 60.0


def run_example(name: str, *args: str) -> str:
    """Run examples/<name>.py as the README does, from another working directory (nothing
    but the script's own path may make `examples` importable); its stdout, exit 0 asserted."""
    done = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args],
                          cwd=ROOT.parent, env=child_env(), capture_output=True, text=True,
                          timeout=RUN_S, check=False)
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def test_arbitrage_prints_its_history_from_the_journal() -> None:
    out = run_example("arbitrage", "--quick")
    runs_part, _, journal_part = out.partition(
        "execution history from the journal (5 executions, newest first):")
    assert journal_part, out
    runs = re.findall(r"(?m)^  (exec_arb_btc_[0-9a-f]{8})  (\w+)", runs_part)
    assert len(runs) == 5, out
    history = re.findall(r"(?m)^  (exec_arb_btc_[0-9a-f]{8})  (\w+) +[\d.]+ ms  ended ",
                         journal_part)
    assert [h[0] for h in history] == [r[0] for r in reversed(runs)]  # newest first
    assert dict(history) == dict(runs)
    newest = runs[-1][0]
    assert f"execution {newest} from the journal:" in out
    for node_id in ("price_binance", "price_coinbase", "spread", "trade"):
        assert re.search(rf"(?m)^  {node_id} +\w+ +attempts \d", out), node_id


def test_emergency_halt_tells_the_whole_story() -> None:
    out = run_example("emergency_halt", "--quick")
    expected = [
        "market maker completed: resting orders on kraken: ['kraken-1', 'kraken-2']",
        "-> risk_limit_warning: daily_loss 850 of 1000 (85%)",
        "state is still NORMAL",
        "-> NORMAL to HALT  (source manual, origin api): operator: exchange feed looks wrong",
        "-> on-halt hook completed: cancelled 2 resting order(s) "
        "{'kraken': ['kraken-1', 'kraken-2']}",
        "a submit during HALT: refused",
        "-> HALT to NORMAL  (source manual, origin api): operator: feed checked",
        "-> NORMAL to ALERT  (source manual, origin api): volatility spike",
        "-> ALERT to REDUCE_ONLY  (source manual, origin api)",
        "rebalance/close_btc: completed {'closed': 'BTC', 'amount': 0.5}",
        "rebalance/open_eth: skipped (refused: REDUCE_ONLY)",
        "-> risk_limit_exceeded: daily_loss 1050 of 1000 (105%)",
        "-> NORMAL to HALT  (source risk_limit, origin engine)",
        "-> on-halt hook completed: cancelled 2 resting order(s) "
        "{'kraken': ['kraken-5', 'kraken-6']}",
        "resume refused: LimitExceeded: ",
        "state is still HALT",
        "-> HALT to NORMAL  (source manual, origin api): risk officer",
    ]
    position = 0
    for line in expected:  # each in this order
        found = out.find(line, position)
        assert found >= 0, f"missing (or out of order): {line!r}\n{out}"
        position = found + len(line)
    history = re.findall(r"(?m)^   seq +\d+ +\w+ -> (\w+) ", out[position:])
    assert history == ["HALT", "NORMAL", "ALERT", "REDUCE_ONLY", "NORMAL", "HALT", "NORMAL"]


def test_concurrent_halt_stops_all_five_symbols() -> None:
    out = run_example("concurrent", "--quick")
    for symbol in ("BTC", "ETH", "SOL", "MATIC", "AVAX"):
        lower = symbol.lower()
        assert re.search(rf"(?m)^{symbol} +exec_trend_{lower}_[0-9a-f]{{8}}  completed  ", out)
        halted = re.findall(rf"(?m)^{symbol} +(exec_trend_{lower}_[0-9a-f]{{8}})  HALTED in "
                            r"analyse  \(halted: demo: stop every symbol at once\)$", out)
        assert len(halted) == 1, f"{symbol}:\n{out}"
        assert re.search(rf"(?m)^{symbol} +[1-9]\d* +{halted[0]}$", out), out  # the summary
    assert "--- HALT while 5 symbols are mid-analysis ---" in out
    assert "a new submit after the halt: refused" in out
    assert "5 of 5 symbols stopped by the halt" in out


def test_the_daemon_config_cancels_resting_orders_on_halt() -> None:
    """examples/daemon.toml's [[emergency.on_halt]] hook, in an engine of its own: the market
    maker's resting quotes are cancelled when HALT is entered."""
    raw = tomllib.loads((EXAMPLES / "daemon.toml").read_text())
    refs = [w["ref"] for w in raw["workflows"]]
    assert "examples.market_maker:workflow" in refs
    config = Config.from_dict({"emergency": raw["emergency"], "workflows": raw["workflows"]},
                              base_dir=EXAMPLES)
    from examples.market_maker import kraken  # the module the config imported

    engine = Engine.start(config)
    try:
        recorder = Recorder().follow(engine, workflow_id="cancel_resting_orders")
        assert engine.submit("mm_eth").result(timeout=10).status == "completed"
        resting = sorted(str(o["id"]) for o in kraken.open_orders())
        assert len(resting) == 2
        engine.halt("test: cancel the quotes")
        done = recorder.wait_type("execution_completed")[0]
        assert sorted(done["results"]["cancel_all"]["cancelled"]["kraken"]) == resting
        assert kraken.open_orders() == []
    finally:
        engine.stop()


# -- examples/subscriber.py against a real daemon ------------------------------------------

class Lines:
    """A subprocess's stdout lines, read by a thread; waits with deadlines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 30.0, *,
                 since: int | None = None) -> re.Match[str]:
        """Read lines until one matches `pattern` (re.search). `since`: a line read
        already, from that index of `seen` on, matches too (for lines whose order among
        themselves is not promised)."""
        for earlier in self.seen[since:] if since is not None else ():
            if found := re.search(pattern, earlier):
                return found
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s; "
                                     f"last lines: {self.seen[-20:]}") from None
            if line is None:
                self._queue.put(None)
                raise AssertionError(f"exited before a line matching {pattern!r}; "
                                     f"last lines: {self.seen[-20:]}")
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match

    def close(self) -> None:
        """After the process ended: the reader is at the end of the output; close it."""
        self._pump.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def test_subscriber_follows_a_late_join_and_a_restart_without_a_gap(tmp_path: Path) -> None:
    with DaemonFleet(tmp_path) as fleet:
        daemon = fleet.daemon(workflows=("fast",)).start()
        with daemon.client() as control:
            for n in range(3):  # before the subscriber exists: it must replay these
                control.submit("fast", {"n": n})
            wait_idle(control)
            before = wait_last_seq(control, 13)  # daemon_started + 3 x 4 events
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "subscriber.py"), "--events", daemon.events,
             "--control", daemon.control, "--since", "1"],
            cwd=ROOT.parent, env=child_env(), stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        lines = Lines(proc)
        try:
            lines.wait_for(r"^following .* from seq 1 \(replayed first\)$")
            lines.wait_for(rf"^ +{before}  .*execution_completed +fast/")
            assert daemon.terminate() == 0
            daemon.start()
            with daemon.client() as control:
                for n in range(3):
                    control.submit("fast", {"n": 10 + n})
                wait_idle(control)
                last = wait_last_seq(control, before + 3 * 4 + 2)  # + stopping, started
            # The new daemon's events may be delivered before its first heartbeat (the
            # one that shows its new epoch) is read: either line may come first.
            restarted_from = len(lines.seen)
            lines.wait_for(r"^--- the daemon restarted \(epoch ", since=restarted_from)
            lines.wait_for(rf"^ +{last}  ", since=restarted_from)
            proc.send_signal(signal.SIGINT)
            summary = lines.wait_for(r"^summary: (\d+) events, seqs (\d+)\.\.(\d+), "
                                     r"consecutive seqs: (\S+?); .* daemon restarts (\d+), lost 0$")
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            lines.close()
    count, first, final, consecutive, restarts = summary.groups()
    assert (int(count), int(first), int(final)) == (last, 1, last)
    assert consecutive == "yes" and int(restarts) == 1
    seqs = [int(m[1]) for line in lines.seen if (m := re.match(r"^ +(\d+)  ", line))]
    assert seqs == list(range(1, last + 1))
    types = [line.split()[2] for line in lines.seen if re.match(r"^ +\d+  ", line)]
    assert types.count("daemon_started") == 2 and "daemon_stopping" in types


def test_subscriber_json_keeps_stdout_one_json_object_per_line(tmp_path: Path) -> None:
    """`--json` is for `jq`: the notes (following, summary) go to stderr."""
    with DaemonFleet(tmp_path) as fleet:
        daemon = fleet.daemon(workflows=("fast",)).start()
        with daemon.client() as control:
            control.submit("fast", {"n": 1})
            wait_idle(control)
            last = wait_last_seq(control, 5)
        proc = subprocess.run(
            [sys.executable, str(EXAMPLES / "subscriber.py"), "--events", daemon.events,
             "--control", daemon.control, "--since", "1", "--count", str(last), "--json"],
            cwd=ROOT.parent, env=child_env(), capture_output=True, text=True, timeout=60,
            check=False)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, last + 1))
    assert "following" in proc.stderr and "summary:" in proc.stderr
