"""The `tradeloom` entry point and the lazy `actors` package: a Ctrl-C while the command
loads, or before the daemon answered it, is exit 130 with one line (an interrupt in an
import printed a traceback; one during a `halt` exited 0, as if it had been done), and
`import actors` loads none of the engine until a name of it is used."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import actors
import transport
from tests.engine_journal_helpers import eventually
from tests.test_cli_submit_reply import SlowControl

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60

#: A child whose import of `module` raises KeyboardInterrupt, as a Ctrl-C arriving just then
#: does, then runs the entry point with the given arguments.
INTERRUPTED_IMPORT = """
import sys

class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, Interrupt())
from actors.cli_entry import main
sys.exit(main())
"""


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False)


@pytest.mark.parametrize("module", ["actors.config", "zmq", "transport.tail",
                                    "transport.control_client"])
def test_a_ctrl_c_while_the_command_loads_exits_130_without_a_traceback(module: str) -> None:
    done = python(INTERRUPTED_IMPORT.format(module=module), "status")
    assert (done.returncode, done.stdout) == (130, "")
    assert done.stderr == "tradeloom: error: interrupted while loading (nothing was done)\n"


@pytest.mark.parametrize(("args", "module", "code", "says"), [
    (["daemon", "--config", "{config}"], "transport.daemon", 0, ""),
    (["tail"], "transport.subscriber", 0, ""),
    (["submit", "wf"], "transport.cli_submit", 130,
     "tradeloom: error: interrupted before the command finished"),
])
def test_a_ctrl_c_once_the_command_runs_is_0_where_it_is_the_way_to_end_else_130(
        tmp_path: Path, args: list[str], module: str, code: int, says: str) -> None:
    """`tail` and `daemon` end on Ctrl-C, at any moment (a daemon still starting too);
    any other command it cuts short is not done."""
    config = tmp_path / "daemon.toml"
    config.write_text(f'[daemon]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    done = python(INTERRUPTED_IMPORT.format(module=module),
                  *[arg.format(config=config) for arg in args])
    assert (done.returncode, done.stdout) == (code, ""), done.stderr
    assert done.stderr.startswith(says) and done.stderr.count("\n") == (1 if says else 0)


def test_the_console_script_runs_the_guarded_entry_point() -> None:
    script = Path(sys.executable).parent / "tradeloom"
    assert "actors.cli_entry" in script.read_text(encoding="utf-8")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert (done.returncode, done.stdout.split()[0]) == (0, "tradeloom")


def test_a_submodule_is_an_attribute_of_the_package_as_before() -> None:
    """`import actors; actors.messages.Halt(...)` worked while the package imported the
    engine (and with it every submodule) eagerly."""
    code = "import actors; print(actors.messages.Halt.__name__, actors.config.Config.__name__)"
    assert python(code).stdout.split() == ["Halt", "Config"]


def test_importing_the_package_loads_no_engine_until_a_name_is_used() -> None:
    code = ("import sys, actors; before = 'actors.engine' in sys.modules; "
            "from actors import Engine; "
            "print(before, Engine.__module__, 'actors.engine' in sys.modules)")
    assert python(code).stdout.split() == ["False", "actors.engine", "True"]


@pytest.mark.parametrize("package", [actors, transport], ids=lambda p: p.__name__)
def test_every_public_name_resolves_and_unknown_ones_do_not(package: ModuleType) -> None:
    for name in package.__all__:  # what its module defines under that name (an alias too)
        value = getattr(package, name)
        defined_in = getattr(value, "__module__", None) or package._DEFINED_IN[name]
        assert getattr(sys.modules[defined_in], name) is value, name
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match=f"module '{package.__name__}' has no attribute "
                                             "'Engin'"):
        package.Engin  # noqa: B018 - the lookup is the test
    star: dict[str, object] = {}
    exec(f"from {package.__name__} import *", star)  # what `import *` binds
    assert set(package.__all__) <= set(star)


def test_importing_transport_loads_neither_server_nor_publisher_until_used() -> None:
    code = ("import sys, transport; print(sorted(m for m in ('transport.control', "
            "'transport.publisher', 'zmq') if m in sys.modules)); "
            "print(transport.tail.__name__, transport.Publisher.__module__)")
    assert python(code).stdout.split("\n")[:2] == ["[]", "transport.tail transport.publisher"]


#: The entry point with Python's own Ctrl-C handler, whatever the test runner's parent set
#: (a shell's background job inherits SIGINT ignored).
ENTRY = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "from actors.cli_entry import main; sys.exit(main())")


@pytest.fixture
def mute_control() -> Iterator[SlowControl]:
    """A control socket that answers `ping` and nothing else."""
    with SlowControl({"ping": 0.0}) as control:
        yield control


@pytest.mark.parametrize(("args", "op"), [(["halt", "--reason", "r"], "halt"),
                                          (["submit", "wf"], "submit")])
def test_a_ctrl_c_before_the_reply_is_exit_130_not_a_success(
        mute_control: SlowControl, args: list[str], op: str) -> None:
    """The daemon got the request and has not answered: exit 0 would tell a script the halt
    (or the submit) was done."""
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, *args, "--control",
                             mute_control.endpoint, "--timeout", "30"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: op in mute_control.received, TIMEOUT_S, f"the {op} request")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, out) == (130, "")
    assert err.startswith("tradeloom: error: interrupted") and err.count("\n") == 1, err


NAPPING_WORKFLOW = """
from actors import Node, Workflow

def nap(ctx):
    ctx.cancelled.wait(30)
    return {"slept": True}

workflow = Workflow("napping", nodes=[Node("nap", nap)])
"""


def test_a_ctrl_c_during_run_is_exit_130_not_a_completed_run(tmp_path: Path) -> None:
    (tmp_path / "napping_wf.py").write_text(NAPPING_WORKFLOW, encoding="utf-8")
    lines: list[str] = []
    with subprocess.Popen([sys.executable, "-c", ENTRY, "run", "napping_wf:workflow"],
                          cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = proc.stdout, proc.stderr
        reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")),
                                  daemon=True)
        reader.start()
        try:
            eventually(lambda: any("node_started" in line for line in lines), TIMEOUT_S,
                       "the node to start")
            proc.send_signal(signal.SIGINT)
            proc.wait(TIMEOUT_S)
            reader.join(TIMEOUT_S)
            err = stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err
    assert err.startswith("tradeloom: error: interrupted before the execution ended"), err
    assert err.count("\n") == 1 and not any("result:" in line for line in lines), (err, lines)


#: Runs the entry point, then prints which of the engine's and the server's modules it loaded.
LOADED_BY = """
import sys
from actors.cli_entry import main
try:
    code = main()
except SystemExit as exc:  # (--version, --help)
    code = exc.code
heavy = ["actors.engine", "structlog", "pykka", "transport.control", "transport.publisher",
         "zmq.auth.thread", "rich"]
print(",".join(name for name in heavy if name in sys.modules))
sys.exit(code)
"""


@pytest.mark.parametrize(("args", "code"), [
    (["status", "--timeout", "0.05", "--control", "tcp://127.0.0.1:1"], 3),  # (no daemon)
    (["--version"], 0),
    (["halt", "--help"], 0),
])
def test_a_client_command_loads_neither_the_engine_nor_structlog(args: list[str],
                                                                 code: int) -> None:
    """Each `tradeloom` call an operator or a script makes started the whole engine and
    structlog first: ~0.5 s of imports before a `status` sent its request."""
    done = python(LOADED_BY, *args)
    assert done.returncode == code, done.stderr
    assert done.stdout.splitlines()[-1] == "", done.stdout


def test_the_version_is_the_packages() -> None:
    from actors.version import VERSION

    text = (ROOT / "pyproject.toml").read_text()
    assert f'\nversion = "{VERSION}"\n' in text
