"""A child process for the journal's crash, fault and lock tests.

    python -m tests.journal_child load DATA_DIR     append under load until killed
    python -m tests.journal_child fsize DATA_DIR    the same under RLIMIT_FSIZE, until a
                                                    write fails; then "DONE"
    python -m tests.journal_child hold DATA_DIR     open, say "R <pid>", wait for stdin EOF
    python -m tests.journal_child try DATA_DIR      try to open; print the error's line
    python -m tests.journal_child walrm DATA_DIR    no checkpoints; commit, remove
                                                    journal.db-wal, commit again; wait

Output lines (each flushed; the parent may SIGKILL at any point):
    R <last_seq>       opened; recovery.last_seq
    C <seq>            on_commit: every event up to seq is committed
    S <execution_id>   record_submitted's ticket completed
    I <key>            record_intent's ticket completed
    M <n>              save_emergency({"n": n})'s ticket completed
    E <message>        on_error
    F <bool>           flush result after the error
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import structlog

from actors.errors import JournalError
from actors.journal import Journal, Ticket
from tests.journal_helpers import Sequencer, run_events

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))

_out = threading.Lock()


def say(line: str) -> None:
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def when_done(ticket: Ticket, line: str) -> None:
    ticket.add_done_callback(lambda t: say(line) if t.done else None)


def load(data_dir: str, *, fsize: bool) -> None:
    journal = Journal.open(data_dir, keep_events=None, retry_min_s=0.01, retry_max_s=0.05)
    failed = threading.Event()

    def on_error(exc: BaseException) -> None:
        say(f"E {exc}")
        failed.set()

    journal.start(on_commit=lambda seq: say(f"C {seq}"), on_error=on_error)
    say(f"R {journal.recovery.last_seq}")
    sequencer = Sequencer(journal)
    run = journal.recovery.last_seq
    pad = "x" * (1000 if fsize else 50)
    if fsize:
        for n in range(20):  # some commits before the disk fills
            sequencer.emit(*run_events(f"exec_wf_pre{n:05d}"))
            journal.flush(5.0)
        # On a full disk the checkpoint fails as the commit does; under a per-file size
        # limit it could move the WAL's pages into journal.db and let writes resume.
        journal._checkpointer.stop(5.0)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        sizes = [os.path.getsize(p) for p in Path(data_dir).glob("journal.db*")]
        limit = max(sizes) + 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    n = 0
    while not failed.is_set():
        n += 1
        execution_id = f"exec_wf_{run:06d}{n:08x}"
        when_done(journal.record_submitted(execution_id, "wf", {"n": n, "pad": pad}, "bot",
                                           "strat", 0, None), f"S {execution_id}")
        events: list[dict[str, Any]] = run_events(execution_id)
        sequencer.emit(*events[:3])
        key = f"{execution_id}:trade"
        when_done(journal.record_intent(execution_id, "trade", key, 1, None), f"I {key}")
        sequencer.emit(*events[3:])
        if n % 7 == 0:
            when_done(journal.save_emergency({"n": n}), f"M {n}")
        if n % 50 == 0:  # a bounded pipeline; stop waiting once writes fail
            target = sequencer.seq - 200
            while not failed.is_set() and not journal.wait_committed(target, 0.05):
                pass
    say(f"F {journal.flush(0.3)}")
    say("DONE")
    sys.stdin.read()


def hold(data_dir: str) -> None:
    journal = Journal.open(data_dir)
    say(f"R {os.getpid()}")
    sys.stdin.read()
    journal.close()


def hold_and_fork(data_dir: str) -> None:
    """Hold data_dir, then fork without exec (user code's os.fork() in a node): the forked
    child says its pid and lives until its stdin (the pipe it shares with us) closes."""
    journal = Journal.open(data_dir)
    pid = os.fork()
    if pid == 0:
        say(f"FORKED {os.getpid()}")
        sys.stdin.read()
        os._exit(0)
    say(f"R {os.getpid()}")
    sys.stdin.read()
    journal.close()


def remove_the_wal(data_dir: str) -> None:
    """Events committed to the WAL only (the checkpoint thread stopped), then the WAL file
    removed and one more commit tried: the parent kills us once the error is out."""
    journal = Journal.open(data_dir, retry_min_s=0.01, retry_max_s=0.05)
    journal.start(on_commit=lambda seq: say(f"C {seq}"), on_error=lambda e: say(f"E {e}"))
    journal._checkpointer.stop(5.0)
    seq = Sequencer(journal)
    for n in range(5):
        seq.emit({"v": 1, "type": "circuit_closed", "breaker": f"b{n}", "failures": 0})
    assert journal.flush(5)
    os.unlink(Path(data_dir) / "journal.db-wal")
    seq.emit({"v": 1, "type": "circuit_closed", "breaker": "after", "failures": 0})
    say("REMOVED")
    sys.stdin.read()


def try_open(data_dir: str) -> None:
    try:
        Journal.open(data_dir).close()
        say("OPENED")
    except JournalError as exc:
        say(f"{type(exc).__name__} {exc}")


def main() -> None:
    mode, data_dir = sys.argv[1], sys.argv[2]
    if mode in ("load", "fsize"):
        load(data_dir, fsize=mode == "fsize")
    elif mode == "hold":
        hold(data_dir)
    elif mode == "fork":
        hold_and_fork(data_dir)
    elif mode == "walrm":
        remove_the_wal(data_dir)
    elif mode == "try":
        try_open(data_dir)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
