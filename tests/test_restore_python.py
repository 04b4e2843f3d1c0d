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


def test_mapped_files_are_identified_before_the_freeze(spawn, python_exe, tmp_path, monkeypatch):
    """The identities of the files a process maps (python, libc, ...) are found before
    it is frozen, while pyckpt waits for its smaps, and the frozen dump takes them for
    the same mappings (no stat of them while it is frozen); the image restores."""
    from pyckpt.kinds import memory

    calls = []  # (path, traced: the target frozen)
    real = memory.identify

    def identify(path, stat_path=None):
        with open(f"/proc/{t.pid}/status") as f:
            traced = next(line for line in f if line.startswith("TracerPid:")).split()[1] != "0"
        calls.append((path, traced))
        return real(path, stat_path)

    t = start_pytarget(spawn, python_exe)
    monkeypatch.setattr(memory, "identify", identify)
    img = pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    reap_dumped(t)
    files = {v.file.path for v in img.records if isinstance(v, memory.VmaRecord) and v.kind == "file"}
    assert files and {p for p, _ in calls} >= files
    assert not [p for p, traced in calls if traced], "a mapped file was identified in the freeze"
    proc = pyckpt.restore(tmp_path / "img")
    spawn.track(proc.pid)
    t.popen = None
    check(t)
