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


def keys(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actors.cli", "keys", *args],
                          capture_output=True, text=True, timeout=30, check=False)


def test_the_secret_key_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    (tmp_path / "tradeloom.key_secret").write_text("an old key, world-readable\n")
    (tmp_path / "tradeloom.key_secret").chmod(0o644)
    proc = subprocess.run([sys.executable, "-m", "actors.cli", "keys", str(tmp_path), "--force"],
                          capture_output=True, text=True, timeout=30, check=False,
                          umask=0o022)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tradeloom.key_secret").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tradeloom.key").stat().st_mode & 0o044 == 0o044  # others may read it


def test_a_pair_already_there_is_kept_unless_forced(tmp_path: Path) -> None:
    """Writing over a daemon's pair locks out every client holding its public key: a whole
    pair is kept (exit 0, a note on stderr, its paths printed); half a pair is exit 2 (one
    line, nothing written); `--force` writes a new pair either way."""
    assert keys(str(tmp_path), "--name", "daemon").returncode == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    again = keys(str(tmp_path), "--name", "daemon")
    assert again.returncode == 0, again
    assert again.stderr == ("tradeloom: daemon.key and daemon.key_secret are there already, "
                            "kept (--force writes a new pair)\n")
    assert f"public key: {tmp_path / 'daemon.key'}" in again.stdout
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    for kept, other in (("daemon.key", "daemon.key_secret"), ("daemon.key_secret", "daemon.key")):
        (tmp_path / other).rename(tmp_path / "moved")  # either file alone: no pair
        refused = keys(str(tmp_path), "--name", "daemon")
        assert refused.returncode == 2 and refused.stdout == "", refused
        assert refused.stderr.count("\n") == 1 and f"{kept} exists" in refused.stderr
        (tmp_path / "moved").rename(tmp_path / other)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert keys(str(tmp_path), "--name", "daemon", "--force").returncode == 0
    assert (tmp_path / "daemon.key").read_bytes() != before["daemon.key"]
