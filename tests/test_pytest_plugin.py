"""The pytest plugin (pyckpt.pytest) and pyckpt.hooks, run as a user would: an inner
pytest session (pytester, in a subprocess) with a conftest that calls
`pyckpt.pytest.snapshot`, against examples/pytest_harness/server.py, a server
that takes a while to start and whose state each test changes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).parent.parent / "examples" / "pytest_harness"
SERVER = EXAMPLE / "server.py"

ASK = '''
def ask(sock, request):
    sock.sendall(request.encode() + b"\\n")
    answer = b""
    while not answer.endswith(b"\\n"):
        chunk = sock.recv(4096)
        assert chunk
        answer += chunk
    return answer.decode().strip()
'''


# The servers' ports are below the kernel's ephemeral range (32768-60999): a port in it
# may be the local end of any test's outgoing connection at that moment, and the bind
# then fails (seen once in CI on 47303: "Address already in use").
def _conftest(pytester, *, port: int, ready="r'^READY'", env: str = "", extra: str = "") -> None:
    pytester.makeconftest(f"""
import os, sys
import pyckpt.pytest
{ASK}
server = pyckpt.pytest.snapshot([sys.executable, {str(SERVER)!r}, "{port}"], ready={ready},
                                env=dict(os.environ, START_SECONDS="0.2"{env}){extra})
""")


def _run(pytester, *args, timeout: float = 120):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return True
    return text[text.rindex(")") + 2] in "ZX"


def test_example_suite_20_pristine_copies(pytester):
    """The README's example, as it is: 20 tests, each sees counter 0 and changes it."""
    for name in ("conftest.py", "test_server.py"):
        pytester.path.joinpath(name).write_text(EXAMPLE.joinpath(name).read_text())
    pytester.path.joinpath("server.py").write_text(SERVER.read_text())
    started = time.monotonic()
    result = _run(pytester, "-q")
    took = time.monotonic() - started
    result.assert_outcomes(passed=20)
    assert "are full restores" not in result.stdout.str()  # the plugin's warning: copies are forked
    print(f"20 tests with a server taking 2 s to start: {took:.1f} s in all")


def test_copies_are_separate_and_ready_by_port(pytester):
    """ready=PORT (a listener seen in /proc, no connection made); each copy has its own
    PID namespace (the image's PID inside), network namespace and log."""
    _conftest(pytester, port=31302, ready="31302")
    pytester.makepyfile(test_inner=f"""
from conftest import ask

def test_one(server):
    with server.connect(31302) as s:
        assert ask(s, "GET").startswith("counter 0 ")
        assert ask(s, "INCR") == "1"
        pid = ask(s, "PID")
    assert int(pid) != server.pid  # its PID inside its own namespace: the image's
    open("pids", "a").write(f"{{server.pid}} {{server.init_pid}} {{pid}}\\n")
    assert "request INCR" in server.log and "READY" not in server.log

def test_two(server):
    with server.connect(31302) as s:
        assert ask(s, "GET").startswith("counter 0 ")
        pid = ask(s, "PID")
    open("pids", "a").write(f"{{server.pid}} {{server.init_pid}} {{pid}}\\n")
    assert "request INCR" not in server.log
""")
    result = _run(pytester, "-q")
    result.assert_outcomes(passed=2)
    rows = [line.split() for line in pytester.path.joinpath("pids").read_text().splitlines()]
    assert len(rows) == 2
    assert rows[0][2] == rows[1][2]  # the same PID inside, the image's
    assert rows[0][0] != rows[1][0]  # two copies
    for outer, init, _ in rows:  # both gone, their inits reaped at teardown
        assert _dead(int(outer)) and not os.path.exists(f"/proc/{init}")


def test_failed_test_shows_its_copy_log(pytester):
    _conftest(pytester, port=31303)
    pytester.makepyfile(test_inner="""
from conftest import ask

def test_fails(server):
    with server.connect(31303) as s:
        ask(s, "INCR")
    assert False, "on purpose"

def test_passes(server):
    with server.connect(31303) as s:
        ask(s, "GET")
""")
    result = _run(pytester, "-q")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    section = out.split("pyckpt copy server.py (pid", 1)[1].split("short test summary", 1)[0]
    assert "request INCR" in section
    assert "request GET" not in section  # the other test's copy wrote that, to its own log


def test_never_ready_is_one_error_naming_argv_and_last_lines(pytester):
    pytester.makeconftest("""
import sys
import pyckpt.pytest
server = pyckpt.pytest.snapshot([sys.executable, "-c",
        "import time; print('loading'); print('still loading 42'); time.sleep(60)"],
        ready=r"^READY", timeout=1.5)
""")
    pytester.makepyfile(test_inner="""
def test_a(server): pass
def test_b(server): pass
def test_c(server): pass
""")
    result = _run(pytester, "-q", "-rs")
    result.assert_outcomes(errors=1, skipped=2)
    out = result.stdout.str()
    assert "NotReadyError" in out
    assert "still loading 42" in out and "time.sleep(60)" in out and "within 1.5 s" in out


def test_unrestorable_image_is_one_error(pytester):
    """The target holds a file open; once the first test changed it, the image cannot be
    restored: the FileChangedError once, the later tests skipped naming it."""
    data = pytester.path / "data.txt"
    data.write_text("abc\n")
    pytester.makeconftest(f"""
import sys
import pyckpt.pytest
server = pyckpt.pytest.snapshot([sys.executable, "-c",
        "import time; f = open({str(data)!r}); print('READY', flush=True); time.sleep(600)"])
""")
    pytester.makepyfile(test_inner=f"""
def test_0(server):
    open({str(data)!r}, "a").write("more\\n")
def test_1(server): pass
def test_2(server): pass
def test_3(server): pass
""")
    result = _run(pytester, "-q", "-rs")
    result.assert_outcomes(passed=1, errors=1, skipped=2)
    assert "FileChangedError" in result.stdout.str()


def test_hooks_give_each_copy_its_identity(pytester):
    """With pyckpt.hooks: after_restore re-seeds random in each copy, before_dump ran
    before the image was taken.  Without: every copy draws the same number."""
    def draws(with_hooks: bool) -> list[str]:
        _conftest(pytester, port=31304, env=', WITH_HOOKS="1"' if with_hooks else "")
        pytester.makepyfile(test_inner="""
import pytest
from conftest import ask

@pytest.mark.parametrize("n", range(3))
def test_draw(server, n):
    with server.connect(31304) as s:
        open("draws", "a").write(ask(s, "RAND") + " " + ask(s, "QUIESCED") + "\\n")
""")
        pytester.path.joinpath("draws").unlink(missing_ok=True)
        _run(pytester, "-q").assert_outcomes(passed=3)
        return pytester.path.joinpath("draws").read_text().split("\n")[:-1]

    plain = draws(False)
    assert len(set(plain)) == 1 and plain[0].endswith(" False"), plain
    hooked = draws(True)
    assert len(set(hooked)) == 3 and all(d.endswith(" True") for d in hooked), hooked


def test_copies_die_with_a_killed_pytest(pytester):
    """SIGKILL of the pytest process: the watchdog kills the copy's namespace init."""
    _conftest(pytester, port=31305)
    pytester.makepyfile(test_inner="""
import time
def test_hangs(server):
    open("pids.tmp", "w").write(f"{server.pid} {server.init_pid}")
    import os; os.rename("pids.tmp", "pids")
    time.sleep(120)
""")
    inner = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              f"--basetemp={pytester.path / 'bt'}"], cwd=pytester.path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        pids = pytester.path / "pids"
        deadline = time.monotonic() + 60
        while not pids.exists():
            assert inner.poll() is None, "the inner pytest ended early"
            assert time.monotonic() < deadline, "the inner test did not start"
            time.sleep(0.05)
        copy, init = map(int, pids.read_text().split())
        assert not _dead(copy) and not _dead(init)
    finally:
        inner.kill()  # the inner pytest, which this test started
        inner.wait()
    deadline = time.monotonic() + 10
    while not (_dead(copy) and _dead(init)):
        assert time.monotonic() < deadline, f"copy {copy} / init {init} still alive after pytest died"
        time.sleep(0.05)
    try:  # the init was re-parented to this (subreaper) process: reap it
        os.waitpid(init, 0)
    except ChildProcessError:
        pass


def test_template_copies(spawn, tmp_path):
    """pyckpt.template(): copies side by side, each its own (pristine counter, the image's
    PID inside), kill() ends one, close() the rest; a closed template makes no more."""
    import socket

    import pyckpt

    t0 = spawn([sys.executable, str(SERVER), "31306"], env=dict(os.environ, START_SECONDS="0"))
    t0.wait_for(r"^READY")
    pyckpt.dump(t0.pid, tmp_path / "img", kill=True)
    t0.reap()

    def ask(pid: int, request: str) -> str:
        with pyckpt.network_namespace(pid):
            s = socket.create_connection(("127.0.0.1", 31306), timeout=10)
        with s:
            s.sendall(request.encode() + b"\n")
            return s.makefile().readline().strip()

    with pyckpt.template(tmp_path / "img", new_netns=True, allow_changed_files=True) as t:
        assert t.fast, t.reason  # copies forked from the restored template (fastcopy.py)
        copies = [t.copy() for _ in range(3)]
        inits = [t.init_of(p) for p in copies]
        assert len({p.pid for p in copies}) == 3
        for p in copies:
            assert ask(p.pid, "INCR") == "1"  # each from the pristine state
            assert ask(p.pid, "PID") == str(t0.pid)
        t.kill(copies[0])
        assert not os.path.exists(f"/proc/{inits[0]}")
        assert ask(copies[1].pid, "INCR") == "2"
    for init in inits:
        assert not os.path.exists(f"/proc/{init}")
    with pytest.raises(pyckpt.PyckptError, match="closed"):
        t.copy()


def test_readme_shows_the_example_suite_as_it_is():
    """The README's "Testing with pyckpt" shows the conftest and the tests that
    test_example_suite_20_pristine_copies runs, verbatim."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Testing with pyckpt", 1)[1].split("\n## ", 1)[0]
    blocks, current = [], None
    for line in section.split("\n"):
        if line.startswith("    ") or (current is not None and line == ""):
            current = (current or []) + [line[4:]]
        else:
            if current:
                blocks.append("\n".join(current).strip("\n") + "\n")
            current = None
    for name in ("conftest.py", "test_server.py"):
        assert EXAMPLE.joinpath(name).read_text() in blocks, f"README does not show {name} as it is"


def test_xdist_workers_share_one_image(pytester):
    """With pytest-xdist (-n 2) the image is built once, under the lock, and both
    workers' tests get copies of it."""
    pytest.importorskip("xdist")  # a test dependency (pyproject [test], constraints.txt)
    _conftest(pytester, port=47307)
    pytester.makepyfile(test_inner="""
import os
import pytest
from conftest import ask

@pytest.mark.parametrize("n", range(6))
def test_copy(server, n):
    with server.connect(47307) as s:
        assert ask(s, "GET").startswith("counter 0 ")
        ask(s, "INCR")
    open("workers", "a").write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
""")
    result = _run(pytester, "-q", "-n", "2")
    result.assert_outcomes(passed=6)
    workers = pytester.path.joinpath("workers").read_text().split()
    assert len(workers) == 6 and set(workers) == {"gw0", "gw1"}, workers
    logs = list(pytester.path.glob("runpytest-0/pyckpt-snapshots/*/original.log"))
    assert len(logs) == 1, logs
    assert sum(line.startswith("READY") for line in logs[0].read_text().splitlines()) == 1


def test_cache_across_runs(pytester):
    """cache=DIR: the second run restores the first run's image (no new start); a file the
    target holds changed between runs makes the restore refuse the cached image
    (FileChangedError), which is then made again, once, and the tests pass."""
    data = pytester.path / "data.txt"
    data.write_text("abc\n")
    cache = pytester.path / "cache"
    starts = pytester.path / "starts"
    pytester.makeconftest(f"""
import sys
import pyckpt.pytest
server = pyckpt.pytest.snapshot([sys.executable, "-c",
        "import time; open({str(starts)!r}, 'a').write('start\\\\n'); f = open({str(data)!r}); "
        "print('READY', flush=True); time.sleep(600)"], cache={str(cache)!r})
""")
    pytester.makepyfile(test_inner="""
def test_a(server): assert server.process.is_running()
def test_b(server): assert server.process.is_running()
""")
    _run(pytester, "-q").assert_outcomes(passed=2)
    assert starts.read_text() == "start\n"
    _run(pytester, "-q").assert_outcomes(passed=2)
    assert starts.read_text() == "start\n"  # the cached image: not started again
    data.write_text("changed, longer\n")
    _run(pytester, "-q").assert_outcomes(passed=2)
    assert starts.read_text() == "start\nstart\n"  # made again, once
    assert len([d for d in cache.iterdir() if d.is_dir()]) == 1


def test_failing_before_dump_hook_is_a_warning(pytester):
    """A before_dump hook that raises: the dump goes on, and a warning says what failed;
    an after_restore hook that raises fails the test's setup naming it."""
    pytester.makeconftest("""
import sys
import pyckpt.pytest
TARGET = '''
import sys, time, pyckpt.hooks
@pyckpt.hooks.before_dump
def flush_all():
    raise RuntimeError("disk full 42")
@pyckpt.hooks.after_restore
def reconnect():
    if len(sys.argv) > 1:
        raise ConnectionError("peer gone 43")
print("READY", flush=True)
while True:
    time.sleep(1)
'''
server = pyckpt.pytest.snapshot([sys.executable, "-c", TARGET])
broken = pyckpt.pytest.snapshot([sys.executable, "-c", TARGET, "fail-after-restore"])
""")
    pytester.makepyfile(test_inner="""
def test_dumped_anyway(server):
    assert server.process.is_running()

def test_after_restore_fails(broken):
    pass
""")
    result = _run(pytester, "-q", "-rs")
    result.assert_outcomes(passed=1, errors=1)
    out = result.stdout.str()
    assert "before_dump hooks" in out and "flush_all: RuntimeError: disk full 42" in out
    assert "dumping all the same" in out
    assert "reconnect: ConnectionError: peer gone 43" in out
