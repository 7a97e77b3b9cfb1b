"""Packaging: `python -m build` makes an sdist and a wheel of a clean copy of the source; the
wheel holds `actors` and `transport` (every file of theirs, py.typed and static files
included) and nothing else; installed into a fresh venv, each of the wheel and the sdist
gives a working `tradeloom --help` and importable packages, with no `examples`, `tests` or
`bench` in site-packages.

No network: the build runs without isolation in this venv (the test extra has `build` and
`setuptools`), installs use `--no-deps`, and the fresh venv reaches this venv's
site-packages (the dependencies) through a .pth line. That line adds the directory only,
never the .pth files in it, so this checkout's editable install stays out of the way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("actors", "transport")
STEP_S = 180.0
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build",
                                     "dist", ".tradeloom", ".*_cache", ".hypothesis",
                                     "node_modules")


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the repo must not be importable by any other way
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=STEP_S, check=False)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout[-2000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    return done.stdout


def package_files() -> set[str]:
    """Every file of the import packages in the source tree (compiled files aside)."""
    return {str(p.relative_to(ROOT)) for name in PACKAGES for p in (ROOT / name).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def fresh_venv(where: Path) -> Path:
    """A venv without pip whose imports fall back on this venv's site-packages; its python."""
    run(sys.executable, "-m", "venv", "--without-pip", where)
    python = where / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (Path(purelib.strip()) / "_parent_venv.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    return python


def smoke(python: Path) -> None:
    """`tradeloom --help` works; the packages import from the venv's own site-packages."""
    help_text = run(python.parent / "tradeloom", "--help", cwd=python.parent)
    for command in ("daemon", "status", "submit", "tail", "halt", "resume", "run"):
        assert command in help_text
    where = run(python, "-c", "import actors, transport, transport.client, actors.cli; "
                "print(actors.__file__); print(transport.__file__)", cwd=python.parent)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=python.parent).strip())
    for line in where.split():
        assert Path(line).is_relative_to(site), f"{line} not from {site}"
    installed = {p.name for p in site.iterdir()}
    assert {"actors", "transport"} <= installed
    assert not {"examples", "tests", "bench"} & installed, sorted(installed)
    assert (site / "actors" / "py.typed").is_file() and (site / "transport" / "py.typed").is_file()


@pytest.mark.slow
def test_sdist_and_wheel_build_install_and_run(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=COPY_IGNORE)
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, source, cwd=tmp_path)
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(dist.iterdir())

    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
    tops = {name.split("/", 1)[0] for name in names}
    metadata = {top for top in tops if top.endswith(".dist-info")}
    assert len(metadata) == 1 and tops - metadata == set(PACKAGES), sorted(tops)
    missing = package_files() - names
    assert not missing, f"in the source but not in the wheel: {sorted(missing)}"

    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--python")
    for name, artifact in (("wheel", wheels[0]), ("sdist", sdists[0])):
        python = fresh_venv(tmp_path / f"venv-{name}")
        run(*pip, python, "install", "-q", "--no-deps", "--no-build-isolation", artifact,
            cwd=tmp_path)
        smoke(python)


def test_the_cli_and_a_daemon_without_webhooks_load_no_http_client() -> None:
    """httpx is imported where a webhook needs it (~30 ms of every CLI call otherwise)."""
    code = ("import sys, actors.cli, transport.daemon; from actors import Config; "
            "Config.from_dict({'daemon': {'data_dir': 'unused'}}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'httpx'))")
    assert run(sys.executable, "-c", code, cwd=ROOT).strip() == "[]"
    with_webhook = code.replace("'unused'}", "'unused'}, 'webhooks': [{'name': 'a', "
                                "'url': 'https://hooks.example.com/x', 'secret': 's'}]")
    assert "'httpx'" in run(sys.executable, "-c", with_webhook, cwd=ROOT)
