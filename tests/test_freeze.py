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


def test_pause_survives_dump_and_wakes_on_signal(spawn, sleeper, tmp_path):
    t = spawn([sleeper, "pause"])
    t.wait_for("READY")
    time.sleep(0.1)
    pyckpt.dump(t.pid, tmp_path / "img")
    time.sleep(0.3)
    assert _woke(t) == [], "pause() returned although nothing woke it"
    assert t.state() == "S"
    os.kill(t.pid, signal.SIGUSR1)
    m = t.wait_for(r"WOKE pause ret=(-?\d+) errno=(\d+)")
    assert m.group(1) == "-1" and int(m.group(2)) == 4  # EINTR, after the handler ran
    assert "SIG" in t.lines()


def test_nanosleep_keeps_its_deadline_across_dump(spawn, sleeper, tmp_path):
    t = spawn([sleeper, "nanosleep"])
    t.wait_for("READY")
    time.sleep(0.3)
    pyckpt.dump(t.pid, tmp_path / "img")
    m = t.wait_for(r"WOKE nanosleep ret=(-?\d+) errno=\d+ took=([\d.]+)", timeout=5)
    assert m.group(1) == "0", "nanosleep was cut short by the dump"
    assert 1.9 < float(m.group(2)) < 3.0


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
    time.sleep(0.1)
    image = pyckpt.dump(t.pid, tmp_path / "img")
    fd0 = [f for f in image.summary()["fds"] if f["fd"] == 0][0]
    assert fd0["kind"] == "external" and "pipe" in fd0["what"]
    time.sleep(0.2)
    assert _woke(t) == [] and t.state() == "S"
    os.write(w, b"x")
    t.wait_for(r"WOKE read ret=1 errno=0")
    os.close(w)


def test_pause_is_reentered_after_restore(spawn, sleeper, tmp_path):
    t = spawn([sleeper, "pause"])
    t.wait_for("READY")
    time.sleep(0.1)
    pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    t.reap()
    restored = pyckpt.restore(tmp_path / "img")
    spawn.track(restored.pid)
    assert restored.pid == t.pid
    time.sleep(0.3)
    assert _woke(t) == [] and t.state() == "S"
    os.kill(t.pid, signal.SIGUSR1)
    m = t.wait_for(r"WOKE pause ret=(-?\d+) errno=(\d+)")
    assert (m.group(1), m.group(2)) == ("-1", "4")


def test_nanosleep_after_restore_returns_eintr(spawn, sleeper, tmp_path):
    """Documented limit: the kernel's restart block cannot be carried over."""
    t = spawn([sleeper, "nanosleep"])
    t.wait_for("READY")
    time.sleep(0.3)
    pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    t.reap()
    restored = pyckpt.restore(tmp_path / "img")
    spawn.track(restored.pid)
    m = t.wait_for(r"WOKE nanosleep ret=(-?\d+) errno=(\d+)", timeout=5)
    assert (m.group(1), m.group(2)) == ("-1", "4")
