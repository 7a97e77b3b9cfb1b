"""A chaos probe: the real daemon in a subprocess, under several faults at once, with the
journal checked after every restart and at the end. Not run in CI (a few seconds of it are,
tests/test_bench_chaos_smoke.py).

    .venv/bin/python bench/chaos.py --minutes 3 --seed 7

On a fresh data_dir, the daemon runs bench/chaos_workflows.py (a flaky provider behind a
breaker, an action, a slow node; both on interval triggers) and a `daily_loss` limit with
auto_halt. For the whole run, seeded steps at random: bursts of submits from several control
clients; halt / resume / alert / reduce-only; the limit pushed over its threshold and back;
cancels of running executions; a raw DEALER sending garbage frames; SIGKILL (sometimes
SIGTERM) of the daemon and a restart. An outside Subscriber connects, disconnects and
reconnects replaying from its last seq throughout. Invariants (bench/chaos_checks.py):
gapless seqs, what the subscriber saw is in the journal as seen, every submitted id exists,
no action ran twice, a daemon killed halted comes back halted, one terminal event per
execution and nothing after it, what was open at a kill ends `interrupted`, the daemon
never exits by itself or writes a traceback and answers `ping` after each restart.
Prints a summary; exits 1 when an invariant broke.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack
import zmq

from actors.logs import configure as configure_logs
from bench.chaos_checks import JournalCheck, Watcher
from bench.chaos_daemon import LIMIT, THRESHOLD, ChaosDaemon
from transport.client import ControlClient
from transport.errors import ControlError, TransportError

CLIENTS = 3

#: One kind of step of the run, given the probe's own control client.
Step = Callable[[ControlClient], None]

class Chaos:
    def __init__(self, workdir: Path, seed: int, seconds: float) -> None:
        self.rng = random.Random(seed)
        self.seed, self.seconds = seed, seconds
        self.daemon = ChaosDaemon(workdir, seed)
        self.check = JournalCheck(self.daemon.side_file)
        self.watcher = Watcher(self.daemon.events, self.daemon.control, seed + 1)
        self.problems: list[str] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.risk_value = 0.0  # the last figure the daemon acknowledged

    # -- the steps ---------------------------------------------------------------------

    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def client(self, timeout: float = 5.0) -> ControlClient:
        return ControlClient(self.daemon.control, timeout=timeout)

    def burst(self, _client: ControlClient | None = None) -> None:
        for thread in self.start_burst():
            thread.join(60)

    def start_burst(self) -> list[threading.Thread]:
        """Several clients at once (each its own), each submitting a few executions."""
        plans = [[self.plan() for _ in range(self.rng.randint(1, 12))]
                 for _ in range(self.rng.randint(1, CLIENTS))]
        threads = [threading.Thread(target=self.submit_all, args=(plan,)) for plan in plans]
        for thread in threads:
            thread.start()
        return threads

    def plan(self) -> tuple[str, dict[str, Any]]:
        workflow = self.rng.choices(["chaos_trade", "chaos_slow", "chaos_stuck"], [5, 4, 1])[0]
        if workflow == "chaos_trade":
            return workflow, {}
        return workflow, {"nap_s": round(self.rng.uniform(0.1, 3.0), 2)}

    def submit_all(self, plan: list[tuple[str, dict[str, Any]]]) -> None:
        with self.client() as client:
            for workflow, inputs in plan:
                try:
                    execution_id = str(client.submit(workflow, inputs)["execution_id"])
                except ControlError as exc:
                    self.count(f"submit {exc.code}")
                    continue
                except TransportError:
                    self.count("submit unanswered")
                    continue
                with self.lock:
                    self.check.submitted.append(execution_id)
                self.count("submitted")

    def emergency(self, client: ControlClient) -> None:
        op = self.rng.choices(["halt", "resume", "alert", "reduce_only"], [1, 4, 1, 1])[0]
        force = self.rng.random() < 0.3
        try:
            if op == "halt":
                client.halt("chaos")
            elif op == "resume":
                client.resume("chaos", force=force)
            elif op == "alert":
                client.alert("chaos", force=force)
            else:
                client.reduce_only("chaos")
            self.count(op)
        except ControlError as exc:
            self.count(f"{op} {exc.code}")

    def risk(self, client: ControlClient) -> None:
        over = self.rng.random() < 0.3
        value = THRESHOLD * (self.rng.choice([1.5, 2.0]) if over else 0.0)
        before = client.status()["state"]
        client.risk_update(LIMIT, value=value)
        # In REDUCE_ONLY a figure over the threshold halts only when it rises (positions
        # being closed must not be refused); from NORMAL or ALERT any figure over halts.
        halts = over and (before != "REDUCE_ONLY" or value > self.risk_value)
        self.risk_value = value
        self.count("risk over" if over else "risk back")
        if halts and (after := client.status()["state"]) != "HALT":
            self.problems.append(f"a risk_update of {LIMIT} to {value} over its auto_halt "
                                 f"threshold, in {before}, left the daemon in {after}")

    def cancel(self, client: ControlClient) -> None:
        running = client.executions(status=self.rng.choice(["running", "queued"]), limit=50)
        if running:
            execution_id = str(self.rng.choice(running)["execution_id"])
            status = client.cancel(execution_id)["status"]
            self.count(f"cancel -> {status}")

    def garbage(self, client: ControlClient) -> None:
        """A raw DEALER: random frames, truncated msgpack, odd maps; replies drained."""
        ctx: zmq.Context[Any] = zmq.Context.instance()
        with ctx.socket(zmq.DEALER) as dealer:
            dealer.linger = 0
            dealer.connect(self.daemon.control)
            for _ in range(self.rng.randint(1, 30)):
                dealer.send_multipart(self.junk())
            while dealer.poll(200, zmq.POLLIN):
                dealer.recv_multipart()
        self.count("garbage")
        try:
            client.ping()
        except TransportError as exc:
            self.problems.append(f"run {self.daemon.runs}: no ping after garbage: {exc}")

    def junk(self) -> list[bytes]:
        rng = self.rng
        kind = rng.randrange(5)
        if kind == 0:
            return [rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(1, 4))]
        if kind == 1:
            return [b"", msgpack.packb({"v": 1, "op": "submit", "workflow": 123})[:-1]]
        if kind == 2:
            return [b"", msgpack.packb({"v": rng.choice([1, 2, None]), "op": rng.choice(
                ["halt", "replay", "cancel", "nope", 7]), "since_seq": -1,
                "execution_id": rng.randbytes(5).hex(), "reason": 3})]
        if kind == 3:
            return [b"", msgpack.packb([1, 2, 3]), b"extra"]
        return [b"", b"\xc1" * rng.randint(1, 200)]

    def restart(self, client: ControlClient, signum: int | None = None) -> None:
        """Kill (or SIGTERM) now, right after a halt, or in the middle of a burst of
        submits; restart; check what must hold."""
        mode = self.rng.choice(["now", "after halt", "mid burst", "then in recovery"])
        in_flight: list[threading.Thread] = []
        try:
            halted = client.status()["state"] == "HALT"
            if mode == "after halt":
                halted = client.halt("chaos: then a kill")["state"] == "HALT"
        except TransportError:
            halted = False
        if mode == "mid burst":
            in_flight = self.start_burst()
            time.sleep(self.rng.uniform(0.0, 0.3))
        if signum is None:
            signum = signal.SIGTERM if self.rng.random() < 0.25 else signal.SIGKILL
        self.count(f"kill {mode}")
        if signum == signal.SIGTERM and self.rng.random() < 0.3:  # killed while it stops
            self.daemon.nudge(signal.SIGTERM)
            time.sleep(self.rng.uniform(0.0, 0.5))
            signum = signal.SIGKILL
            self.count("sigterm then sigkill")
        code = self.daemon.signal(signum)
        if signum == signal.SIGTERM and code != 0:
            self.problems.append(f"run {self.daemon.runs}: SIGTERM exit {code}")
        elif code not in (0, -signal.SIGKILL):
            self.problems.append(f"run {self.daemon.runs}: exit {code} at a kill")
        self.count("sigterm" if signum == signal.SIGTERM else "sigkill")
        if mode == "then in recovery":  # killed again while it starts (its recovery)
            self.daemon.start(wait=False)
            time.sleep(self.rng.uniform(0.05, 1.5))
            if (code := self.daemon.signal(signal.SIGKILL)) != -signal.SIGKILL:
                self.problems.append(f"run {self.daemon.runs}: exited {code} while starting")
        self.daemon.start()
        for thread in in_flight:  # their submits go unanswered, or reach the new daemon
            thread.join(60)
        with self.client(timeout=10.0) as fresh:
            status = fresh.status()
            if halted and status["state"] != "HALT":
                self.problems.append(f"run {self.daemon.runs}: killed halted, came back "
                                     f"{status['state']}")
            if status["limits"][LIMIT]["value"] != self.risk_value:
                self.problems.append(f"run {self.daemon.runs}: {LIMIT} came back "
                                     f"{status['limits'][LIMIT]['value']}, was told "
                                     f"{self.risk_value}")
            self.verify(fresh, settled=False)

    def verify(self, client: ControlClient, *, settled: bool) -> None:
        found = self.check.run(client, self.watcher, settled=settled)
        self.problems += [f"after run {self.daemon.runs}: {p}" for p in found]

    # -- the run -------------------------------------------------------------------------

    def run(self) -> int:
        self.daemon.start()
        self.watcher.start()
        deadline = time.monotonic() + self.seconds
        steps: list[tuple[Step | None, int]] = [
            (self.burst, 30), (self.emergency, 14), (self.risk, 6), (self.cancel, 10),
            (self.garbage, 6), (self.restart, 4), (None, 30)]
        try:
            with self.client() as client:
                self.burst()  # then a kill at once, so that even a short run has one
                self.restart(client, signal.SIGKILL)
                while time.monotonic() < deadline and not self.problems:
                    step = self.rng.choices([s for s, _ in steps],
                                            weights=[w for _, w in steps])[0]
                    if step is None:  # a pause: let the triggers and the stream run
                        time.sleep(self.rng.uniform(0.05, 0.5))
                    else:
                        step(client)
                    if self.daemon.exited() is not None:
                        self.problems.append(f"run {self.daemon.runs}: the daemon exited "
                                             f"{self.daemon.exited()} by itself")
                        break
                self.finish(client)
        except RuntimeError as exc:  # a start that failed or a daemon that did not answer
            self.problems.append(str(exc))
        finally:
            self.watcher.stop()
            if self.daemon.proc is not None:
                self.daemon.signal(signal.SIGKILL)
        return self.report()

    def finish(self, client: ControlClient) -> None:
        """Halt, wait until nothing runs, check with nothing open, then SIGTERM: exit 0."""
        if self.daemon.exited() is not None:
            return
        client.halt("chaos: the end")
        deadline = time.monotonic() + 30
        while (status := client.status())["running"] or status["queued"]:
            if time.monotonic() > deadline:
                self.problems.append(f"still running after a halt: {status}")
                break
            time.sleep(0.1)
        time.sleep(1.0)  # let the watcher catch up with the tail before comparing
        self.verify(client, settled=True)
        code = self.daemon.signal(signal.SIGTERM)
        if code != 0:
            self.problems.append(f"the last SIGTERM: exit {code}")

    def report(self) -> int:
        self.problems += self.watcher.problems + self.daemon.tracebacks()
        print(f"chaos: seed {self.seed}, {self.seconds:g} s, {self.daemon.runs} daemon runs, "
              f"{len(self.check.submitted)} submits, {len(self.watcher.seen)} seqs seen by "
              f"the subscriber over {self.watcher.connects} connections")
        print("steps: " + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())))
        for problem in dict.fromkeys(self.problems):
            print(f"BROKEN: {problem}")
        print(f"invariants: {'BROKEN' if self.problems else 'all held'}")
        return 1 if self.problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    configure_logs(fmt="console", level="warning")  # not the subscriber's restart notes
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    workdir = Path(tempfile.mkdtemp(prefix="tradeloom-chaos-"))
    print(f"chaos: work directory {workdir}")
    code = Chaos(workdir, seed, args.minutes * 60).run()
    if code == 0 and not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
