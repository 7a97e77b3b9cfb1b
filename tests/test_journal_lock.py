"""The data_dir lock guards even when journal.lock is deleted. The file holds the pid and
looks like a pid file an operator may remove as stale; a lock on a deleted file guards
nothing, so a second daemon started after `rm journal.lock` used to open the same journal
beside the first, and both wrote it: their seqs collided (INSERT OR REPLACE of batches),
silently. The lock is on the directory too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from actors.errors import JournalLocked
from actors.journal import Journal
from tests.journal_helpers import Sequencer, all_events, assert_gapless, started, sys_event

REPO = Path(__file__).resolve().parent.parent
OTHER_PROCESS = """
import sys
from actors.errors import JournalLocked
from actors.journal import Journal
try:
    Journal.open(sys.argv[1]).close()
    print("OPENED")
except JournalLocked as exc:
    print("LOCKED", exc)
"""


def test_a_deleted_lock_file_still_keeps_a_second_opener_out(tmp_path: Path) -> None:
    with started(tmp_path) as (journal, _):
        Sequencer(journal).emit(*[sys_event("tick") for _ in range(3)])
        assert journal.flush(5)
        os.unlink(tmp_path / "journal.lock")
        with pytest.raises(JournalLocked) as refused:  # this process
            Journal.open(tmp_path)
        assert str(tmp_path) in str(refused.value)
        other = subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(tmp_path)], cwd=REPO,
                               capture_output=True, text=True, timeout=30, check=True)
        assert other.stdout.startswith("LOCKED "), other.stdout + other.stderr
        assert not (tmp_path / "journal.lock").exists(), "the refused opener touched nothing"
    with Journal.open(tmp_path) as reopened:  # closed: the directory is free again
        assert_gapless(all_events(reopened), 1, 3)


def test_the_refusal_still_names_the_holder_s_pid(tmp_path: Path) -> None:
    with started(tmp_path):
        with pytest.raises(JournalLocked) as refused:
            Journal.open(tmp_path)
        assert refused.value.pid == os.getpid() and f"pid {os.getpid()}" in str(refused.value)
