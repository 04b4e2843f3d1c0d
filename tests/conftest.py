"""Fixtures: targets started by the tests themselves, and only those are ever killed.

Every target runs in its own session with stdin from /dev/null and its
output in a log file the test reads.  pytest makes itself a child
subreaper, so a process restored by the `pyckpt restore` command (whose
parent exits) is reparented to pytest and can be reaped.  The finalizer
kills by PID only processes whose parent is pytest, then reaps them.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import pyckpt

TARGETS = Path(__file__).parent / "targets"
PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture(scope="session", autouse=True)
def subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


@pytest.fixture(scope="session", autouse=True)
def default_interrupt_signals():
    """Tests send SIGINT/SIGTERM to the processes they start and expect the default
    handling.  Started in the background by a shell without job control (`cmd &` in a
    script, some CI runners), pytest inherits SIGINT ignored, and so would every
    process it starts (an ignored signal stays ignored across exec): give the test
    process Python's own handler, so that children start with the default."""
    for sig, handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
        if signal.getsignal(sig) is signal.SIG_IGN:
            signal.signal(sig, handler)


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
        return int(text[text.rindex(")") + 2 :].split()[1])
    except (OSError, ValueError):
        return None


def kill_own(pid: int) -> None:
    """SIGKILL and reap `pid` if — and only if — it is a child of this test process."""
    if _parent_of(pid) != os.getpid():
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class Target:
    """A process a test started (or restored), with its log file."""

    def __init__(self, pid: int, log: Path, popen: subprocess.Popen | None = None):
        self.pid = pid
        self.log = log
        self.popen = popen

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self) -> list[str]:
        """Complete lines only: a line still being written is not read half-way."""
        text = self.text()
        return text[: text.rfind("\n") + 1].splitlines()

    def wait_for(self, pattern: str, timeout: float = 10.0, after: int = 0) -> re.Match:
        """Wait until a log line (from line index `after` on) matches `pattern`."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            for line in self.lines()[after:]:
                m = rx.search(line)
                if m:
                    return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no line matching {pattern!r} in {self.log} within {timeout}s; "
                                     f"log ends with: {self.lines()[-5:]}")
            time.sleep(0.02)

    def reap(self) -> int:
        """Wait for the (killed) process so that its PID is free again."""
        if self.popen is not None:
            return self.popen.wait(timeout=10)
        _, status = os.waitpid(self.pid, 0)
        return status

    def alive(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                text = f.read()
        except OSError:
            return False
        return text[text.rindex(")") + 2] not in "ZX"

    def state(self) -> str:
        with open(f"/proc/{self.pid}/stat") as f:
            text = f.read()
        return text[text.rindex(")") + 2]


@pytest.fixture
def spawn(tmp_path):
    """spawn(argv) -> Target: start a process in its own session, log to a file."""
    started: list[int] = []

    def start(argv, *, name: str = "target", **kw) -> Target:
        log = tmp_path / f"{name}-{len(started)}.log"
        # Python targets (also inline ones, `python -c`) import targets/selfcheck.py
        kw.setdefault("env", dict(os.environ, PYTHONPATH=str(TARGETS)))
        with open(log, "wb") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True, **kw)
        started.append(p.pid)
        return Target(p.pid, log, p)

    def track(pid: int) -> None:
        """Register a PID (a restored process) for the finalizer."""
        started.append(pid)

    start.track = track
    yield start
    for pid in reversed(started):
        kill_own(pid)


@pytest.fixture(scope="session")
def ctarget(tmp_path_factory) -> Path:
    """The C test target, compiled once per session."""
    out = tmp_path_factory.mktemp("bin") / "ctarget"
    subprocess.run(["gcc", "-O1", "-g", "-mavx2", "-o", str(out), str(TARGETS / "ctarget.c"), "-lm"],
                   check=True)
    return out


@pytest.fixture
def python_exe() -> str:
    return sys.executable


# --- helpers shared by the restore tests -------------------------------------

MAP_PAGES = 8  # pages of the file ctarget maps privately; must match ctarget.c


def write_mapfile(path: Path) -> Path:
    """The file ctarget maps privately: word w of page p is FILE_WORD(p, w)."""
    with open(path, "wb") as f:
        for p in range(MAP_PAGES):
            f.write(struct.pack("<512Q", *(0xF11E000000000000 | (p << 32) | w for w in range(512))))
    return path


def start_ctarget(spawn, ctarget, tmp_path) -> Target:
    t = spawn([str(ctarget), str(write_mapfile(tmp_path / "mapped.bin"))], name="ctarget")
    t.wait_for(r"^READY")
    return t


def check(t: Target, timeout: float = 10.0) -> int:
    """Ask the target to verify itself (SIGUSR1); return its counter; assert the check passed."""
    after = len(t.lines())
    os.kill(t.pid, signal.SIGUSR1)
    m = t.wait_for(r"^CHECK (ok counter=(\d+)|FAIL.*)$", timeout=timeout, after=after)
    assert m.group(1).startswith("ok"), f"target {t.pid} failed its self-check: {m.group(0)}"
    return int(m.group(2))


def assert_running(pid: int) -> None:
    """The process runs (not stopped, not a zombie) and is a child of this test process."""
    p = psutil.Process(pid)
    assert p.status() in (psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING), p.status()
    assert p.ppid() == os.getpid()


def reap_dumped(t: Target) -> None:
    """Reap a target killed by dump(kill=True): it must have died of SIGKILL; its PID is then free."""
    status = t.reap()
    if t.popen is None:  # a restored process: raw waitpid status
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    else:
        assert status == -signal.SIGKILL, f"the dumped target ended with {status}, not SIGKILL"


def dump_kill_restore(spawn, t: Target, image: Path) -> None:
    """Dump with kill, reap, restore under the same PID; `t` becomes the restored process."""
    pid = t.pid
    img = pyckpt.dump(pid, image, kill=True)
    assert img.pid == pid
    reap_dumped(t)
    assert not psutil.pid_exists(pid)
    proc = pyckpt.restore(image)
    spawn.track(proc.pid)
    assert proc.pid == pid
    t.popen = None  # the restored process is our child, not the Popen's
    assert_running(pid)


# --- an ordinary user, and work in a forked child -----------------------------

NOBODY = 65534


def drop_to_nobody() -> None:
    """preexec_fn (or a forked child's first step): become uid/gid 65534, no groups."""
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)


def error_in_child(work, prepare=lambda: None):
    """Run `prepare()` then `work()` in a forked child; return the PyckptError it
    raised (errors pickle), or None."""
    import pickle

    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(r)
            prepare()
            try:
                work()
                out = pickle.dumps(None)
            except pyckpt.PyckptError as e:
                out = pickle.dumps(e)
            os.write(w, out)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(child, 0)
    return pickle.loads(data)


def real_program(name: str, *more_dirs: str) -> str | None:
    """The path of a real program the tests save (nginx, redis-server, tmux,
    postgres...), or None.  scripts/setup.sh installs them; under CI
    (PYCKPT_REQUIRE_REAL_PROGRAMS set) a missing one is an error, so that its
    tests fail instead of passing as skips.  Use it at module level:

        REDIS = real_program("redis-server")
        pytestmark = pytest.mark.skipif(REDIS is None, reason="...")
    """
    import glob
    import shutil

    dirs = ["/usr/sbin", "/usr/local/sbin", "/usr/bin"]
    for d in more_dirs:
        dirs += sorted(glob.glob(d), reverse=True)
    found = shutil.which(name) or shutil.which(name, path=":".join(dirs))
    if found is None and os.environ.get("PYCKPT_REQUIRE_REAL_PROGRAMS"):
        raise RuntimeError(f"{name} is not installed, and PYCKPT_REQUIRE_REAL_PROGRAMS is set")
    return found
