"""A killed pyckpt (SIGKILL: OOM killer, CI timeout, kill -9) never harms the process
it was dumping: outside one injected call the target holds its own registers and
signal mask, parked in a stop the kernel lets it out of as if nothing had happened.

Each trial starts `pyckpt dump` (plain, --precopy, --kill in turn), waits until it
has seized the target, kills it with SIGKILL after a random part of the time a dump
takes, and asks the target to check itself.  With --kill the target may have been
killed by design — then only when the image was complete, and the image is intact.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TARGETS, check, start_ctarget

TRIALS = 21  # 7 of each mode
MIB = 64


def _tracer(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    return 0


def _dump(pid: int, image: Path, mode: str) -> subprocess.Popen:
    extra = {"plain": [], "precopy": ["--precopy"], "kill": ["--kill"]}[mode]
    return subprocess.Popen([sys.executable, "-m", "pyckpt", "--no-progress", "dump", str(pid),
                             str(image), *extra], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _wait_seized(p: subprocess.Popen, pid: int, timeout: float = 30) -> bool:
    """True once `p` traces `pid`; False if `p` ended first."""
    deadline = time.monotonic() + timeout
    while _tracer(pid) != p.pid:
        if p.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the dump never seized the target"
        time.sleep(0.001)
    return True


def test_sigkill_of_dump_never_harms_the_target(spawn, python_exe, tmp_path):
    def start():
        t = spawn([python_exe, str(TARGETS / "harm_target.py"), str(MIB)], name="harm")
        t.wait_for(r"^READY", timeout=60)
        return t

    t = start()
    # How long a dump holds the target, measured once: the kills fall inside it.
    probe = _dump(t.pid, tmp_path / "probe", "plain")
    assert _wait_seized(probe, t.pid)
    t0 = time.monotonic()
    assert probe.wait(timeout=120) == 0
    held = time.monotonic() - t0
    check(t)

    rng = random.Random(20261206)
    outcomes: dict[str, int] = {}
    for i in range(TRIALS):
        mode = ("plain", "precopy", "kill")[i % 3]
        image = tmp_path / f"img{i}"
        p = _dump(t.pid, image, mode)
        seized = _wait_seized(p, t.pid)
        if seized:
            time.sleep(rng.uniform(0, held * 1.2))  # the moment of the kill, not a wait
        p.send_signal(signal.SIGKILL)  # our own child
        p.wait()
        if mode == "kill" and (image / "COMPLETE").exists():
            # The image was complete, so pyckpt may have sent the target its
            # SIGKILL just before it died itself: let that death finish.
            try:
                t.popen.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass  # it died before it could kill: the target runs on
        if t.popen.poll() is not None:
            # Only --kill may end the target, and only once its image is complete.
            assert mode == "kill" and t.popen.returncode == -signal.SIGKILL, (
                f"trial {i} ({mode}): the target died ({t.popen.returncode})")
            assert (image / "COMPLETE").exists(), f"trial {i}: target killed, image incomplete"
            r = subprocess.run([sys.executable, "-m", "pyckpt", "check", str(image)],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, f"trial {i}: the image of the killed target: {r.stderr}"
            outcomes["completed and killed"] = outcomes.get("completed and killed", 0) + 1
            t = start()
            continue
        with open(f"/proc/{t.pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        assert state not in "tT", f"trial {i} ({mode}): target left stopped ({state})"
        assert _tracer(t.pid) == 0, f"trial {i} ({mode}): target still traced"
        try:
            check(t, timeout=30)
        except AssertionError as e:
            raise AssertionError(f"trial {i} ({mode}), killed after seizing: {seized}: {e}; "
                                 f"target exit: {t.popen.poll()}") from None
        outcomes[mode] = outcomes.get(mode, 0) + 1
    print(f"outcomes: {outcomes}")


@pytest.mark.parametrize("where", ["parked", "in-call", "at-entry", "at-entry-changed", "running"])
@pytest.mark.parametrize("target", ["c", "python"])
def test_target_abandoned_at_the_trampoline_returns_to_its_own_state(where, target, spawn, ctarget,
                                                                     python_exe, tmp_path):
    """The moments the random kills rarely hit, made on purpose: pyckpt dies with
    every thread parked at the trampoline, or with the leader inside an injected
    call.  The C target holds ymm8-15 and r12-15 across a raw nanosleep and checks
    them; the Python one has a second thread, a pipe and a custom signal mask."""
    if target == "c":
        t = start_ctarget(spawn, ctarget, tmp_path)
    else:
        t = spawn([python_exe, str(TARGETS / "harm_target.py"), "8"], name="harm")
        t.wait_for(r"^READY", timeout=60)
    check(t)
    for round_ in range(3):
        r = subprocess.run([python_exe, str(TARGETS / "dying_dumper.py"), str(t.pid), where],
                           capture_output=True, text=True, timeout=60, start_new_session=True)
        assert r.returncode == -signal.SIGKILL and "ARMED" in r.stdout, r.stdout + r.stderr
        assert t.popen.poll() is None, f"round {round_}: the target died ({t.popen.returncode})"
        deadline = time.monotonic() + 10
        while _tracer(t.pid):
            assert time.monotonic() < deadline, "the target is still traced"
            time.sleep(0.01)
        with open(f"/proc/{t.pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        assert state not in "tT", f"round {round_}: target left stopped ({state})"
        check(t, timeout=30)


def test_nothing_is_written_below_a_stack_pointer_off_any_stack(spawn, tmp_path):
    """A thread whose stack pointer is on a small stack inside other data (a coroutine's,
    a Go goroutine's) gets no frame written below it: the bytes under it stay as they
    were, and the dump and a restore still work."""
    exe = tmp_path / "odd_stack"
    subprocess.run(["gcc", "-O1", "-pthread", "-o", str(exe), str(TARGETS / "odd_stack.c")], check=True)
    t = spawn([str(exe)], name="odd")
    t.wait_for(r"^READY")
    check(t)
    image = tmp_path / "img"
    r = subprocess.run([sys.executable, "-m", "pyckpt", "--no-progress", "dump", str(t.pid), str(image)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    check(t)


SELECT_ECHO = """
import select, socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(); print("READY", l.getsockname()[1], flush=True)
c, _ = l.accept()
while True:
    select.select([c], [], [])
    d = c.recv(4096)
    if not d:
        break
    c.sendall(d)
"""


def test_sigkill_while_a_connection_is_in_repair_mode_leaves_it_working(spawn, python_exe, tmp_path):
    """The dump reads an outside TCP connection in repair mode; pyckpt killed right then
    (SIGKILL at the first peek of a queue) must not leave the target's socket in it (its
    reads would fail with EPERM): the repair guard (kinds/tcpconn.py) takes it out."""
    import socket

    t = spawn([python_exe, "-c", SELECT_ECHO], name="echo")
    port = int(t.wait_for(r"^READY (\d+)$").group(1))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"before\n")
        assert c.recv(100) == b"before\n"
        child = os.fork()
        if child == 0:
            try:
                import pyckpt
                from pyckpt.kinds import tcpconn

                def die(sock, size):
                    os.kill(os.getpid(), signal.SIGKILL)

                tcpconn._peek_all = die
                pyckpt.dump(t.pid, tmp_path / "img")
            finally:
                os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL  # it died in repair mode
        time.sleep(0.2)
        with open(f"/proc/{t.pid}/status") as f:
            assert "TracerPid:\t0\n" in f.read()
        c.sendall(b"after\n")
        assert c.recv(100) == b"after\n"


_WARM_THEN_WAIT = """
import sys, time
from pyckpt.image import PageStoreWriter

def warm(self, nbytes, _own=PageStoreWriter.warm):
    _own(self, nbytes)
    print("WARMED", flush=True)
    time.sleep(60)  # killed here

PageStoreWriter.warm = warm
sys.argv[0] = "pyckpt"
from pyckpt.cli import main
sys.exit(main())
"""


def test_sigkill_while_precopy_warms_the_page_file_leaves_the_target_running(spawn, python_exe, tmp_path):
    """pyckpt killed after pre-copy's passes, while it warms pages.img before the freeze
    (PageStoreWriter.warm): the target, tracked by pyckpt's userfaultfd until then, runs on
    and writes its memory as before, and no image is left claiming to be complete."""
    t = spawn([python_exe, str(TARGETS / "harm_target.py"), str(MIB)], name="harm")
    t.wait_for(r"^READY", timeout=60)
    image = tmp_path / "img"
    p = subprocess.Popen([sys.executable, "-c", _WARM_THEN_WAIT, "--no-progress", "dump", str(t.pid),
                          str(image), "--precopy"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "WARMED"
        assert (image / "pages.img").stat().st_size > 0
        p.send_signal(signal.SIGKILL)  # our own child
    finally:
        p.kill()
        p.wait()
    assert not (image / "COMPLETE").exists()
    assert _tracer(t.pid) == 0
    check(t, timeout=30)  # (its memory, registers, mask and pipe as they were; its heap written since)


def test_memory_is_released_early_only_from_a_process_being_killed(spawn, ctarget, tmp_path):
    """A dump with kill frees the killed target's memory beside its exit
    (process_mrelease, seize.kill_and_reap_traced); the kernel refuses that for a
    process that is not dying, which goes on intact."""
    from pyckpt._native._ck import lib

    t = start_ctarget(spawn, ctarget, tmp_path)
    fd = os.pidfd_open(t.pid)
    try:
        assert lib.ck_process_mrelease(fd) in (-22, -38)  # EINVAL: not being killed (ENOSYS before 5.15)
    finally:
        os.close(fd)
    assert lib.ck_process_mrelease(-1) == -9  # EBADF
    check(t)
