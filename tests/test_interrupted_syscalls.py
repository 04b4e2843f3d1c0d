"""Calls a dump interrupts come back with a result the program may get.

A dump stops every thread with a ptrace interrupt, which wakes a blocked call:
the kernel restarts most (ERESTARTSYS...), resumes timed sleeps through its
restart block (ERESTART_RESTARTBLOCK: poll and futex with a timeout,
nanosleep) and makes some fail with EINTR even with no handler
(rt_sigtimedwait, epoll_wait: signal(7)).  The targets loop on such calls,
each checking every result: a timeout or EINTR is legal; a signal, an event
or data that never came is printed as BAD.  After a restore the calls
kinds/cpu.py runs again (poll, futex, rt_sigtimedwait, epoll_wait) must not
even see an EINTR; CPython's signal.sigtimedwait turns one after its deadline
into a garbage siginfo (it also does so after a SIGSTOP/SIGCONT).  A live
dump gives those calls back rewound too (inject/trampoline.py rewind_eintr).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import pyckpt
from conftest import TARGETS, dump_kill_restore

NO_EINTR_AFTER_RESTORE = ("sigtimedwait", "poll", "epoll", "futex")


@pytest.fixture(scope="module")
def intr_c(tmp_path_factory):
    out = tmp_path_factory.mktemp("bin") / "intr_calls"
    subprocess.run(["gcc", "-O1", "-g", "-pthread", "-o", str(out), str(TARGETS / "intr_calls.c")], check=True)
    return out


def stat(t, after: int = 0) -> dict[str, tuple[int, int]]:
    """The target's newest STAT line from line `after` on: {name: (calls, eintrs)} and bad."""
    t.wait_for(r"^STAT", after=after)
    line = [ln for ln in t.lines()[after:] if ln.startswith("STAT")][-1]
    out = {}
    for k, v in re.findall(r"(\w+)=([\d/]+)", line):
        n = [int(x) for x in v.split("/")]
        out[k] = (n[0], n[1] if len(n) > 1 else 0)
    return out


def advanced(t, before: dict, skip=("read", "bad"), timeout: float = 5.0) -> dict:
    """Wait until every loop but `skip` completed two more calls than in `before`."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        now = stat(t)
        if all(now[k][0] >= before[k][0] + 2 for k in now if k not in skip):
            return now
        assert time.monotonic() < deadline, f"loops stalled: before {before}, now {now}"
        time.sleep(0.1)


def no_bad(t) -> None:
    bad = [ln for ln in t.lines() if ln.startswith("BAD")]
    assert not bad, bad


def test_c_calls_through_live_dumps(spawn, intr_c, tmp_path):
    t = spawn([str(intr_c)], name="intr")
    t.wait_for(r"^READY")
    before = advanced(t, stat(t))
    for i in range(4):
        pyckpt.dump(t.pid, tmp_path / f"img{i}")
        before = advanced(t, before)
    no_bad(t)
    now = stat(t)
    assert now["bad"] == (0, 0)
    # a live dump leaves the kernel's restarts (poll, futex, nanosleep through the
    # restart block) and reruns what failed with the stop's EINTR: no loop saw one
    assert all(now[k][1] == 0 for k in (*NO_EINTR_AFTER_RESTORE, "nanosleep")), now


@pytest.mark.parametrize("rounds", [2])
def test_c_calls_through_kill_and_restore(spawn, intr_c, tmp_path, rounds):
    t = spawn([str(intr_c)], name="intr")
    t.wait_for(r"^READY")
    before = advanced(t, stat(t))
    assert all(before[k][1] == 0 for k in NO_EINTR_AFTER_RESTORE), before  # nothing interrupts them live
    for i in range(rounds):
        dump_kill_restore(spawn, t, tmp_path / f"img{i}")
        before = advanced(t, before)
    no_bad(t)
    now = stat(t)
    assert now["bad"] == (0, 0)
    # the restored calls ran again: none of them saw the dump's EINTR
    assert all(now[k][1] == 0 for k in NO_EINTR_AFTER_RESTORE), now
    assert now["read"] == (0, 0)  # still blocked in read, restarted by the kernel


def test_python_calls_through_live_dumps(spawn, tmp_path):
    """Before the rerun, about 1 live dump in 10 handed sigtimedwait an EINTR past its deadline."""
    t = spawn([sys.executable, str(TARGETS / "intr_calls.py")], name="intr-py")
    t.wait_for(r"^READY")
    before = advanced(t, stat(t))
    for i in range(12):
        pyckpt.dump(t.pid, tmp_path / f"img{i}")
    advanced(t, before)
    no_bad(t)


def test_python_calls_through_kill_and_restore(spawn, tmp_path):
    t = spawn([sys.executable, str(TARGETS / "intr_calls.py")], name="intr-py")
    t.wait_for(r"^READY")
    before = advanced(t, stat(t))
    for i in range(3):
        dump_kill_restore(spawn, t, tmp_path / f"img{i}")
        before = advanced(t, before)
    no_bad(t)
    assert stat(t)["bad"] == (0, 0)
