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
import subprocess
import sys
import time
from pathlib import Path

import pytest

TARGETS = Path(__file__).parent / "targets"
PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture(scope="session", autouse=True)
def subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


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
        return self.text().splitlines()

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
