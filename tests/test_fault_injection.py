"""A fault at every stage: a dump that fails at the end of any kind leaves the
tree running as before; a restore that fails at the end of any stage leaves no
process behind, no fd open in pyckpt, and the image restorable."""

from __future__ import annotations

import collections
import gc
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import pyckpt
from pyckpt import dumper, restorer
from pyckpt.kinds import load_all
from pyckpt.kinds.context import dump_hooks
from pyckpt.restorer import Stage
from conftest import TARGETS, Target, check, kill_own
from test_trees import _wait_gone

TARGET = r"""
import os, socket, threading, time, selfcheck
r, w = os.pipe()
a, b = socket.socketpair()
server = socket.create_server(("127.0.0.1", 0))
parent = os.getpid()
child = os.fork()
if child == 0:
    b.close()
    while True:   # echo what comes through the socketpair; end with the parent
        got = a.recv(8)
        if not got:
            os._exit(0)
        a.send(got)
a.close()
os.write(w, b"unread")
ticks = [0]
def tick():
    while True:
        ticks[0] += 1
        time.sleep(0.01)
threading.Thread(target=tick, daemon=True).start()
def check():
    b.send(b"ping")
    b.settimeout(5)
    return [] if b.recv(8) == b"ping" and ticks[0] else ["the child does not answer"]
selfcheck.listen()
print("READY", child, flush=True)
selfcheck.serve(check)
"""

# the stages restorer runs under _timed (the others are timed apart or are one call)
RESTORE_STAGES = [s for s in Stage if s not in (Stage.VALIDATE, Stage.PREPARE, Stage.CREATE,
                                                Stage.CLOSE_PASSED, Stage.LEAVE_SCRATCH, Stage.RELEASE)]


def _start(spawn, python_exe):
    t = spawn([python_exe, "-c", TARGET], name="faulty")
    child = int(t.wait_for(r"^READY (\d+)$").group(1))
    return t, child


def _failing_at_end(real, stage: Stage, nth: int, exc):
    """A stand-in for restorer._timed that lets the `nth` run of `stage` finish, then fails."""
    seen = collections.Counter()

    def timed(stats, s):
        inner = real(stats, s)
        seen[s] += 1
        fail = s is stage and seen[s] == nth

        class _Stage:
            def __enter__(self):
                return inner.__enter__()

            def __exit__(self, *exc_info):
                inner.__exit__(*exc_info)
                if fail and exc_info[0] is None:
                    raise exc(f"injected fault at the end of {s.name}")

        return _Stage()

    return timed


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """One image of the tree (root and child), dumped with kill; and how often each
    restore stage runs for it (counted in a first, successful restore)."""
    d = tmp_path_factory.mktemp("faulty")
    p = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         env=dict(os.environ, PYTHONPATH=str(TARGETS)), start_new_session=True)
    try:
        child = int(p.stdout.readline().split()[1])
        img = pyckpt.dump(p.pid, d / "img", kill=True)
    finally:
        p.kill()
        p.wait()
    _wait_gone(child)
    counts = collections.Counter()
    real = restorer._timed

    def counting(stats, s):
        counts[s] += 1
        return real(stats, s)

    restorer._timed = counting
    try:
        q = pyckpt.restore(d / "img", fds={1: os.open(os.devnull, os.O_WRONLY)})
    finally:
        restorer._timed = real
    kill_own(q.pid)
    _reap_when_gone(child)  # it ends when its parent's end of the socketpair closes
    return d / "img", img.pid, child, counts


def _reap_when_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait for a member to exit; reap it when it ends up our child (we are a subreaper)."""
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid):
        try:
            p = psutil.Process(pid)
            if p.status() == psutil.STATUS_ZOMBIE and p.ppid() == os.getpid():
                os.waitpid(pid, 0)
                continue
        except (psutil.NoSuchProcess, ChildProcessError):
            continue
        assert time.monotonic() < deadline, f"process {pid} still there"
        time.sleep(0.01)


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _settled_fds() -> set[str]:
    """The fds before a restore, once the garbage of earlier tests is collected: an
    unreachable object holding an fd (a template of test_fast_copies, say) would
    otherwise close it whenever the cyclic GC next runs, during the restore (seen once:
    two fds 'closed' by a failed restore in a full run, not in the file alone)."""
    gc.collect()
    return _fds()


def _links(fds) -> dict[str, str]:
    out = {}
    for fd in sorted(fds, key=int):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            out[fd] = "?"
    return out


@pytest.mark.parametrize("new_pidns", [False, True], ids=["same-pids", "new-pidns"])
@pytest.mark.parametrize("stage", RESTORE_STAGES, ids=[s.name for s in RESTORE_STAGES])
def test_restore_failing_at_the_end_of_a_stage_leaves_nothing(image, stage, new_pidns, monkeypatch):
    path, root, child, counts = image
    assert counts[stage], f"stage {stage.name} never ran"
    fds_before, children_before = _settled_fds(), {c.pid for c in psutil.Process().children()}
    links_before = _links(fds_before)
    out = os.open(os.devnull, os.O_WRONLY)
    # fail in the last process the stage runs for: the others are complete by then
    monkeypatch.setattr(restorer, "_timed", _failing_at_end(restorer._timed, stage, counts[stage],
                                                            pyckpt.RestoreError))
    with pytest.raises(pyckpt.RestoreError, match=f"injected fault at the end of {stage.name}"):
        pyckpt.restore(path, fds={1: out}, new_pidns=new_pidns)
    os.close(out)
    if not new_pidns:
        for pid in (root, child):
            assert not psutil.pid_exists(pid), f"process {pid} left behind after a fault in {stage.name}"
    # (with new_pidns: the namespace's init, our child, is gone, and with it the namespace)
    assert {c.pid for c in psutil.Process().children()} == children_before
    after = _fds()
    assert after == fds_before, ("pyckpt left fds open" if after - fds_before else "fds closed meanwhile",
                                 {"new": _links(after - fds_before),
                                  "gone": {fd: links_before[fd] for fd in fds_before - after}})


def test_the_image_restores_after_all_those_faults(image, spawn):
    path, root, child, _ = image
    out = os.open(os.devnull, os.O_WRONLY)
    p = pyckpt.restore(path, fds={1: out})
    os.close(out)
    spawn.track(p.pid)
    spawn.track(child)
    assert p.pid == root and psutil.Process(child).ppid() == root


@pytest.mark.parametrize("kind", range(len(dumper.DUMP_KINDS)),
                         ids=[k.__module__.rsplit(".", 1)[-1] for k in dumper.DUMP_KINDS])
def test_dump_failing_after_a_kind_leaves_the_tree_running(spawn, python_exe, tmp_path, kind, monkeypatch):
    t, child = _start(spawn, python_exe)
    check(t)
    real = dumper.DUMP_KINDS[kind]

    def failing(ctx):
        real(ctx)
        raise pyckpt.DumpError(f"injected fault after {real.__module__}")

    kinds = list(dumper.DUMP_KINDS)
    kinds[kind] = failing
    monkeypatch.setattr(dumper, "DUMP_KINDS", tuple(kinds))
    _fault_leaves_the_tree_running(t, child, spawn, tmp_path)


load_all()  # the kinds' dump hooks, to parametrize over


@pytest.mark.parametrize("hook", [h.name for h in dump_hooks()])
def test_dump_failing_after_a_dump_hook_leaves_the_tree_running(spawn, python_exe, tmp_path, hook, monkeypatch):
    t, child = _start(spawn, python_exe)
    check(t)
    h = next(h for h in dump_hooks() if h.name == hook)
    real = h.run

    def failing(ctx):
        real(ctx)
        raise pyckpt.DumpError(f"injected fault after {hook}")

    monkeypatch.setattr(h, "run", failing)
    _fault_leaves_the_tree_running(t, child, spawn, tmp_path)


def _fault_leaves_the_tree_running(t, child, spawn, tmp_path) -> None:
    with pytest.raises(pyckpt.DumpError, match="injected fault"):
        pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    assert (tmp_path / "img" / "INCOMPLETE").exists()
    for pid in (t.pid, child):
        status = psutil.Process(pid).status()
        assert status in (psutil.STATUS_RUNNING, psutil.STATUS_SLEEPING), (pid, status)
        with open(f"/proc/{pid}/status") as f:
            assert "TracerPid:\t0\n" in f.read()
    check(t)  # the tree carries on: threads, child, socketpair
    spawn.track(child)


# --- a fault after the image was committed: the image stands ------------------------------------

def _failing_after_kill(monkeypatch, victim: int) -> None:
    """seize.kill_and_reap_traced kills and reaps as ever, then fails for process `victim`."""
    from pyckpt import seize

    real = seize.kill_and_reap_traced

    def kill_then_fail(pid, tids):
        real(pid, tids)
        if pid == victim:
            raise OSError(5, f"injected fault after the kill of {pid}")

    monkeypatch.setattr(seize, "kill_and_reap_traced", kill_then_fail)


def _complete(img) -> None:
    assert (img / "COMPLETE").exists() and not (img / "INCOMPLETE").exists(), sorted(os.listdir(img))
    pyckpt.open_image(img).verify()


def test_a_fault_after_the_kill_keeps_the_only_copy(spawn, python_exe, tmp_path, monkeypatch):
    """dump(kill=True): an error once the processes are killed must not remove their image
    (it is all that is left of them): dump returns it, the error in dump_stats.late_error."""
    t, child = _start(spawn, python_exe)
    check(t)
    _failing_after_kill(monkeypatch, t.pid)  # the root, killed last
    img = tmp_path / "img"
    image = pyckpt.dump(t.pid, img, kill=True)
    late = image.dump_stats.late_error
    assert late.startswith("after the image was complete and its processes killed: "), late
    assert f"injected fault after the kill of {t.pid}" in late, late
    assert t.reap() == -signal.SIGKILL
    _reap_when_gone(child)
    monkeypatch.undo()
    _complete(img)
    log = tmp_path / "copy.log"
    p = pyckpt.restore(img, fds={1: str(log)})
    spawn.track(p.pid)
    spawn.track(child)
    assert p.pid == t.pid and psutil.Process(child).ppid() == t.pid
    check(Target(p.pid, log))


def test_a_fault_between_kills_keeps_the_image_and_names_who_runs_on(spawn, python_exe, tmp_path,
                                                                      monkeypatch):
    """The kill fails after the child's: the root is let go (not killed); the image stands,
    and late_error says the root still runs."""
    t, child = _start(spawn, python_exe)
    check(t)
    _failing_after_kill(monkeypatch, child)  # killed first (the ExitStack unwinds children first)
    img = tmp_path / "img"
    image = pyckpt.dump(t.pid, img, kill=True)
    late = image.dump_stats.late_error
    assert late.startswith("after the image was complete, before every process was killed: "), late
    assert f"injected fault after the kill of {child}" in late and f"process {t.pid} still runs" in late
    assert psutil.Process(t.pid).status() in (psutil.STATUS_RUNNING, psutil.STATUS_SLEEPING)
    with open(f"/proc/{t.pid}/status") as f:
        assert "TracerPid:\t0\n" in f.read()
    assert t.pid not in image.dump_stats.unreaped  # not waited for as if killed
    _complete(img)


def test_a_fault_after_commit_without_kill_keeps_the_image(spawn, tmp_path, monkeypatch):
    """Without kill, what runs after commit() (pre-copy's end) failing leaves the image too."""
    from pyckpt import precopy

    t = spawn(["sleep", "600"], name="sleep")
    real = precopy.PreCopy.finish
    committed = []

    def finish_then_fail(self):
        real(self)
        if (tmp_path / "img" / "COMPLETE").exists():
            committed.append(True)
            raise OSError(5, "injected fault at the end of pre-copy")

    monkeypatch.setattr(precopy.PreCopy, "finish", finish_then_fail)
    image = pyckpt.dump(t.pid, tmp_path / "img", precopy=True)
    assert committed
    assert image.dump_stats.late_error == ("after the image was complete: "
                                           "OSError: [Errno 5] injected fault at the end of pre-copy")
    _complete(tmp_path / "img")
    assert psutil.Process(t.pid).status() in (psutil.STATUS_RUNNING, psutil.STATUS_SLEEPING)


THREADED = """
import threading, time
for _ in range(2):
    threading.Thread(target=lambda: time.sleep(3600), daemon=True).start()
print("READY", flush=True)
while True:
    time.sleep(1)
"""


@pytest.mark.parametrize("stage", [Stage.DEFERRED, Stage.REGISTERS], ids=lambda s: s.name)
def test_threaded_restore_failing_leaves_no_fd(spawn, python_exe, tmp_path, stage, monkeypatch):
    """A process with threads whose restore fails once its threads exist: they are killed,
    and pyckpt keeps none of their /proc/TID/mem fds (two leaked per such failure before)."""
    t = spawn([python_exe, "-c", THREADED], name="threaded")
    t.wait_for("^READY")
    assert len(os.listdir(f"/proc/{t.pid}/task")) == 3
    pyckpt.dump(t.pid, tmp_path / "img", kill=True, progress=False)
    t.reap()
    fds_before = _settled_fds()
    out = os.open(os.devnull, os.O_WRONLY)
    monkeypatch.setattr(restorer, "_timed", _failing_at_end(restorer._timed, stage, 1, pyckpt.RestoreError))
    with pytest.raises(pyckpt.RestoreError, match=f"injected fault at the end of {stage.name}"):
        pyckpt.restore(tmp_path / "img", fds={1: out}, progress=False)
    os.close(out)
    assert not psutil.pid_exists(t.pid) or psutil.Process(t.pid).status() == psutil.STATUS_ZOMBIE
    left = [os.readlink(f"/proc/self/fd/{fd}") for fd in _fds() - fds_before]
    assert not left, f"pyckpt left fds open: {left}"
