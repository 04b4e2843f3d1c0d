"""Start-up of the `pyckpt` command (issue 14, item 1): what a command loads.

- Reading an image loads only the kinds it uses (kinds/__init__.py): a restore
  by the command of the C target's image, whose kinds are few, loads exactly
  what importing those kinds loads, and neither psutil nor python-ptrace; the
  restored process then passes its self-check.  A dump by the command loads
  neither psutil nor python-ptrace either.
- The kinds loaded keep the declared order they have when all are loaded
  (file kinds, table hooks, mapped objects, restore hooks), whichever subset.
- What replaced python-ptrace at start-up (ptrace_ops' constants and register
  struct) is python-ptrace's, value for value.
- The command's fast path for `dump`, `restore`, `show` and `check` (cli.py) parses every
  command line it takes as argparse does, and leaves any other to argparse.
- `dump`, `restore` and `show` load none of the standard modules in AVOIDED
  (dataclasses and inspect, typing, pathlib and what it pulls in, socket,
  ipaddress, json, importlib): what replaced them (_dataclass.py, codec.type_hints,
  image._pathtext, image._loads and _dumps) behaves as they do.  Nor do a dump
  and restore of a server with a listener, an epoll set and a client (the socket
  kinds call _socket through _sock.py).
- As the program, `dump`, `restore`, `show` and `check` exit without Python's
  teardown (cli._exit_now) with all their output written and their exit code, and
  leave it to Python when there is more to do (an atexit callback).

The timings themselves are bench/startup.py's (whole commands, beside Python's
own start-up and CRIU), never asserted here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from conftest import TARGETS, check, write_mapfile

import pyckpt
from pyckpt.image.ids import RECORD_IDS
from pyckpt.kinds import CORE, DUMP_KINDS, FD_KINDS, MAPPED_KINDS, fd_type

# Standard modules the dump, restore and show commands do without (each costs a
# command 1-8 ms to import): none of them may come back on those paths unnoticed.
AVOIDED = {"dataclasses", "inspect", "ast", "dis", "tokenize", "typing", "copy", "pathlib", "fnmatch",
           "urllib.parse", "ipaddress", "socket", "selectors", "base64",
           # records written by json's C encoder, read by its C scanner (image._dumps,
           # image._loads); kinds imported with __import__ (kinds._import); signals by
           # _signal (signals.py, inject, seize, tty)
           "json", "importlib", "warnings", "signal"}
# a dump: weakref (shmem's table of a restore's image readers); re (smaps and epoll
# items are split without it; a lock line, a timerfd or inotify watches take it)
DUMP_AVOIDED = {"weakref", "re"}
# restore and show: `queue` and `threading` (a dump's page writer's; signals.py and
# limits.py take _thread), `re` (pip >= 25's console script no longer imports it first)
# and `enum` (restorer.Stage is not an IntEnum: ~3 ms)
READ_AVOIDED = {"enum", "queue", "re", "threading"}

# Run in a fresh interpreter: the command's main(), then what it loaded, as JSON on the
# fd given first.
RUN_COMMAND = """
import os, sys
from pyckpt.cli import main
fd = int(sys.argv.pop(1))
code = main(sys.argv[1:])
sys.stdout.flush()
mods = sorted(m for m in sys.modules)
import json
with os.fdopen(fd, "w") as out:
    json.dump({"code": code, "modules": mods}, out)
"""

# Import exactly the given kind modules: what they load by themselves.
IMPORT_KINDS = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module("pyckpt.kinds." + name)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("pyckpt.kinds."))))
"""


def run_command(*args) -> tuple[subprocess.CompletedProcess, dict]:
    r, w = os.pipe()
    try:
        p = subprocess.run([sys.executable, "-c", RUN_COMMAND, str(w), "--no-progress", *map(str, args)],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                           pass_fds=(w,))
    finally:
        os.close(w)
    with os.fdopen(r) as f:
        loaded = json.loads(f.read() or "{}")
    return p, loaded


def kinds_of(modules) -> set[str]:
    return {m for m in modules if m.startswith("pyckpt.kinds.") and m.count(".") == 2}


def test_restore_loads_only_the_kinds_of_the_image(spawn, ctarget, tmp_path):
    t = spawn([str(ctarget), str(write_mapfile(tmp_path / "mapped.bin"))], name="ctarget")
    t.wait_for(r"^READY")
    before = check(t)
    image = tmp_path / "img"
    r, dumped = run_command("dump", t.pid, image, "--kill")
    assert r.returncode == 0 and dumped["code"] == 0, r.stderr
    assert t.reap() == -signal.SIGKILL
    # the dump: DUMP_KINDS (ctarget's fds are files and /dev/null: no other type), and
    # neither psutil nor python-ptrace
    assert not {"psutil", "ptrace", "argparse"} & set(dumped["modules"])
    assert not (AVOIDED | DUMP_AVOIDED) & set(dumped["modules"]), (AVOIDED | DUMP_AVOIDED) & set(dumped["modules"])
    out = subprocess.run([sys.executable, "-c", IMPORT_KINDS, *DUMP_KINDS], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert kinds_of(dumped["modules"]) == set(json.loads(out))
    import pkgutil

    import pyckpt.kinds as kinds

    every = {f"pyckpt.kinds.{m.name}" for m in pkgutil.iter_modules(kinds.__path__)}

    # what the image uses: the kinds of its records (image/ids.py), the core ones, and
    # the kinds of its mapped objects; and what importing just those loads
    records = pyckpt.open_image(image).records
    used = {RECORD_IDS[type(rec).RECORD_TYPE].split(".")[1] for rec in records}
    used |= set(CORE) | {MAPPED_KINDS[r.kind] for r in records
                         if type(r).__name__ == "VmaRecord" and r.kind in MAPPED_KINDS}
    assert "shmem" in used  # ctarget's MAP_SHARED|MAP_ANONYMOUS area
    out = subprocess.run([sys.executable, "-c", IMPORT_KINDS, *sorted(used)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    expected = set(json.loads(out))

    r, restored = run_command("restore", image)
    assert r.returncode == 0 and restored["code"] == 0, r.stderr
    pid = int(r.stdout)
    spawn.track(pid)
    t.popen = None
    assert pid == t.pid and psutil.Process(pid).ppid() == os.getpid()
    assert check(t) > before  # the restored process checks its own state

    assert kinds_of(restored["modules"]) == expected
    assert len(every - expected) >= 10, sorted(every - expected)  # pipes, sockets, tty, epoll...
    assert not {"psutil", "ptrace", "argparse"} & set(restored["modules"])
    assert not AVOIDED & set(restored["modules"]), AVOIDED & set(restored["modules"])
    assert not READ_AVOIDED & set(restored["modules"]), READ_AVOIDED & set(restored["modules"])


def test_sockets_load_no_socket_module(spawn, python_exe, tmp_path):
    """A server with a listener, an epoll set and a connected client (outside the
    image): its dump and restore by the commands load the socket kinds, but neither
    socket nor ipaddress (nor enum, which socket and signal bring); the restored
    server answers a new client.  (The dump leaves the server running and the test
    kills it: a dump --kill hands such a client to a holder process, started with
    subprocess.)"""
    t = spawn([python_exe, str(TARGETS / "tcp_echo.py"), "echo"], name="tcp-echo")
    port = int(t.wait_for(r"^READY (\d+)$").group(1))
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        t.wait_for(r"^ACCEPTED")
        image = tmp_path / "img"
        r, dumped = run_command("dump", t.pid, image)
        assert r.returncode == 0 and dumped["code"] == 0, r.stderr
        os.kill(t.pid, signal.SIGKILL)
        assert t.reap() == -signal.SIGKILL
        r, restored = run_command("restore", image)
        assert r.returncode == 0 and restored["code"] == 0, r.stderr
        spawn.track(int(r.stdout))
        t.popen = None
    finally:
        client.close()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as again:
        again.sendall(b"still here\n")
        got = b""
        while not got.endswith(b"\n"):
            chunk = again.recv(100)
            assert chunk, got
            got += chunk
        assert got == b"STILL HERE\n"
    for loaded in (dumped, restored):
        assert {"pyckpt.kinds.tcp", "pyckpt.kinds.tcpconn", "pyckpt.kinds.epoll"} <= kinds_of(loaded["modules"])
        assert not (AVOIDED | {"enum"}) & set(loaded["modules"]), (AVOIDED | {"enum"}) & set(loaded["modules"])


def test_show_and_check_load_only_the_kinds_of_the_image(spawn, ctarget, tmp_path):
    t = spawn([str(ctarget), str(write_mapfile(tmp_path / "mapped.bin"))], name="ctarget")
    t.wait_for(r"^READY")
    image = tmp_path / "img"
    pyckpt.dump(t.pid, image)
    for command in (["show", image], ["show", image, "--json"], ["check", image]):
        r, loaded = run_command(*command)
        assert r.returncode == 0 and loaded["code"] == 0, r.stderr
        kinds = kinds_of(loaded["modules"])
        assert {f"pyckpt.kinds.{k}" for k in CORE} <= kinds
        assert not kinds & {"pyckpt.kinds.pipes", "pyckpt.kinds.tcp", "pyckpt.kinds.unix",
                            "pyckpt.kinds.tty", "pyckpt.kinds.sysvipc", "pyckpt.kinds.epoll"}, kinds
        assert not {"psutil", "ptrace"} & set(loaded["modules"])
        if command[0] == "show":  # (check verifies: it may load more)
            assert not (AVOIDED | READ_AVOIDED) & set(loaded["modules"]) - ({"enum", "json", "re"} if "--json" in command else set()), \
                (command, (AVOIDED | READ_AVOIDED) & set(loaded["modules"]))
    info = json.loads(run_command("show", image, "--json")[0].stdout)
    assert info["tcp_outside"] == {"count": 0, "established": 0, "half_closed": 0, "closed": 0,
                                   "restore": ""}
    assert info["shared_memory"] and info["locks"] == [] and info["sysv_ipc"] == []


ORDERS = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module("pyckpt.kinds." + name)
from pyckpt.kinds.files import FILE_KINDS, TABLE_HOOKS
from pyckpt.kinds.memory import MAPPED_OBJECTS
from pyckpt.kinds.context import POINTS, hooks_at
print(json.dumps({"kinds": [k.name for k in FILE_KINDS], "hooks": [h.name for h in TABLE_HOOKS],
                  "mapped": list(MAPPED_OBJECTS),
                  "restore hooks": {p: [h.name for h in hooks_at(p)] for p in POINTS}}))
"""


def _orders(names) -> dict:
    r = subprocess.run([sys.executable, "-c", ORDERS, *names], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_kinds_loaded_keep_the_order_they_have_when_all_are():
    import pkgutil
    import random

    import pyckpt.kinds as kinds

    names = sorted(m.name for m in pkgutil.iter_modules(kinds.__path__))
    full = _orders(names)
    assert len(full["kinds"]) > 15 and len(full["hooks"]) >= 3
    rng = random.Random(14)
    subsets = [list(CORE), *(list(CORE) + rng.sample([n for n in names if n not in CORE], k)
                             for k in (2, 5, 9))]
    for subset in subsets:
        rng.shuffle(subset)
        part = _orders(subset)
        for key in ("kinds", "hooks", "mapped"):
            assert part[key] == [x for x in full[key] if x in part[key]], (key, subset)
        for point, hooks in part["restore hooks"].items():
            assert hooks == [h for h in full["restore hooks"][point] if h in hooks], (point, subset)


def test_mapped_kinds_name_the_modules_of_the_mapped_objects():
    from pyckpt.kinds import load_all
    from pyckpt.kinds.memory import MAPPED_OBJECTS

    load_all()
    assert {kind: type(obj).__module__.rpartition(".")[2] for kind, obj in MAPPED_OBJECTS.items()} \
        == MAPPED_KINDS


def test_ptrace_constants_and_registers_are_python_ptraces():
    from ptrace.binding import func
    from ptrace.binding.linux_struct import user_regs_struct

    from pyckpt import ptrace_ops as pt

    for name in ("PTRACE_TRACEME", "PTRACE_CONT", "PTRACE_DETACH", "PTRACE_SINGLESTEP",
                 "PTRACE_GETSIGINFO", "PTRACE_SETOPTIONS", "PTRACE_GETEVENTMSG",
                 "PTRACE_O_TRACECLONE", "PTRACE_O_TRACEFORK", "PTRACE_EVENT_FORK",
                 "PTRACE_EVENT_CLONE"):
        assert getattr(pt, name) == getattr(func, name), name
    assert pt.Regs._fields_ == list(user_regs_struct._fields_)
    assert pt.REGS_SIZE == 216
    raw = bytes(range(216))
    assert str(pt.decode_regs(raw)) == str(user_regs_struct.from_buffer_copy(raw))


FAST = [
    ["dump", "123", "img"], ["dump", "123", "img", "--kill"], ["--debug", "dump", "--kill", "1", "d"],
    ["dump", "1", "--precopy", "d", "--no-progress", "--debug"], ["--no-progress", "--debug", "dump", "7", "x y"],
    ["dump", "0", "img", "--kill", "--kill"],
    ["restore", "img"], ["restore", "--shell-job", "img", "--debug"], ["--no-progress", "restore", "img"],
    ["restore", "img", "--inherit-stdio", "--allow-changed-files", "--new-pidns", "--new-netns",
     "--tcp-established", "--trust-image", "--shell-job", "--no-progress", "--lazy"],
    ["show", "img"], ["show", "img", "--json"], ["--debug", "show", "--json", "img"], ["check", "img"],
    ["check", "img", "--restore", "--new-pidns", "--allow-changed-files"], ["check", "--restore", "img"],
]
ARGPARSE = [  # left to argparse (values, abbreviations, help, odd PIDs, errors)
    ["dump", "+1", "img"], ["dump", "1_0", "img"], ["dump", "١", "img"], ["dump", "1", "img", "--kil"],
    ["dump", "1", "img", "--max-deleted-size", "5"], ["restore", "img", "--fd", "1=/dev/null"],
    ["restore", "img", "--allow-changed-files=*.log"], ["restore", "--", "img"], ["restore", "-img"],
    ["restore", "img", "-h"], ["restore"], ["dump", "1"], ["dump", "1", "a", "b"], ["show"],
    ["check", "img", "--port-map", "1:2"], ["show", "img", "--js"], ["show", "img", "--kill"], ["--kill", "dump", "1", "img"], ["restore", "img", "--kill"], ["--version"], [],
    ["restore", ""], ["restore", "img", "--deleted-dir", "/tmp"],
]


@pytest.mark.parametrize("argv", FAST, ids=" ".join)
def test_fast_path_parses_as_argparse(argv):
    from pyckpt.cli import _fast_parse, _spelled, build_parser

    fast = _fast_parse(_spelled(argv))
    assert fast is not None
    # every option has its value without argparse (an option added to build_parser but
    # not to cli._FAST would still get argparse's value, parsed again then: slow)
    assert {k: v for k, v in vars(fast).items() if k != "_words"} \
        == vars(build_parser().parse_args(_spelled(argv)))


def test_fast_path_falls_back_for_an_option_it_lacks():
    from pyckpt.cli import _fast_parse

    fast = _fast_parse(["dump", "1", "img", "--kill"])
    del fast.max_deleted_size  # as if the option were added to build_parser only
    assert fast.max_deleted_size == 64 << 20 and fast.kill is True
    with pytest.raises(AttributeError):
        fast.no_such_option


@pytest.mark.parametrize("argv", ARGPARSE, ids=lambda a: " ".join(a) or "(none)")
def test_fast_path_leaves_the_rest_to_argparse(argv):
    from pyckpt.cli import _fast_parse, _spelled

    assert _fast_parse(_spelled(argv)) is None


def test_help_and_errors_stay_argparses():
    for argv, code, text in ((["dump", "--help"], 0, "--max-deleted-size"), (["--help"], 0, "exit codes:"),
                             (["dump", "x", "img"], 2, "invalid int value"),
                             (["restore", "img", "--kil"], 2, "unrecognized arguments")):
        r = subprocess.run([sys.executable, "-m", "pyckpt", *argv], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode == code and text in (r.stdout + r.stderr), (argv, r.stdout, r.stderr)


AS_PROGRAM = """
import sys
sys.argv = ["pyckpt", *sys.argv[1:]]
from pyckpt.cli import main
code = main()
print("main returned", code)
sys.exit(code)
"""


def test_the_program_exits_at_once_with_its_output_and_code(spawn, ctarget, tmp_path):
    """As the program (main() without argv), a command exits without Python's teardown
    (main does not return), its output all written to a pipe and its exit code kept;
    with an atexit callback registered, main returns and Python exits as ever."""
    t = spawn([str(ctarget), str(write_mapfile(tmp_path / "mapped.bin"))], name="ctarget")
    t.wait_for(r"^READY")
    image = tmp_path / "img"
    pyckpt.dump(t.pid, image)
    run = lambda code, *args: subprocess.run([sys.executable, "-c", code, *map(str, args)],  # noqa: E731
                                             capture_output=True, text=True, timeout=120,
                                             stdin=subprocess.DEVNULL)
    for args in (["show", image], ["show", image, "--json"], ["check", image]):
        whole = run("import sys; from pyckpt.cli import main; c = main(sys.argv[1:]); "
                    "print('main returned', c)", *args)
        assert whole.returncode == 0 and whole.stdout.endswith("main returned 0\n"), whole.stderr
        program = run(AS_PROGRAM, *args)
        assert program.returncode == 0, program.stderr
        assert program.stdout == whole.stdout[:-len("main returned 0\n")]  # all of it, and no return
        assert len(program.stdout) > 1000 or args[0] == "check"
    # an error: its line on stderr, its exit code
    bad = run(AS_PROGRAM, "show", tmp_path / "none")
    assert bad.returncode == pyckpt.ImageError.exit_code and "main returned" not in bad.stdout
    assert bad.stderr.startswith("pyckpt show: error: ") and bad.stderr.count("\n") == 1
    # an atexit callback: left to Python's exit, which runs it
    late = run("import atexit; atexit.register(print, 'atexit ran')\n" + AS_PROGRAM, "show", image)
    assert late.returncode == 0 and late.stdout.endswith("main returned 0\natexit ran\n"), late.stderr


def test_import_of_the_command_loads_little():
    """`import pyckpt.cli` (what the console script does first) loads no argparse,
    dataclasses, psutil, python-ptrace, cffi module or kind."""
    code = "import sys, pyckpt.cli; print(' '.join(sorted(sys.modules)))"
    mods = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, check=True).stdout.split())
    assert "pyckpt.cli" in mods
    heavy = {"argparse", "dataclasses", "psutil", "ptrace", "_cffi_backend", "pyckpt.kinds",
             "pyckpt.image", "pyckpt.problems", "pyckpt.templates"}
    assert not heavy & mods, heavy & mods


def test_options_load_the_kinds_they_need():
    """A restore option whose check lives in a kind loads that kind, whatever the image
    holds (kinds.OPTION_KINDS): each names a kind module, and a RestoreOptions field."""
    import dataclasses
    import pkgutil

    import pyckpt.kinds as kinds
    from pyckpt.kinds import OPTION_KINDS
    from pyckpt.kinds.context import RestoreOptions

    names = {m.name for m in pkgutil.iter_modules(kinds.__path__)}
    fields = {f.name for f in dataclasses.fields(RestoreOptions)}
    assert set(OPTION_KINDS) <= fields and set(OPTION_KINDS.values()) <= names


# --- pyckpt._dataclass: the classes it builds behave as dataclasses.dataclass's --------

SHAPES = [
    "    a: int\n    b: str\n    c: int = 3\n    d: list = field(default_factory=list)\n",
    "    x: int\n",
    "    pass\n",
    "    a: int = 1\n    b: list = field(default_factory=lambda: [1])\n"
    "    c: int = field(default=7, init=False)\n    e: list = field(default_factory=list, init=False)\n",
    "    a: int\n    b: int = field(default=0, compare=False, repr=False)\n",
    "    a: int\n    def __repr__(self):\n        return 'own'\n",
    '    """documented"""\n    a: tuple\n    b: str = "s"\n',
]
CALLS = [((), {}), ((1,), {}), ((1, "x"), {}), ((1, "x", 5, [1]), {}), ((), {"a": 2}),
         ((), {"a": (1, 2), "b": "t"}), ((1,), {"b": "y"}), ((), {"zz": 1}), ((1, 2, 3, 4, 5, 6), {}),
         ((), {"x": 4}), ((2, [5]), {}), ((), {"b": [9]})]


def _pair(body: str, frozen: bool):
    import dataclasses

    from pyckpt._dataclass import dataclass

    out = []
    for deco in (dataclasses.dataclass(frozen=frozen), dataclass(frozen=frozen)):
        ns = {"field": dataclasses.field}
        exec("class C:\n" + body, ns)
        out.append(deco(ns["C"]))
    return out


def _outcome(fn):
    try:
        return ("ok", fn())
    except (TypeError, AttributeError) as e:
        return (type(e).__name__, None)
    except Exception as e:
        return (type(e).__name__, None)


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_fast_dataclass_behaves_as_the_standard(shape, frozen):
    import dataclasses
    import inspect

    std, fast = _pair(SHAPES[shape], frozen)
    assert dataclasses.is_dataclass(fast)
    assert [(f.name, f.type, f.init, f.compare) for f in dataclasses.fields(std)] == \
        [(f.name, f.type, f.init, f.compare) for f in dataclasses.fields(fast)]
    assert str(inspect.signature(std.__init__)) == str(inspect.signature(fast.__init__))
    assert std.__match_args__ == fast.__match_args__
    assert (std.__hash__ is None) == (fast.__hash__ is None)
    assert repr(fast.__dataclass_params__) == repr(std.__dataclass_params__)
    if "documented" in SHAPES[shape]:
        assert fast.__doc__ == std.__doc__
    for args, kw in CALLS:
        s, f = _outcome(lambda: std(*args, **kw)), _outcome(lambda: fast(*args, **kw))
        assert s[0] == f[0], (args, kw, s, f)
        if s[0] != "ok":
            continue
        s, f = s[1], f[1]
        assert repr(s) == repr(f) and vars(s) == vars(f)
        assert dataclasses.asdict(s) == dataclasses.asdict(f)
        again = dataclasses.replace(f)
        assert again == f and again is not f and not (again != f) and (f == 1) is False
        assert _outcome(lambda: hash(s) == hash(dataclasses.replace(s)))[0] == \
            _outcome(lambda: hash(f) == hash(dataclasses.replace(f)))[0]
        if frozen and vars(f):
            name = next(iter(vars(f)))
            for op in (lambda x: setattr(x, name, 1), lambda x: delattr(x, name)):
                with pytest.raises(dataclasses.FrozenInstanceError):
                    op(f)
    if "default_factory=list" in SHAPES[shape]:
        a, b = fast(*([1, "x"] if shape == 0 else [])), fast(*([1, "x"] if shape == 0 else []))
        a.d.append(1) if shape == 0 else a.e.append(1)
        assert (b.d if shape == 0 else b.e) == []  # a new list per instance


def test_fast_dataclass_builds_pyckpts_classes():
    """Every dataclass of pyckpt's modules (those a command loads) is built by it (in a
    fresh interpreter: importing every module here would change what others see)."""
    code = """
import importlib, pkgutil, pyckpt
built = []
for mod in pkgutil.walk_packages(pyckpt.__path__, "pyckpt."):
    if mod.name.startswith(("pyckpt.jupyter", "pyckpt._native", "pyckpt.pytest", "pyckpt.__main__",
                            "pyckpt.fastcopy")):
        continue
    module = importlib.import_module(mod.name)
    for obj in vars(module).values():
        if isinstance(obj, type) and obj.__module__ == mod.name and "__dataclass_fields__" in obj.__dict__:
            assert obj.__repr__.__code__.co_filename.endswith("_dataclass.py"), obj
            built.append(obj)
print(len(built))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) > 80


def test_init_templates_are_written_out_for_every_shape():
    """_dataclass_inits.py holds the __init__ template of every shape of pyckpt's
    dataclasses (scripts/dataclass_inits.py --check, in a fresh interpreter), each the
    code _dataclass compiles for that shape but for its name and place."""
    import pathlib

    from pyckpt import _dataclass, _dataclass_inits

    script = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "dataclass_inits.py"
    r = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    made = [v for k, v in vars(_dataclass_inits).items() if k.startswith("init_")]
    assert len(made) > 30
    for fn in made:
        kinds, extra, *frozen = fn.__name__.split("_")[1:]
        shape = (tuple(kinds), tuple(extra), bool(frozen))
        assert _dataclass.template_name(*shape) == fn.__name__
        env: dict = {}
        exec(_dataclass.template_source(*shape), env)
        want, got = env["__init__"].__code__, _dataclass._template(*shape)
        for attr in ("co_code", "co_consts", "co_names", "co_varnames", "co_argcount", "co_flags",
                     "co_name", "co_kwonlyargcount", "co_nlocals", "co_stacksize"):
            assert getattr(got, attr) == getattr(want, attr), (fn.__name__, attr)
    assert _dataclass._template(("r",) * 40, (), True).co_argcount == 41  # a shape not written out


def test_path_text_is_pathlibs():
    """image._pathtext: the text of pathlib.Path(p), which messages print, without pathlib."""
    from pathlib import Path

    from pyckpt.image import _pathtext

    for p in ("", ".", "./", "a", "a/", "a//b", "./a/./b/.", "/", "//", "///", "//a", "///a/b",
              "/a/../b", "..", "a/..", " x ", "a/.b", ".a", "/./", Path("x/y"), "x\\y"):
        assert _pathtext(p) == str(Path(p)), p
    with pytest.raises(TypeError):
        _pathtext(b"x")


def test_record_json_is_read_as_json_loads_reads_it():
    """image._loads (json's C scanner without the json package) gives json.loads's
    value or its kind of error, for record-like texts and ~2600 damaged copies of them
    (bytes replaced, inserted, cut: whitespace, NUL, non-ASCII, BOMs, deep nesting)."""
    import random

    from pyckpt.image import _loads

    docs = [{"id": 3, "path": "/tmp/a b\\c\u00e9", "flags": 32770, "data": "AAEC", "n": None,
             "ok": True, "runs": [[1, 2, 3, 4], [5, 6, 7, 8]], "f": 1.5e-3, "big": 1 << 70},
            {"records": 12}, {"records_xxh3": 2 ** 64 - 1, "pages_size": 4096}, [], {}, "x", -0.0]
    texts = [json.dumps(d, sort_keys=True).encode() for d in docs]
    texts += [b" {}\n", b"\t[1, 2]\r\n ", b"NaN", b"[Infinity, -Infinity]", b"", b" ", b"[1] x",
              b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"\x00\x00\x00{", b"[" * 100000, b"{\"a\": 1, \"a\": 2}",
              b'"\\ud800"', b'"\x01"', b"01", b"1.", b"-", b"tru", b'{"a" 1}', bytearray(b'{"b": [true]}')]
    rng = random.Random(14)
    odd = [b" ", b"\n", b"\0", b"\x80", b"\xff", b"\\", b'"', b"}", b"]", b",", b":", b"e", b"-", b"0",
           b"\xef\xbb\xbf", b"\xe9", b"u"]
    for text in list(texts):
        for _ in range(300 if len(text) > 20 else 60):
            b = bytearray(text)
            at = rng.randrange(len(b) + 1)
            what = rng.random()
            if what < 0.4 and at < len(b):
                b[at:at + 1] = rng.choice(odd)
            elif what < 0.8:
                b[at:at] = rng.choice(odd)
            else:
                del b[at:]
            texts.append(bytes(b))

    def outcome(loads, text):
        try:
            return ("ok", repr(loads(text)))
        except RecursionError:
            return ("deep", None)
        except ValueError:  # (json's JSONDecodeError and UnicodeDecodeError are ValueErrors)
            return ("bad", None)

    assert len(texts) > 2500
    for text in texts:
        assert outcome(_loads, text) == outcome(json.loads, text), text[:80]


def test_record_json_is_written_as_json_dumps_writes_it():
    """image._dumps (json's C encoder without the json package) gives json.dumps's
    text, or its kind of error and message, sorted or not: records, odd floats,
    non-ASCII, keys json turns into strings or refuses, circular values, objects it
    cannot encode, deep nesting."""
    import random

    from pyckpt.image import _dumps

    class Text(str):
        pass

    class Number(int):
        pass

    loop: list = []
    loop.append(loop)
    values = [{"id": 3, "path": "/tmp/a b\\c\u00e9\ud800\x00\x7f", "flags": 32770, "n": None,
               "ok": True, "no": False, "runs": [[1, 2, 3, 4], (5, 6)], "f": 1.5e-3, "big": 1 << 70,
               "neg": -(1 << 63), "z": -0.0, "nan": float("nan"), "inf": [float("inf"), -float("inf")],
               "nested": {"b": {"d": 1, "c": [{}]}, "a": []}},
              {}, [], "x", "\u2603", Text("t"), Number(5), {Text("k"): Number(2)}, 1.0, 10 ** 20 + 0.5,
              {1: "int key", 2.5: "float key", True: "bool key", None: "none key"},
              {"b": 1, 1: 2}, {(1, 2): 3}, {"a": object()}, [1, {1, 2}], b"bytes", loop,
              {"d": loop}, [[[[[[[[[[[]]]]]]]]]]], [[]] * 3, {"k" * 100: "v" * 10000}]
    rng = random.Random(14)
    for _ in range(300):  # random records: dicts of the shapes records have
        values.append({"".join(rng.choice("ab_\u00e9") for _ in range(rng.randrange(1, 4))):
                       rng.choice([rng.randrange(-2 ** 70, 2 ** 70), rng.random() * 10 ** rng.randrange(-30, 30),
                                   "".join(chr(rng.randrange(0, 0x11000)) for _ in range(rng.randrange(5))),
                                   None, True, [rng.randrange(9)] * rng.randrange(4)])
                       for _ in range(rng.randrange(6))})

    def outcome(dumps, value, sort_keys):
        try:
            return ("ok", dumps(value, sort_keys=sort_keys))
        except RecursionError:
            return ("deep", None)
        except (TypeError, ValueError) as e:
            return (type(e).__name__, str(e))

    for value in values:
        for sort_keys in (False, True):
            assert outcome(_dumps, value, sort_keys) == outcome(json.dumps, value, sort_keys), value


def test_byte_searches_find_what_the_regular_expressions_found():
    """inject.find_syscall_insn, trampoline.gadget_in and sysvipc.shm_key (bytes.find and
    string tests, no `re` in a restore's start-up) answer as the regular expressions
    they replaced, on random bytes made of the pieces those look for."""
    import random
    import re

    from pyckpt.inject import find_syscall_insn
    from pyckpt.inject.trampoline import gadget_in
    from pyckpt.kinds.sysvipc import shm_key

    def syscall_insn(code):  # the former find_syscall_insn
        m = re.search(rb"\xb8[\x00-\xff][\x00-\x01]\x00\x00\x0f\x05", code)
        return m.start() + 5 if m else code.find(b"\x0f\x05")

    gadget = re.compile(rb"\x48\xc7\xc0\x0f\x00\x00\x00\x0f\x05|\xb8\x0f\x00\x00\x00\x0f\x05")
    pieces = [b"\xb8", b"\x00", b"\x01", b"\x0f", b"\x05", b"\x48", b"\xc7", b"\xc0", b"\x02", b"\xff",
              b"\x48\xc7\xc0\x0f\x00\x00\x00\x0f\x05", b"\xb8\x0f\x00\x00\x00\x0f\x05",
              b"\x00\x00\x0f\x05", b"\xb8\x3c\x01", b"\xb8\x3c\x00\x00\x00\x0f\x05", b"\x48\xc7\xc0\x0f\x00"]
    rng = random.Random(14)
    found = 0
    for _ in range(40000):
        code = b"".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        want = syscall_insn(code)
        if want < 0:
            with pytest.raises(pyckpt.PyckptError):
                find_syscall_insn(code)
        else:
            assert find_syscall_insn(code) == want, code
        m = gadget.search(code)
        assert gadget_in(code) == (m.start() if m else -1), code
        assert gadget_in(bytearray(code)) == gadget_in(code)
        found += m is not None
    assert found > 5000
    shm = re.compile(r"/SYSV([0-9a-f]{8}) \(deleted\)")
    names = ["/SYSV0000abcd (deleted)", "/SYSV0000ABCD (deleted)", "/SYSV0000abc (deleted)",
             "/SYSV0000abcde (deleted)", "/SYSV0000abcd", "/SYSV0000abcd (deleted) ", "x/SYSV0000abcd (deleted)",
             "/SYSV 000abcd (deleted)", "/SYSV-000abcd (deleted)", "/SYSV0000abcg (deleted)", "/dev/zero (deleted)",
             "/SYSV\u0661000abcd (deleted)", ""]
    names += ["/SYSV" + "".join(rng.choice("0123456789abcdefABg -") for _ in range(rng.randrange(6, 10)))
              + rng.choice([" (deleted)", "(deleted)", " (deleted"]) for _ in range(3000)]
    for name in names:
        m = shm.fullmatch(name)
        assert shm_key(name) == (int(m.group(1), 16) if m else None), name


def test_record_field_types_are_typings():
    """image/codec.py resolves the field types of records without typing: as
    typing.get_type_hints does, for every record class."""
    import typing

    from pyckpt.image.codec import RECORD_TYPES, type_hints
    from pyckpt.kinds import load_all

    load_all()
    assert len(RECORD_TYPES) > 40
    for cls in RECORD_TYPES.values():
        assert type_hints(cls) == typing.get_type_hints(cls), cls
        for f in dataclasses.fields(cls):  # and the classes nested in records
            for tp in (type_hints(cls)[f.name], *getattr(type_hints(cls)[f.name], "__args__", ())):
                if dataclasses.is_dataclass(tp):
                    assert type_hints(tp) == typing.get_type_hints(tp), tp


def test_annotations_are_read_as_eval_reads_them():
    """codec._annotation reads names, `X[A, B]`, `A | B` and None without the compiler, as
    eval gives them; anything else (and a name it cannot find) goes to eval, which says
    the same."""
    import os

    from pyckpt.image.codec import _ANNOTATIONS, _annotation
    from pyckpt.kinds.fileid import FileIdentity

    own, module = {"Mine": FileIdentity}, {"os": os, "FileIdentity": FileIdentity}
    for text in ("int", "None", "int | None", "None | int", "list[int]", "dict[str, list[int]]",
                 "tuple[int, int, str]", "list[tuple[int, int, int]] | None", "Mine", "list[Mine]",
                 "os.PathLike", "FileIdentity | bytes | None", " list[ int ,str ] "):
        assert _annotation(text, own, module) == eval(text, own, module), text  # noqa: S307
        assert text not in _ANNOTATIONS, text  # (no compiler)
    for text in ("tuple[int, ...]", "list[(int)]"):  # evaluated
        assert _annotation(text, own, module) == eval(text, own, module), text  # noqa: S307
        assert text in _ANNOTATIONS
    # a name in both the module and the class: the module's, as eval(text, own, module)
    both_own, both_module = {"Mode": int, "X": bytes}, {"Mode": str}
    for text in ("Mode", "list[Mode] | None", "X", "__class__"):
        got, want = _outcome(lambda: _annotation(text, both_own, both_module)), \
            _outcome(lambda: eval(text, both_own, both_module))  # noqa: S307
        assert got == want, text
    for text in ("x\u00b2", "\u210c", "list[" * 60 + "int" + "]" * 60):  # evaluated (names: NFKC)
        assert _outcome(lambda: _annotation(text, {"\u210c": int}, {"H": str})) == \
            _outcome(lambda: eval(text, {"\u210c": int}, {"H": str})), text[:20]  # noqa: S307
    for text in ("Missing", "list[Missing]", "int | ", "list[int"):
        with pytest.raises(Exception) as got:
            _annotation(text, own, module)
        with pytest.raises(Exception) as want:
            eval(text, own, module)  # noqa: S307
        assert type(got.value) is type(want.value), text


def test_reading_an_image_runs_no_compiler(spawn, ctarget, tmp_path):
    """A command that reads an image (a restore, show, check) decodes its records with
    the decoders written out in image/_decoders.py and reads their field types without
    compiling anything (in a fresh interpreter): ~20 decoders compiled took ~9 ms of a
    restore command, a process's first compile() ~1.3 ms more.  An image written now
    (format 3: arrays) and the committed format-2 one (objects).  Not counted: the
    import system's compiling of a module without a bytecode cache (CI's first run)."""
    t = spawn([str(ctarget), str(write_mapfile(tmp_path / "mapped.bin"))], name="ctarget")
    t.wait_for(r"^READY")
    pyckpt.dump(t.pid, tmp_path / "img")
    for image in (tmp_path / "img", Path(__file__).resolve().parent / "images" / "format2-tiny"):
        code = f"""
import builtins
calls = []
real = builtins.compile
# (not the modules' own source: compiled by the import system where there is no bytecode cache)
builtins.compile = lambda *a, **k: (str(a[1]).startswith("<") and calls.append(a[1])) or real(*a, **k)
import pyckpt
img = pyckpt.open_image({str(image)!r})
print(len(img.records), len({{type(r) for r in img.records}}), calls)
"""
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        count, kinds, calls = r.stdout.split(" ", 2)
        assert int(count) > 15 and int(kinds) > 8 and calls.strip() == "[]", (image, r.stdout)


def test_fast_dataclass_fields_are_the_standards():
    """Field options and errors as dataclasses gives them: defaults left on the class,
    a factory's field not, mutable defaults and misplaced defaults refused."""
    from pyckpt._dataclass import dataclass, field, fields, replace

    @dataclass
    class A:
        a: int
        b: int = 2
        c: list = field(default_factory=list)

    assert A.b == 2 and "c" not in A.__dict__ and [f.name for f in fields(A)] == ["a", "b", "c"]
    assert fields(A) == tuple(dataclasses.fields(A))
    assert replace(A(1), b=5) == A(1, 5, []) == dataclasses.replace(A(1), b=5)
    assert dataclasses.asdict(A(1, 3, [4])) == {"a": 1, "b": 3, "c": [4]}
    for body, error in (("x: list = []", ValueError), ("x: int = 1\n    y: int", TypeError),
                        ("x = field(default=1)", TypeError)):
        ns = {"field": field}
        exec(f"class C:\n    {body}\n", ns)
        with pytest.raises(error):
            dataclass(ns["C"])

    @dataclass
    class B(A):  # fields of a dataclass base come first
        d: int = 4

    assert [f.name for f in fields(B)] == ["a", "b", "c", "d"] and B(1).d == 4

    @dataclass
    class D:  # __init__ made when first looked up: through a subclass here
        x: int

    class E(D):
        pass

    assert E(1).x == 1 and D(x=2).x == 2 and type(D.__dict__["__init__"]).__name__ == "function"
    with pytest.raises(TypeError):
        D()


def test_kinds_claim_only_fds_of_their_types(tmp_path):
    """Every file kind claims only fds of the types kinds.FD_KINDS gives it (or is one of
    DUMP_KINDS): a dump that loads the kinds of the fds it meets asks every kind that
    could claim one.  Fds of every type, made here, in this process."""
    import ctypes
    import select
    import socket

    from pyckpt.kinds import load_all
    from pyckpt.kinds.files import FILE_KINDS, DumpedFd
    from pyckpt.proc import parse_fdinfo

    load_all()
    libc = ctypes.CDLL(None, use_errno=True)
    made, keep = [], []
    a, b = socket.socketpair()
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    keep += [a, b, listener, client, server, udp]
    made += [s.fileno() for s in keep]
    made += list(os.pipe())
    os.mkfifo(tmp_path / "fifo")
    made.append(os.open(tmp_path / "fifo", os.O_RDWR))
    made.append(os.eventfd(0))
    ep = select.epoll()
    keep.append(ep)
    made.append(ep.fileno())
    made += [libc.inotify_init1(os.O_CLOEXEC), libc.timerfd_create(1, 0), os.pidfd_open(os.getpid())]
    made.append(os.memfd_create("startup-test"))
    made.append(os.open(tmp_path / "plain", os.O_RDWR | os.O_CREAT))
    made.append(os.open(tmp_path / "gone", os.O_RDWR | os.O_CREAT))
    os.unlink(tmp_path / "gone")
    made += [os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), os.open("/dev/null", os.O_RDONLY)]
    made += list(os.openpty())
    try:
        seen = set()
        for fd in made:
            assert fd >= 0
            link = os.readlink(f"/proc/self/fd/{fd}")
            f = DumpedFd(os.getpid(), fd, link, os.stat(f"/proc/self/fd/{fd}"),
                         parse_fdinfo(open(f"/proc/self/fdinfo/{fd}").read()))
            t = fd_type(f.link, f.st.st_mode)
            allowed = set(DUMP_KINDS) | set(FD_KINDS.get(t, ()))
            for k in FILE_KINDS:
                if k.claims(f):
                    module = type(k).__module__.rpartition(".")[2]
                    assert module in allowed, (link, k.name, t)
                    seen.add(module)
        assert {"unix", "tcp", "tcpconn", "udp", "pipes", "eventfds", "epoll", "inotify", "pidfd",
                "memfd", "deleted", "regfile", "tty"} <= seen
    finally:
        for fd in made:
            if fd >= 0 and not any(s.fileno() == fd for s in keep):
                os.close(fd)
        for s in keep:
            s.close()


def test_every_kind_a_dump_needs_is_loaded_by_it():
    """A kind with a hook every process meets (table hook, dump hook, mapped object) is
    one of DUMP_KINDS; a file kind is one of them or listed under an fd type: else a
    dump would never load it."""
    from pyckpt.kinds import load_all
    from pyckpt.kinds.context import DUMP_HOOKS
    from pyckpt.kinds.files import FILE_KINDS, TABLE_HOOKS
    from pyckpt.kinds.memory import MAPPED_OBJECTS

    load_all()
    name = lambda obj: (obj if isinstance(obj, type) else type(obj)).__module__.rpartition(".")[2]  # noqa: E731
    always = {name(h) for h in TABLE_HOOKS} | {name(o) for o in MAPPED_OBJECTS.values()} | \
        {h.run.__module__.rpartition(".")[2] for h in DUMP_HOOKS}
    assert always <= set(DUMP_KINDS), always - set(DUMP_KINDS)
    by_type = {m for group in FD_KINDS.values() for m in group}
    assert {name(k) for k in FILE_KINDS} <= set(DUMP_KINDS) | by_type


# --- image/codec.py: the fast converters take exactly what the checked decoder takes ----

def _mutations(value, rng):
    """Values near `value` (a record's JSON), each one change away, some of them damage."""
    import copy

    odd = [None, True, False, 0, -1, 1 << 64, -(1 << 63) - 1, 1.5, float("inf"), "", "a\0b",
           "\udcff", "\ud800", "x", [], [1], {}, {"a": 1}, "!!", "AAAA", 2 ** 63]
    paths = []

    def walk(v, path):
        paths.append(path)
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, path + (k,))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, path + (i,))

    walk(value, ())
    for _ in range(40):
        out = copy.deepcopy(value)
        path = rng.choice(paths)
        parent = out
        for p in path[:-1]:
            parent = parent[p]
        what = rng.random()
        if not path:
            yield rng.choice(odd)
            continue
        if what < 0.7:
            parent[path[-1]] = rng.choice(odd)
        elif isinstance(parent, dict) and what < 0.85:
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent["unknown_field"] = 1
        else:
            parent.append(rng.choice(odd))
        yield out


def test_fast_decoding_takes_exactly_what_the_checked_one_takes(spawn, ctarget, tmp_path):
    import random

    from pyckpt.errors import ImageError
    from pyckpt.image import codec

    t = spawn([str(ctarget), str(write_mapfile(tmp_path / "mapped.bin"))], name="ctarget")
    t.wait_for(r"^READY")
    pyckpt.dump(t.pid, tmp_path / "img")
    records = pyckpt.open_image(tmp_path / "img").records
    rng = random.Random(14)
    compared = refused = 0
    for rec in records:
        cls = type(rec)
        payload = codec.encode(rec)
        assert codec._fast_decode(cls, payload) == codec._checked_decode(cls, payload) == rec
        for bad in _mutations(payload, rng):
            try:
                want = codec._checked_decode(cls, bad)
            except (ImageError, TypeError, ValueError) as e:
                want = type(e)
            try:
                got = codec._fast_decode(cls, bad)
            except codec._Bad:
                got = "refused"
            if got == "refused":
                assert want is not None and isinstance(want, type), (cls.__name__, bad, want)
                refused += 1
            else:
                assert got == want, (cls.__name__, bad)
                compared += 1
            # and decode() as a whole: the checked decoder's answer, whichever took it
            try:
                whole = codec.decode(cls, bad)
            except (ImageError, TypeError, ValueError) as e:
                whole = type(e)
            assert whole == want
    assert compared > 100 and refused > 100


def test_sock_does_what_socket_does_for_the_kinds():
    """_sock (the socket kinds' `socket`): the names of socket that they use, sockets
    closed by `with`, accept() giving one, socketpair, and fds passed both ways."""
    from pyckpt import _sock

    for name in ("AF_INET", "AF_INET6", "AF_UNIX", "SOCK_STREAM", "SOL_SOCKET", "SO_REUSEADDR",
                 "IPPROTO_TCP", "TCP_INFO", "inet_pton", "inet_ntop", "if_nametoindex", "CMSG_SPACE"):
        assert getattr(_sock, name) == getattr(socket, name), name
    with _sock.socket(_sock.AF_INET, _sock.SOCK_STREAM | _sock.SOCK_CLOEXEC) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname(), timeout=5) as client:
            peer, _ = listener.accept()
            with peer:
                assert isinstance(peer, _sock.socket) and peer.type == socket.SOCK_STREAM
                assert peer.family == socket.AF_INET and not peer.get_inheritable()
                client.sendall(b"x")
                assert peer.recv(1) == b"x"
            assert peer.fileno() == -1
    assert listener.fileno() == -1
    a, b = _sock.socketpair(_sock.AF_UNIX, _sock.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        with a, b:
            assert _sock.send_fds(a, [b"h"], [r, w]) == 1
            msg, fds, _, _ = _sock.recv_fds(b, 16, 4)
            assert msg == b"h" and len(fds) == 2
            for fd, orig in zip(fds, (r, w)):
                assert os.fstat(fd).st_ino == os.fstat(orig).st_ino
                os.close(fd)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("at", [0, 4093, 4096 - 9, 4096 - 8, 4096, 8191, 3 * 4096 - 9])
def test_find_gadget_reads_piece_by_piece(tmp_path, monkeypatch, at):
    """trampoline.find_gadget searches a mapping a piece at a time (PIECE), stopping at
    the first gadget: one that straddles two pieces is found, where it is."""
    import mmap

    from pyckpt.inject import trampoline
    from pyckpt.proc.maps import read_maps

    monkeypatch.setattr(trampoline, "PIECE", 4096)
    monkeypatch.setattr(trampoline, "_FOUND", {})
    code = bytearray(b"\x90" * (4 * 4096))
    code[at:at + 9] = trampoline.GADGETS[0]
    code[at + 100:at + 107] = trampoline.GADGETS[1]  # (a later one: not the first)
    path = tmp_path / "code.bin"
    path.write_bytes(bytes(code))
    with open(path, "rb") as f:
        area = mmap.mmap(f.fileno(), len(code), prot=mmap.PROT_READ | mmap.PROT_EXEC)
    try:
        mine = [m for m in read_maps(os.getpid()) if m.path == str(path)]
        assert len(mine) == 1 and mine[0].perms.startswith("r-x")
        start = mine[0].start
        assert trampoline.find_gadget(os.getpid(), mine) == start + at
        assert trampoline.find_gadget(os.getpid(), mine) == start + at  # (the remembered place)
        code[at:at + 9] = b"\x90" * 9
        path.write_bytes(bytes(code))  # (the same file: the mapping sees it)
        trampoline._FOUND.clear()
        assert trampoline.find_gadget(os.getpid(), mine) == start + at + 100
    finally:
        area.close()
