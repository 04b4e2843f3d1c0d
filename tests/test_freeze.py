"""A task frozen inside a blocking syscall goes back into it — after a dump that
leaves it running, and after a restore.  The target reports when and how its
call returned."""

import os
import signal
import subprocess
import time

import pytest

import pyckpt

from conftest import TARGETS, Target


@pytest.fixture(scope="session")
def sleeper(tmp_path_factory):
    out = tmp_path_factory.mktemp("bin") / "sleeper"
    subprocess.run(["gcc", "-O1", "-o", str(out), str(TARGETS / "sleeper.c")], check=True)
    return str(out)


def _woke(t: Target) -> list[str]:
    return [line for line in t.lines() if line.startswith("WOKE")]


# x86-64 numbers; glibc's nanosleep() is clock_nanosleep, and so is Python's time.sleep()
SYSCALLS = {"read": 0, "pause": 34, "fcntl": 72, "flock": 73, "clock_nanosleep": 230}


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def blocked_in(pid: int) -> int | None:
    """The syscall `pid` sleeps in (state S, /proc/PID/syscall), or None."""
    try:
        before = _state(pid)
        with open(f"/proc/{pid}/syscall") as f:
            words = f.read().split()
        after = _state(pid)
    except OSError:
        return None
    if before != "S" or after != "S" or not words or words[0] in ("running", "-1"):
        return None
    return int(words[0])


def wait_blocked_in(pid: int, name: str, timeout: float = 10.0) -> None:
    """Wait until process `pid` sleeps inside syscall `name`.

    After a dump's detach or a restore's release the task runs (state R) until
    it is back in its call, so seeing it there means it went back into it.
    """
    deadline = time.monotonic() + timeout
    while blocked_in(pid) != SYSCALLS[name]:
        if time.monotonic() > deadline:
            try:
                with open(f"/proc/{pid}/syscall") as f:
                    now = f.read().split()[:1]
                state = _state(pid)
            except OSError as e:
                now, state = [], f"gone ({e})"
            raise AssertionError(f"process {pid} is not sleeping in {name} after {timeout}s: "
                                 f"state {state}, syscall {now}")
        time.sleep(0.002)


def test_pause_survives_dump_and_wakes_on_signal(spawn, sleeper, tmp_path):
    t = spawn([sleeper, "pause"])
    t.wait_for("READY")
    wait_blocked_in(t.pid, "pause")
    pyckpt.dump(t.pid, tmp_path / "img")
    wait_blocked_in(t.pid, "pause")  # back in it: had it returned, WOKE would be logged by now
    assert _woke(t) == [], "pause() returned although nothing woke it"
    os.kill(t.pid, signal.SIGUSR1)
    m = t.wait_for(r"WOKE pause ret=(-?\d+) errno=(\d+)")
    assert m.group(1) == "-1" and int(m.group(2)) == 4  # EINTR, after the handler ran
    assert "SIG" in t.lines()


def test_nanosleep_keeps_its_deadline_across_dump(spawn, sleeper, tmp_path):
    t = spawn([sleeper, "nanosleep"])
    t.wait_for("READY")
    wait_blocked_in(t.pid, "clock_nanosleep")
    # Part of what is measured: the dump comes 1 s into the 2 s sleep, so a sleep
    # restarted in full would take 3 s or more.  (Later, the sleep ends first: no false failure.)
    time.sleep(1.0)
    assert _woke(t) == []
    pyckpt.dump(t.pid, tmp_path / "img")
    m = t.wait_for(r"WOKE nanosleep ret=(-?\d+) errno=\d+ took=([\d.]+)", timeout=5)
    assert m.group(1) == "0", "nanosleep was cut short by the dump"
    assert 1.9 < float(m.group(2)) < 2.9, "nanosleep did not keep its deadline"


def test_read_on_a_pipe_survives_a_dump(tmp_path, sleeper, spawn):
    """stdin is a pipe from the test (outside the image): the freeze and thaw must
    not disturb the read() blocked on it, nor take any byte from the pipe."""
    log = tmp_path / "read.log"
    r, w = os.pipe()
    with open(log, "wb") as out:
        p = subprocess.Popen([sleeper, "read"], stdin=r, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
    os.close(r)
    spawn.track(p.pid)
    t = Target(p.pid, log, p)
    t.wait_for("READY")
    wait_blocked_in(t.pid, "read")
    image = pyckpt.dump(t.pid, tmp_path / "img")
    fd0 = [f for f in image.summary()["fds"] if f["fd"] == 0][0]
    assert fd0["kind"] == "external" and "pipe" in fd0["what"]
    wait_blocked_in(t.pid, "read")  # back in it: had it returned, WOKE would be logged by now
    assert _woke(t) == []
    os.write(w, b"x")
    t.wait_for(r"WOKE read ret=1 errno=0")
    os.close(w)


def test_pause_is_reentered_after_restore(spawn, sleeper, tmp_path):
    t = spawn([sleeper, "pause"])
    t.wait_for("READY")
    wait_blocked_in(t.pid, "pause")
    pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    t.reap()
    restored = pyckpt.restore(tmp_path / "img")
    spawn.track(restored.pid)
    assert restored.pid == t.pid
    wait_blocked_in(t.pid, "pause")  # re-entered: had it returned, WOKE would be logged by now
    assert _woke(t) == []
    os.kill(t.pid, signal.SIGUSR1)
    m = t.wait_for(r"WOKE pause ret=(-?\d+) errno=(\d+)")
    assert (m.group(1), m.group(2)) == ("-1", "4")


def test_nanosleep_after_restore_returns_eintr(spawn, sleeper, tmp_path):
    """Documented limit: the kernel's restart block cannot be carried over."""
    t = spawn([sleeper, "nanosleep"])
    t.wait_for("READY")
    wait_blocked_in(t.pid, "clock_nanosleep")
    pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    t.reap()
    restored = pyckpt.restore(tmp_path / "img")
    spawn.track(restored.pid)
    m = t.wait_for(r"WOKE nanosleep ret=(-?\d+) errno=(\d+)", timeout=5)
    assert (m.group(1), m.group(2)) == ("-1", "4")
