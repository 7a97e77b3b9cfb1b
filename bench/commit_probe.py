"""The daemon with its journal commits timed, for committed -> received latency.

    python -m bench.commit_probe TIMES.json daemon --config FILE     # = tradeloom daemon ...

bench/stream.py part (b) measures the latency of the event stream from the instant an event
is committed to the journal to the instant a subscriber in another process has it. That
instant is not visible outside the daemon, so the benchmark starts the daemon through this
module: it wraps the journal writer's transaction (`JournalWriter._write`, BEGIN ...
COMMIT) to note, as it returns, the group's last seq and `time.time()` (an append to a list
in memory: nothing else is added to the writer's path), and writes the list to TIMES.json
when the daemon exits. Every event with a seq up to that one and above the previous entry's
was committed at that time. Both processes read the same system clock.

Nothing in the daemon imports this module; only the benchmarks start it.
"""

from __future__ import annotations

import atexit
import bisect
import json
import sys
import time
from pathlib import Path
from typing import Any

from actors.journal_group import Group
from actors.journal_writer import JournalWriter


def install(path: Path) -> None:
    """Time every commit of every JournalWriter in this process; write them at exit."""
    commits: list[tuple[int, float]] = []
    write = JournalWriter._write

    def timed_write(self: JournalWriter, group: Group) -> None:
        write(self, group)  # raises when the commit failed: nothing is noted
        commits.append((group.last_seq, time.time()))

    JournalWriter._write = timed_write  # type: ignore[method-assign]
    atexit.register(lambda: path.write_text(json.dumps(commits), encoding="utf-8"))


def committed_to_received(commits: list[list[Any]], arrivals: list[list[Any]]) -> list[float]:
    """Seconds from each arrival's commit to its arrival, for the `[seq, time]` pairs
    received that a commit covers (events committed before the probe are skipped)."""
    seqs: list[int] = []
    times: list[float] = []
    for seq, at in commits:
        if not seqs or seq > seqs[-1]:  # (a group of records alone repeats the last seq)
            seqs.append(seq)
            times.append(at)
    out = []
    for seq, received in arrivals:
        i = bisect.bisect_left(seqs, seq)
        if i < len(seqs):
            out.append(received - times[i])
    return out


def main() -> int:
    install(Path(sys.argv[1]))
    from actors.cli import main as cli_main

    return cli_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
