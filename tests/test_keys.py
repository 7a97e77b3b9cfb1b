import subprocess
import sys
from pathlib import Path

import zmq.auth


def test_keys_writes_a_curve_key_pair_that_zmq_can_load(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "actors.cli", "keys", str(tmp_path / "k"),
                           "--name", "daemon"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    public, secret = zmq.auth.load_certificate(str(tmp_path / "k" / "daemon.key_secret"))
    assert secret is not None and len(public) == 40 and len(secret) == 40
    public_only, no_secret = zmq.auth.load_certificate(str(tmp_path / "k" / "daemon.key"))
    assert public_only == public and no_secret is None


def test_the_secret_key_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    (tmp_path / "tradeloom.key_secret").write_text("an old key, world-readable\n")
    (tmp_path / "tradeloom.key_secret").chmod(0o644)
    proc = subprocess.run([sys.executable, "-m", "actors.cli", "keys", str(tmp_path)],
                          capture_output=True, text=True, timeout=30, check=False,
                          umask=0o022)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tradeloom.key_secret").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tradeloom.key").stat().st_mode & 0o044 == 0o044  # others may read it
