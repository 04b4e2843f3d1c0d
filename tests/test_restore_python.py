"""Dump and restore a CPython process holding a 100k-item dict and a 32 MiB bytearray.

The target (targets/pytarget.py) verifies its own state on SIGUSR1 and logs
"CHECK ok counter=N" or "CHECK FAIL <what>".
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

import pyckpt

PYTARGET = Path(__file__).parent / "targets" / "pytarget.py"


def start_pytarget(spawn, python_exe):
    t = spawn([python_exe, str(PYTARGET)], name="pytarget")
    t.wait_for(r"^READY", timeout=30)
    return t


def check(t, timeout: float = 20.0) -> int:
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


def test_python_dump_kill_restore(spawn, python_exe, tmp_path):
    t = start_pytarget(spawn, python_exe)
    before = check(t)
    image = tmp_path / "img"
    img = pyckpt.dump(t.pid, image, kill=True)
    assert img.pid == t.pid
    reap_dumped(t)
    assert not psutil.pid_exists(t.pid)
    proc = pyckpt.restore(image)
    spawn.track(proc.pid)
    assert proc.pid == t.pid
    t.popen = None
    assert_running(t.pid)
    after = check(t)
    assert after > before
    assert check(t) > after
    assert_running(t.pid)


def test_python_dump_without_kill(spawn, python_exe, tmp_path):
    t = start_pytarget(spawn, python_exe)
    before = check(t)
    pyckpt.dump(t.pid, tmp_path / "img")
    assert_running(t.pid)
    assert check(t) > before
    pyckpt.open_image(tmp_path / "img").verify()
