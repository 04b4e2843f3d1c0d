"""Dump and restore a CPython process holding a 100k-item dict and a 32 MiB bytearray.

The target (targets/pytarget.py) verifies its own state on SIGUSR1 and logs
"CHECK ok counter=N" or "CHECK FAIL <what>".
"""

from __future__ import annotations

from pathlib import Path

import psutil

import pyckpt
from conftest import assert_running, check, reap_dumped

PYTARGET = Path(__file__).parent / "targets" / "pytarget.py"


def start_pytarget(spawn, python_exe):
    t = spawn([python_exe, str(PYTARGET)], name="pytarget")
    t.wait_for(r"^READY", timeout=30)
    return t





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
