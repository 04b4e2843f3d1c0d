"""File locks (POSIX, OFD, flock): saved with their owner, set again without waiting.

Targets check their own locks after restore (tests/targets/lock_holder.py,
lock_waiter.py); the tests also look from another process they start
(tests/targets/lock_probe.py: F_GETLK, F_OFD_GETLK, flock LOCK_NB) that
the locks are really held by the restored PID.
"""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import pyckpt
from conftest import TARGETS, check, dump_kill_restore, reap_dumped
from test_freeze import wait_blocked_in
from pyckpt.errors import LockConflictError, UnsupportedError
from pyckpt.image import ImageReader
from pyckpt.kinds import load_all
from pyckpt.proc.locks import LockLine, parse_fdinfo_locks, parse_locks

load_all()
from pyckpt.kinds.locks import FileLockRecord  # noqa: E402  (registered by load_all)

PROBE = str(TARGETS / "lock_probe.py")


# --- parsers, on captured text ------------------------------------------------

PROC_LOCKS = """\
1: LEASE  ACTIVE    READ 24026 fe:00:2146482 0 EOF
2: FLOCK  ADVISORY  READ 24026 fe:00:2146468 0 EOF
3: OFDLCK ADVISORY  WRITE -1 fe:00:2146449 5 14
4: POSIX  ADVISORY  READ 24026 fe:00:2146448 100 EOF
5: POSIX  ADVISORY  WRITE 24026 fe:00:2146448 0 9
5: -> POSIX  ADVISORY  WRITE 24067 fe:00:2146448 2 6
5:  -> POSIX  ADVISORY  WRITE 24068 fe:00:2146448 3 3
6: FLOCK  ADVISORY  WRITE 812 00:2d:1234567 0 EOF
7: POSIX  *NOINODE* WRITE 99 <none>:0 0 EOF
"""

FDINFO = ("pos:\t0\nflags:\t02100002\nmnt_id:\t27\nino:\t2146448\n"
          "lock:\t1: POSIX  ADVISORY  WRITE 24026 fe:00:2146448 0 9\n"
          "lock:\t2: POSIX  ADVISORY  READ 24026 fe:00:2146448 100 EOF\n")


def test_parse_proc_locks():
    lines = parse_locks(PROC_LOCKS)
    assert len(lines) == 9
    assert lines[0] == LockLine(1, False, "LEASE", "ACTIVE", "READ", 24026, (0xFE, 0), 2146482, 0, None)
    assert lines[2] == LockLine(3, False, "OFDLCK", "ADVISORY", "WRITE", -1, (0xFE, 0), 2146449, 5, 14)
    assert lines[3].end is None and lines[3].start == 100
    held, waiter, nested = lines[4:7]
    assert not held.waiter and (held.pid, held.start, held.end) == (24026, 0, 9)
    assert waiter.waiter and waiter.id == 5 and (waiter.pid, waiter.start, waiter.end) == (24067, 2, 6)
    assert nested.waiter and nested.pid == 24068
    assert lines[7].dev == (0, 0x2D) and lines[7].ino == 1234567 and lines[7].kind == "FLOCK"
    assert lines[8].dev is None and lines[8].state == "*NOINODE*"
    # ranges: 0-9 meets 9-9, not 10-EOF; 100-EOF meets anything from 100 on
    assert held.overlaps(9, 9) and not held.overlaps(10, None)
    assert lines[3].overlaps(5000, None) and not lines[3].overlaps(0, 99)
    with pytest.raises(ValueError):
        parse_locks("1: POSIX ADVISORY\n")


def test_parse_fdinfo_locks():
    locks = parse_fdinfo_locks(FDINFO)
    assert [(x.kind, x.type, x.start, x.end) for x in locks] == [
        ("POSIX", "WRITE", 0, 9), ("POSIX", "READ", 100, None)]
    assert parse_fdinfo_locks("pos:\t0\nflags:\t02\nmnt_id:\t27\nino:\t5\n") == []


# --- helpers ------------------------------------------------------------------

def _probe(work) -> dict:
    out = subprocess.run([sys.executable, PROBE, "probe", str(work)], check=True, capture_output=True,
                         text=True, timeout=20, start_new_session=True).stdout
    return json.loads(out)


def _holder_view(pid: int) -> dict:
    """What another process sees while `pid` (lock_holder.py) holds its locks."""
    return {
        "posix_0_9": ["write", pid, 0, 10],
        "posix_10_99": ["unlocked"],
        "posix_100_eof": ["read", pid, 100, 0],
        "ofd_10_19": ["write", -1, 10, 10],
        "ofd_0_9": ["unlocked"],
        "flock": "exclusive",
    }


FREE = {"posix_0_9": ["unlocked"], "posix_10_99": ["unlocked"], "posix_100_eof": ["unlocked"],
        "ofd_10_19": ["unlocked"], "ofd_0_9": ["unlocked"], "flock": "free"}


def _fd_locks(pid: int, fd: int) -> list[str]:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        return [line.split(":", 2)[2].strip() for line in f if line.startswith("lock:")]


def _start_holder(spawn, python_exe, tmp_path, *extra):
    work = tmp_path / "work"
    work.mkdir()
    t = spawn([python_exe, str(TARGETS / "lock_holder.py"), str(work), *extra], name="lock-holder")
    m = t.wait_for(r"^READY pid=\d+ posix=(\d+) ofd=(\d+),(\d+) flock=(\d+)")
    fds = {"posix": int(m.group(1)), "ofd": int(m.group(2)), "ofd_dup": int(m.group(3)),
           "flock": int(m.group(4))}
    return t, work, fds


def _hold(spawn, python_exe, kind, path, type_, start=0, length=0):
    h = spawn([python_exe, PROBE, "hold", kind, str(path), type_, str(start), str(length)],
              name=f"hold-{kind}")
    h.wait_for(r"^HELD pid=")
    return h


def _lock_lines_of(pid: int) -> list[LockLine]:
    with open("/proc/locks") as f:
        return [x for x in parse_locks(f.read()) if x.pid == pid]


# --- success ------------------------------------------------------------------

def test_locks_of_every_kind_survive_dump_and_restore(spawn, python_exe, tmp_path):
    t, work, fds = _start_holder(spawn, python_exe, tmp_path)
    check(t)
    assert _probe(work) == _holder_view(t.pid)

    # A dump that lets the target go on leaves its locks alone.
    pyckpt.dump(t.pid, tmp_path / "img0")
    check(t)
    assert _probe(work) == _holder_view(t.pid)

    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    assert _probe(work) == FREE  # the locks died with the process
    recs = ImageReader(img).of_type(FileLockRecord)
    got = sorted((r.kind, r.type, r.start, r.end, os.path.basename(r.path)) for r in recs)
    assert got == [("flock", "write", 0, None, "flock.dat"), ("ofd", "write", 10, 19, "ofd.dat"),
                   ("posix", "read", 100, None, "posix.dat"), ("posix", "write", 0, 9, "posix.dat")]
    shown = subprocess.run([sys.executable, "-m", "pyckpt", "show", str(img)], capture_output=True,
                           text=True, check=True).stdout
    assert "locks: 4" in shown and "POSIX write lock on bytes 0-9" in shown

    proc = pyckpt.restore(img)
    spawn.track(proc.pid)
    assert proc.pid == t.pid
    t.popen = None
    check(t)  # the target reads its fdinfo and /proc/locks itself
    assert _probe(work) == _holder_view(t.pid)  # and another process sees them held by it
    assert _fd_locks(t.pid, fds["ofd_dup"]) == _fd_locks(t.pid, fds["ofd"]) != []
    assert f"FLOCK  ADVISORY  WRITE {t.pid} " in _fd_locks(t.pid, fds["flock"])[0]


def test_locks_on_a_deleted_file_and_a_memfd(spawn, python_exe, tmp_path):
    """The description is re-created by another kind (deleted.py, memfd.py); its locks follow."""
    t, work, _ = _start_holder(spawn, python_exe, tmp_path, "more")
    check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    check(t)
    assert _probe(work) == _holder_view(t.pid)


# --- a lock someone else holds now ----------------------------------------------

CONFLICTS = {  # kind -> (file, type, start, len) of the helper's conflicting lock
    "posix": ("posix.dat", "write", 5, 10),
    "ofd": ("ofd.dat", "read", 15, 1),
    "flock": ("flock.dat", "read", 0, 0),
}


def _helper_view_intact(kind: str, work, helper_pid: int) -> bool:
    seen = _probe(work)
    if kind == "posix":
        return seen["posix_0_9"] == ["write", helper_pid, 5, 10]
    if kind == "ofd":
        return seen["ofd_10_19"] == ["read", -1, 15, 1]
    return seen["flock"] == "shared"


def _dumped_holder(spawn, python_exe, tmp_path):
    t, work, _ = _start_holder(spawn, python_exe, tmp_path)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    return t, work, img


@pytest.mark.parametrize("kind", sorted(CONFLICTS))
def test_conflicting_lock_refuses_restore(spawn, python_exe, tmp_path, kind):
    t, work, img = _dumped_holder(spawn, python_exe, tmp_path)
    name, type_, start, length = CONFLICTS[kind]
    helper = _hold(spawn, python_exe, kind, work / name, type_, start, length)

    with pytest.raises(LockConflictError) as ei:
        pyckpt.restore(img)
    e = ei.value
    msg = str(e)
    assert e.exit_code == LockConflictError.exit_code and isinstance(e, pyckpt.RestoreError)
    assert str(work / name) in msg and e.path == str(work / name)
    assert e.holder_pids == [helper.pid] and f"process {helper.pid}" in msg
    assert {"posix": "POSIX write lock on bytes 0-9", "ofd": "OFD write lock on bytes 10-19",
            "flock": "flock exclusive lock"}[kind] in msg
    # nothing is left behind, the helper's lock is intact
    assert not psutil.pid_exists(t.pid)
    assert _helper_view_intact(kind, work, helper.pid)
    if kind != "ofd":  # (an OFD lock shows pid -1)
        assert [x.kind for x in _lock_lines_of(helper.pid)] == [kind.upper()]

    # The image was not touched: once the helper lets go, the same image restores.
    os.kill(helper.pid, signal.SIGKILL)
    helper.reap()
    proc = pyckpt.restore(img)
    spawn.track(proc.pid)
    t.popen = None
    check(t)
    assert _probe(work) == _holder_view(t.pid)


def test_conflicting_lock_through_the_cli(spawn, python_exe, tmp_path):
    t, work, img = _dumped_holder(spawn, python_exe, tmp_path)
    helper = _hold(spawn, python_exe, "posix", work / "posix.dat", "read", 0, 1)
    r = subprocess.run([sys.executable, "-m", "pyckpt", "--no-progress", "restore", str(img)],
                       capture_output=True, text=True, timeout=60, start_new_session=True)
    assert r.returncode == LockConflictError.exit_code, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert str(work / "posix.dat") in lines[0] and f"process {helper.pid}" in lines[0]
    assert "POSIX write lock on bytes 0-9" in lines[0]
    assert not psutil.pid_exists(t.pid)
    assert _probe(work)["posix_0_9"] == ["read", helper.pid, 0, 1]


# --- a task blocked waiting for a lock ------------------------------------------

def _waiting_on(pid: int, path) -> bool:
    """A `->` line of `pid` on `path` (an OFD request shows pid -1: the test's only waiter)."""
    ino = os.stat(path).st_ino
    with open("/proc/locks") as f:
        return any(x.waiter and x.pid in (pid, -1) and x.ino == ino for x in parse_locks(f.read()))


def _wait_until(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("kind", ["posix", "ofd", "flock"])
def test_task_waiting_for_a_lock_waits_again_after_restore(spawn, python_exe, tmp_path, kind):
    work = tmp_path / "work"
    work.mkdir()
    (work / "wait.dat").write_bytes(b"\0" * 200)
    holder = _hold(spawn, python_exe, kind, work / "wait.dat", "write", 0, 100)
    t = spawn([python_exe, str(TARGETS / "lock_waiter.py"), str(work), kind], name="lock-waiter")
    t.wait_for(r"^WAITING pid=")
    _wait_until(lambda: _waiting_on(t.pid, work / "wait.dat"))

    img = tmp_path / "img"
    dump_kill_restore(spawn, t, img)
    recs = ImageReader(img).of_type(FileLockRecord)
    # only the lock it held is saved, not the one it was waiting for
    assert [(os.path.basename(r.path), r.kind, r.type, r.start, r.end) for r in recs] == [
        ("held.dat", "posix", "write", 0, 9)]

    # back in its syscall, waiting again (the request shows as a `->` line)
    _wait_until(lambda: _waiting_on(t.pid, work / "wait.dat"))
    wait_blocked_in(t.pid, "flock" if kind == "flock" else "fcntl")
    assert "GOT" not in t.text()
    held = [x for x in _lock_lines_of(t.pid) if not x.waiter]
    assert [(x.kind, x.type, x.start, x.end) for x in held] == [("POSIX", "WRITE", 0, 9)]

    os.kill(holder.pid, signal.SIGKILL)  # the holder lets go: the restored task gets the lock
    holder.reap()
    m = t.wait_for(r"^GOT (ok|FAIL.*)$")
    assert m.group(1) == "ok", m.group(0)


# --- leases -------------------------------------------------------------------

def test_lease_is_refused_at_dump(spawn, python_exe, tmp_path):
    path = tmp_path / "leased.dat"
    path.write_bytes(b"x" * 100)
    t = spawn([python_exe, PROBE, "hold", "lease", str(path), "read", "0", "0"], name="leaser")
    fd = int(t.wait_for(r"^HELD pid=\d+ fd=(\d+)").group(1))
    # HELD is printed just before the sleep: under load the target may not be in it yet
    # (state R), which a check right after the dump took for harm done.
    wait_blocked_in(t.pid, "clock_nanosleep")
    with pytest.raises(UnsupportedError) as ei:
        pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    msg = str(ei.value)
    assert str(path) in msg and "lease" in msg and f"process {t.pid}" in msg
    assert f"fd {fd} " in msg
    # left running (not stopped, not traced), back in its sleep (after a detach it runs
    # for a moment first), lease and all
    assert t.alive() and t.state() not in "tT"
    with open(f"/proc/{t.pid}/status") as f:
        assert "TracerPid:\t0\n" in f.read()
    wait_blocked_in(t.pid, "clock_nanosleep")
    assert [x.kind for x in _lock_lines_of(t.pid)] == ["LEASE"]
