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
import struct
import subprocess
import sys
from pathlib import Path

import psutil

import pyckpt

MAP_PAGES = 8  # must match ctarget.c


def write_mapfile(path: Path) -> Path:
    """The file ctarget maps privately: word w of page p is FILE_WORD(p, w)."""
    with open(path, "wb") as f:
        for p in range(MAP_PAGES):
            f.write(struct.pack("<512Q", *(0xF11E000000000000 | (p << 32) | w for w in range(512))))
    return path


def start_ctarget(spawn, ctarget, tmp_path):
    t = spawn([str(ctarget), str(write_mapfile(tmp_path / "mapped.bin"))], name="ctarget")
    t.wait_for(r"^READY")
    return t


def check(t, timeout: float = 10.0) -> int:
    """Ask the target to verify itself; return its counter (asserts the check passed)."""
    after = len(t.lines())
    os.kill(t.pid, signal.SIGUSR1)
    m = t.wait_for(r"^CHECK (ok counter=(\d+)|FAIL.*)$", timeout=timeout, after=after)
    assert m.group(1).startswith("ok"), f"target {t.pid} failed its self-check: {m.group(0)}"
    return int(m.group(2))


def assert_running(pid: int) -> None:
    p = psutil.Process(pid)
    assert p.status() in (psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING), p.status()
    assert p.ppid() == os.getpid()


def reap_dumped(t) -> None:
    """Reap a target killed by dump(kill=True): it must have died of SIGKILL, and its PID is then free."""
    status = t.reap()
    if t.popen is None:  # a restored process: raw waitpid status
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    else:
        assert status == -signal.SIGKILL, f"the dumped target ended with {status}, not SIGKILL"


def dump_kill_restore(spawn, t, image: Path) -> None:
    """Dump with kill, reap, restore under the same PID; the target becomes the restored one."""
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
