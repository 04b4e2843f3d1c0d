"""Dump and restore the C target; the target verifies its own state after each restore.

The target (targets/ctarget.c) holds a 64 MiB heap pattern, a read-only page,
a private file mapping with one page changed in memory, a shared anonymous
mapping, a 2000-frame stack, a non-default FPU state and ymm/r12-r15 values
held across a raw nanosleep syscall.  On SIGUSR1 it checks all of it and logs
"CHECK ok counter=N" or "CHECK FAIL <what>".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


import pyckpt
from conftest import assert_running, check, dump_kill_restore, start_ctarget









def test_dump_kill_restore(spawn, ctarget, tmp_path):
    t = start_ctarget(spawn, ctarget, tmp_path)
    before = check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    after = check(t)
    assert after > before
    # still running and counting after the check
    t.wait_for(r"^TICK", after=len(t.lines()))
    assert check(t) > after
    assert_running(t.pid)


def test_dump_kill_leaves_exit_status_to_parent(spawn, ctarget, tmp_path):
    """The killed target's parent (here the caller of dump) must see it die of SIGKILL."""
    t = start_ctarget(spawn, ctarget, tmp_path)
    check(t)
    pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    # the target is dead (a zombie) but not yet reaped: its parent reaps it
    pid, status = os.waitpid(t.pid, 0)
    assert pid == t.pid
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    t.popen.returncode = -signal.SIGKILL


def test_dump_without_kill_target_runs_on(spawn, ctarget, tmp_path):
    t = start_ctarget(spawn, ctarget, tmp_path)
    before = check(t)
    image = tmp_path / "img"
    img = pyckpt.dump(t.pid, image)
    assert img.pid == t.pid
    assert_running(t.pid)
    assert t.popen.poll() is None
    after = check(t)
    assert after > before
    r = subprocess.run([sys.executable, "-m", "pyckpt", "check", str(image)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    pyckpt.open_image(image).verify()
    assert check(t) > after


def test_restore_twice(spawn, ctarget, tmp_path):
    t = start_ctarget(spawn, ctarget, tmp_path)
    counter = check(t)
    for round_ in range(2):
        dump_kill_restore(spawn, t, tmp_path / f"img{round_}")
        new = check(t)
        assert new > counter, f"round {round_}: counter {new} after restore, {counter} before"
        counter = new
