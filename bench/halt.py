"""Halt benchmark: how long `engine.halt()` takes to return (every supervisor has ended its
executions and acknowledged) with 1,000 executions genuinely in flight.

Each round submits 1,000 provider -> action executions, waits until every provider is
inside its function (each holds a node actor thread), throws the kill switch and times the
call; then it checks that every execution ended halted and no action ran, resumes, and
refills. Even rounds go through `engine.halt(...)`, odd ones through
`engine.ref.ask(Halt(...))`. Two modes, 20 rounds each after an untimed warm-up:
  - cooperative nodes: the provider waits on its own `ctx.cancelled`, so the halt wakes
    all 1,000 of them at once (the contract's target case);
  - stuck nodes: the provider waits on an outside gate the halt does not touch (a hung
    exchange call); the bench opens the gate after each round.

Three more sets of rounds (cooperative nodes): one on an engine with a subscriber whose
callback sleeps 100 ms on every event while the halt is timed (a slow callback must delay
neither halt() nor any node), one with the journal on (the halt's reply waits for its
commit), and one on an engine with an on-halt hook configured
(`Engine.start(config, on_halt=[...])`: a provider -> action workflow, like a "cancel all
resting orders"): the halt must not wait for the hook, and the hook must run once per halt.

Baselines measured in the same run: a plain pykka ask round trip to one actor, a call of
`engine.status()`, and halt/resume with nothing in flight. Target: halt p99 <= 50 ms.

    .venv/bin/python bench/halt.py            # 20 rounds of 1,000 in flight
    .venv/bin/python bench/halt.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                    logger_factory=structlog.PrintLoggerFactory(sys.stderr))

from actors import (  # noqa: E402
    Config,
    DaemonConfig,
    EmergencyState,
    Engine,
    Node,
    Workflow,
)
from actors.messages import Halt  # noqa: E402
from bench.halt_probes import WAIT_S, CancelAllHook, Echo, InFlight  # noqa: E402

TARGET_P99_MS = 50.0
#: How long 1,000 blocked providers may take to all be inside their functions.
FILL_S = 15.0


def pct(samples: list[float], q: float) -> float:
    """The q-th percentile (nearest rank on the sorted samples)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def timed(fn: Any, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def row(name: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (f"{name:<48}{statistics.median(ms):>9.3f}{pct(ms, 99):>9.3f}{max(ms):>9.3f}"
            f"{len(ms):>7}")


@dataclasses.dataclass
class Rounds:
    samples: list[float] = dataclasses.field(default_factory=list)
    via: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    fill_s: list[float] = dataclasses.field(default_factory=list)
    statuses: Counter[str] = dataclasses.field(default_factory=Counter)
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def halt_rounds(engine: Engine, mode: str, rounds: int, n: int,
                hook: CancelAllHook | None = None,
                slow: threading.Event | None = None) -> Rounds:
    """`rounds` times: fill `n` in flight, halt (timed), check, release, resume.

    Untimed warm-up first: executions whose provider takes ~2 ms, like an exchange call
    (the node pool grows past its core size only once it has seen slow runs), then one
    full round (so the node actor threads exist)."""
    probe = InFlight(mode)
    wf = Workflow(f"halt_bench_{mode}", nodes=[
        Node("price", probe.provider, category="provider"),
        Node("order", probe.action, category="action", depends_on=["price"]),
    ])
    out = Rounds(via={"engine.halt()": [], "engine.ref.ask(Halt())": []})
    io_like = Workflow(f"halt_bench_warm_{mode}", nodes=[
        Node("price", lambda ctx: ctx.cancelled.wait(0.002), category="provider")])
    for handle in [engine.submit(io_like) for _ in range(300)]:
        handle.result(timeout=WAIT_S)
    for r in range(-1, rounds):
        entered0, actions0 = probe.entered, probe.actions
        gc.collect()
        t_fill = time.perf_counter()
        handles = [engine.submit(wf, {"round": r}) for _ in range(n)]
        if not probe.wait("entered", entered0 + n, FILL_S):
            short = (f"{mode} round {r}: only {probe.entered - entered0} of {n} providers "
                     f"got in flight within {FILL_S:.0f}s")
            (out.notes if r < 0 else out.problems).append(short)
        out.fill_s.append(time.perf_counter() - t_fill)
        if slow is not None:
            slow.set()  # the slow subscriber now sleeps 100 ms on every event it is given
        t0 = time.perf_counter()
        if r % 2:
            reply = engine.ref.ask(Halt(reason=f"bench {mode} {r}"), timeout=WAIT_S)
            name = "engine.ref.ask(Halt())"
        else:
            reply = engine.halt(f"bench {mode} {r}")
            name = "engine.halt()"
        dt = time.perf_counter() - t0
        if slow is not None:
            slow.clear()  # measured: let it catch up, so the results can be read
        if r >= 0:
            out.samples.append(dt)
            out.via[name].append(dt)
        if reply != {"state": "HALT", "previous_state": "NORMAL"}:
            out.problems.append(f"{mode} round {r}: halt replied {reply}")
        deadline = time.monotonic() + WAIT_S
        for handle in handles:
            try:
                result = handle.result(timeout=max(0.0, deadline - time.monotonic()))
                out.statuses[result.status] += 1
            except TimeoutError:
                out.statuses["lost"] += 1
        probe.gate.set()
        if not probe.wait("left", probe.entered):  # every provider that got in is out
            out.problems.append(f"{mode} round {r}: providers still blocked after the halt")
        probe.gate.clear()  # every provider of this round is out: the next ones block again
        if probe.actions != actions0:
            out.problems.append(f"{mode} round {r}: {probe.actions - actions0} actions ran")
        if hook is not None and not hook.wait(r + 2):  # the warm-up round is r = -1
            out.problems.append(f"{mode} round {r}: the on-halt hook did not run")
        engine.resume()
        if engine.state is not EmergencyState.NORMAL:
            out.problems.append(f"{mode} round {r}: state {engine.state} after resume")
    if probe.not_cancelled:
        out.problems.append(f"{mode}: {probe.not_cancelled} providers never saw ctx.cancelled")
    return out


@dataclasses.dataclass
class HaltRun:
    """Everything one run of this bench measured (the CLI prints it, `run_for_report`
    turns it into figures)."""

    n: int
    rounds: int
    supervisors: int
    load_before: float
    ask: list[float]
    status: list[float]
    idle: list[float]
    modes: dict[str, Rounds]
    hook_cancels: int
    events: Counter[str]


#: The sets of rounds, in the order they run: key -> (label in the table, label in verdicts).
MODES = {"coop": ("nodes wait on ctx.cancelled", "cooperative nodes"),
         "stuck": ("nodes stuck on an outside gate", "stuck nodes"),
         "hooks": ("on-halt hooks configured", "with on-halt hooks configured"),
         "slow": ("a subscriber sleeping 100 ms/event", "with a slow subscriber"),
         "journal": ("journal on (sync normal)", "with the journal on")}


def measure(rounds: int, n: int, supervisors: int | None, quick: bool) -> HaltRun:
    load_before = os.getloadavg()[0]
    baseline_n = 300 if quick else 2000
    daemon: dict[str, Any] = {"max_concurrent_executions": max(1000, n)}
    if "node_actors" in {f.name for f in dataclasses.fields(DaemonConfig)}:
        daemon["node_actors"] = n  # every blocked provider holds a node actor thread
    if supervisors:
        daemon["supervisors"] = supervisors
    engine = Engine.start(Config.from_dict({"daemon": daemon}))
    events = Counter[str]()
    engine.subscribe(lambda e: events.update((e["type"],)))

    # -- baselines, same process, same engine -------------------------------------------------
    echo = Echo.start()
    timed(lambda: echo.ask(1), 200)
    ask = timed(lambda: echo.ask(1), baseline_n)
    echo.stop()
    timed(engine.status, 200)
    status = timed(engine.status, baseline_n)
    idle: list[float] = []
    for _ in range(10 if quick else 50):
        t0 = time.perf_counter()
        engine.halt("idle")
        idle.append(time.perf_counter() - t0)
        engine.resume()

    # -- halts with n in flight ----------------------------------------------------------------
    modes: dict[str, Rounds] = {}
    modes["coop"] = halt_rounds(engine, "cancel", rounds, n)
    modes["stuck"] = halt_rounds(engine, "gate", rounds, n)
    used_supervisors = engine.config.daemon.supervisors
    engine.stop()
    hook = CancelAllHook()
    hooked = Engine.start(Config.from_dict({"daemon": daemon}), on_halt=[hook.workflow])
    modes["hooks"] = halt_rounds(hooked, "cancel", rounds, n, hook=hook)
    hooked.stop()
    slow = threading.Event()
    slowed = Engine.start(Config.from_dict({"daemon": daemon}))
    slowed.subscribe(lambda e: time.sleep(0.1) if slow.is_set() else None)
    modes["slow"] = halt_rounds(slowed, "cancel", rounds, n, slow=slow)
    slowed.stop()
    with tempfile.TemporaryDirectory() as data_dir:
        journaled = Engine.start(Config.from_dict({"daemon": {**daemon,
                                                              "data_dir": data_dir}}))
        modes["journal"] = halt_rounds(journaled, "cancel", rounds, n)
        journaled.stop()
    if hook.cancels != rounds + 1:
        modes["hooks"].problems.append(f"the on-halt hook ran {hook.cancels} times for "
                                       f"{rounds + 1} halts")
    return HaltRun(n, rounds, used_supervisors, load_before, ask, status, idle, modes,
                   hook.cancels, events)


def run_for_report(quick: bool) -> dict[str, Any]:
    """Structured results for `python -m bench` (bench/results.py). Quick: 200 in flight."""
    from bench.results import figure, result, target

    run = measure(rounds=2 if quick else 20, n=200 if quick else 1000, supervisors=None,
                  quick=quick)
    ms = [[s * 1000 for s in run.modes[key].samples] for key in MODES]
    figures = [figure(f"halt() with {run.n} in flight, {label}", "ms", samples)
               for (label, _), samples in zip(MODES.values(), ms, strict=True)]
    figures += [figure("halt() with nothing in flight", "ms", [s * 1000 for s in run.idle]),
                figure("baseline: pykka ask round trip", "ms", [s * 1000 for s in run.ask]),
                figure("baseline: engine.status()", "ms", [s * 1000 for s in run.status])]
    issues = {"coop": 4, "stuck": 4, "hooks": 7, "slow": 8, "journal": 9}
    targets = [target(issues[key], f"halt p99 <= {TARGET_P99_MS:g} ms, {run.n} in flight, "
                      f"{verdict}", f"halt() with {run.n} in flight, {label}", "<=",
                      TARGET_P99_MS, stat="p99")
               for key, (label, verdict) in MODES.items()]
    problems = [p for rounds in run.modes.values() for p in rounds.problems]
    statuses = sum((rounds.statuses for rounds in run.modes.values()), Counter[str]())
    notes = [f"{run.rounds} rounds per set; figures are per-round halt times (min-max over "
             "rounds; the target is p99 by nearest rank)"]
    if run.n < 1000:
        notes.append(f"quick mode: {run.n} in flight, not the 1,000 of the targets")
    notes += [f"PROBLEM: {p}" for p in problems]
    if set(statuses) != {"halted"}:
        notes.append(f"PROBLEM: executions ended {dict(statuses)}, not all halted")
    return result("halt", "Halt", "python bench/halt.py", run.rounds, figures, targets, notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (smoke test)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="halt rounds per mode (default 20, --quick 5)")
    parser.add_argument("--in-flight", type=int, default=1000,
                        help="executions in flight at each halt (default 1000)")
    parser.add_argument("--supervisors", type=int, default=None)
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 20)
    n = args.in_flight
    run = measure(rounds, n, args.supervisors, args.quick)
    coop, stuck = run.modes["coop"], run.modes["stuck"]
    with_hooks, with_slow, with_journal = (run.modes["hooks"], run.modes["slow"],
                                           run.modes["journal"])
    ask, status, idle, events = run.ask, run.status, run.idle, run.events

    # -- report --------------------------------------------------------------------------------
    print(f"halt benchmark: {n} executions in flight (provider -> action), {rounds} rounds "
          f"per mode, {run.supervisors} supervisors; "
          f"fill p50 {statistics.median(coop.fill_s + stuck.fill_s):.2f}s; "
          f"load average before the run {run.load_before:.1f} on {os.cpu_count()} CPUs\n")
    print(f"{'time for halt() to return':<48}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'n':>7}")
    print(row(f"{n} in flight, nodes wait on ctx.cancelled", coop.samples))
    for name, values in coop.via.items():
        print(row(f"  via {name}", values))
    print(row(f"{n} in flight, nodes stuck on an outside gate", stuck.samples))
    print(row(f"{n} in flight, on-halt hooks configured", with_hooks.samples))
    print(row(f"{n} in flight, a subscriber sleeping 100 ms/event", with_slow.samples))
    print(row(f"{n} in flight, journal on (sync normal)", with_journal.samples))
    print(row("nothing in flight", idle))
    print(row("baseline: pykka ask round trip, 1 actor", ask))
    print(row("baseline: engine.status()", status))
    p50 = statistics.median(coop.samples) * 1000
    ask50, status50 = statistics.median(ask) * 1000, statistics.median(status) * 1000
    print(f"\nhalt p50 ({n} in flight, cooperative nodes) = {p50 / ask50:,.0f}x a pykka ask "
          f"round trip, {p50 / status50:,.0f}x an engine.status() call")
    for label, result in (("cooperative nodes", coop), ("stuck nodes", stuck),
                          ("with on-halt hooks configured", with_hooks),
                          ("with a slow subscriber", with_slow),
                          ("with the journal on", with_journal)):
        q99 = pct(result.samples, 99) * 1000
        print(f"halt p99, {label}: {q99:.1f} ms vs target <= {TARGET_P99_MS:.0f} ms: "
              f"{'MET' if q99 <= TARGET_P99_MS else 'MISSED'}")
    statuses = (coop.statuses + stuck.statuses + with_hooks.statuses + with_slow.statuses
                + with_journal.statuses)
    print(f"executions: {dict(statuses)}; events: "
          f"{events['execution_halted']:,} execution_halted, "
          f"{events['node_skipped']:,} node_skipped, {events['node_started']:,} node_started")
    if round(0.99 * (rounds - 1)) == rounds - 1:
        print(f"(with {rounds} rounds, p99 by nearest rank is the worst round)")
    others = with_hooks.notes + with_slow.notes + with_journal.notes
    for note in coop.notes + stuck.notes + others:
        print("NOTE (warm-up, untimed):", note)
    problems = (coop.problems + stuck.problems + with_hooks.problems + with_slow.problems
                + with_journal.problems)
    if problems or set(statuses) != {"halted"}:
        for problem in problems:
            print("PROBLEM:", problem)
        raise SystemExit("the halt did not behave as specified")


if __name__ == "__main__":
    main()
