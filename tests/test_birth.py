"""How a restore makes its task (restorer._clone_small): born of pyckpt's stub — a
clone3(CLONE_VM) that execs a one-page program from a memfd and stops before
running it — or, where the stub cannot be used, a copy of pyckpt (the older
way).  Either way the restored process must be the dumped one: it checks its own
state, and its exe link, name, fds and memory map are compared with the
original's from outside (a task born of the stub starts with the memfd as its
exe, a name of its own and pyckpt's fds).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyckpt
from pyckpt import restorer
from conftest import assert_running, check, reap_dumped

PYTARGET = Path(__file__).parent / "targets" / "pytarget.py"
SRC = Path(__file__).resolve().parent.parent / "src"


class Spy:
    """restorer.lib, recording what ck_clone_exec and ck_clone_stopped returned."""

    def __init__(self, lib):
        self._lib = lib
        self.exec_results: list[int] = []
        self.stopped_results: list[int] = []

    def ck_clone_exec(self, *a):
        r = self._lib.ck_clone_exec(*a)
        self.exec_results.append(r)
        return r

    def ck_clone_stopped(self, *a):
        r = self._lib.ck_clone_stopped(*a)
        self.stopped_results.append(r)
        return r

    def __getattr__(self, name):
        return getattr(self._lib, name)


def _outside_view(pid: int) -> dict:
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            pass
    with open(f"/proc/{pid}/maps") as f:
        paths = sorted({line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6})
    with open(f"/proc/{pid}/comm") as f:
        comm = f.read()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
    return {"exe": os.readlink(f"/proc/{pid}/exe"), "comm": comm, "cmdline": cmdline, "fds": fds,
            "mapped files": paths}


def _dump_kill(spawn, python_exe, tmp_path, env=None):
    more = {"env": dict(os.environ, PYTHONPATH=str(PYTARGET.parent), **env)} if env else {}
    t = spawn([python_exe, str(PYTARGET)], name="pytarget", **more)
    t.wait_for(r"^READY", timeout=30)
    before = check(t)
    view = _outside_view(t.pid)
    pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    reap_dumped(t)
    t.popen = None
    return t, before, view


def _same_process(t, before, view, pid):
    assert pid == t.pid
    got = _outside_view(pid)
    assert not any("pyckpt-stub" in p for p in got["mapped files"]), got["mapped files"]
    assert got == view
    assert check(t) > before


def test_restored_task_is_born_of_the_stub(spawn, python_exe, tmp_path, monkeypatch):
    spy = Spy(restorer.lib)
    monkeypatch.setattr(restorer, "lib", spy)
    monkeypatch.setitem(restorer.STUB, "usable", True)
    t, before, view = _dump_kill(spawn, python_exe, tmp_path)
    proc = pyckpt.restore(tmp_path / "img")
    spawn.track(proc.pid)
    assert spy.exec_results == [t.pid], spy.exec_results  # made by the stub, first time
    assert spy.stopped_results == []
    assert_running(proc.pid)
    _same_process(t, before, view, proc.pid)


def test_restored_task_as_a_copy_of_pyckpt(spawn, python_exe, tmp_path, monkeypatch):
    """The fallback: the stub marked unusable, the task is a copy of pyckpt as before
    (its exe link already the target's python: left alone)."""
    spy = Spy(restorer.lib)
    monkeypatch.setattr(restorer, "lib", spy)
    monkeypatch.setitem(restorer.STUB, "usable", False)
    t, before, view = _dump_kill(spawn, python_exe, tmp_path)
    proc = pyckpt.restore(tmp_path / "img")
    spawn.track(proc.pid)
    assert spy.exec_results == []
    assert spy.stopped_results == [t.pid]
    assert_running(proc.pid)
    _same_process(t, before, view, proc.pid)


RESTORE_WITH_FEWER_CAPS = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; twice (caps 0-31, 32-63)
assert libc.capget(hdr, data) == 0
CAP_SYS_BOOT = 22  # not needed by a restore; kept in the bounding set
data[0] &= ~(1 << CAP_SYS_BOOT)
data[1] &= ~(1 << CAP_SYS_BOOT)
assert libc.capset(hdr, data) == 0, ctypes.get_errno()
import pyckpt
from pyckpt import restorer
p = pyckpt.restore(sys.argv[1])
print(p.pid, restorer.STUB["usable"], flush=True)
"""


def test_stub_not_used_where_an_exec_would_change_capabilities(spawn, python_exe, tmp_path):
    """A pyckpt whose permitted set is smaller than its bounding set: root's exec would
    give the stub more capabilities than pyckpt has (and clear its parent-death signal),
    so ck_clone_exec refuses (ENOTSUP) before making anything and the task is a copy
    of pyckpt.  The restore runs in a process of its own (capabilities cannot come
    back); its restored child is reparented to this test process (a subreaper)."""
    t, before, view = _dump_kill(spawn, python_exe, tmp_path)
    out = subprocess.run([sys.executable, "-c", RESTORE_WITH_FEWER_CAPS, str(tmp_path / "img")],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(SRC)))
    assert out.returncode == 0, out.stderr
    pid, usable = out.stdout.split()
    spawn.track(int(pid))
    assert usable == "False"  # the stub was refused
    _same_process(t, before, view, int(pid))


class UffdSpy:
    """kinds.memory's lib, recording what each copy-in from a mapping of pages.img gave
    (`results`: ck_uffd_fill's return, or that of ck_uffd_register, the first failed
    ck_uffd_copy_runs or ck_uffd_unregister of a copy-in made a part at a time; `parts`:
    how many parts) and what ck_uffd_fill_read (through a buffer) returned (`reads`)."""

    def __init__(self, lib):
        self._lib = lib
        self.results: list[int] = []
        self.reads: list[int] = []
        self.parts = 0
        self._failed = 0

    def ck_uffd_fill(self, *a):
        r = self._lib.ck_uffd_fill(*a)
        self.results.append(r)
        return r

    def ck_uffd_register(self, *a):
        r = self._failed = self._lib.ck_uffd_register(*a)
        if r:
            self.results.append(r)
        return r

    def ck_uffd_copy_runs(self, *a):
        r = self._lib.ck_uffd_copy_runs(*a)
        self.parts += 1
        self._failed = self._failed or r
        return r

    def ck_uffd_unregister(self, *a):
        r = self._lib.ck_uffd_unregister(*a)
        self.results.append(self._failed or r)
        return r

    def ck_uffd_fill_read(self, *a):
        r = self._lib.ck_uffd_fill_read(*a)
        self.reads.append(r)
        return r

    def __getattr__(self, name):
        return getattr(self._lib, name)


def _spied_restore(spawn, python_exe, tmp_path, monkeypatch, spy=None, env=None):
    """The Python target dumped (with kill) and restored with kinds.memory's lib replaced
    by `spy` (a UffdSpy if none is given) and the copy-in on: (spy, the target, its check
    count before, its outside view, the restored process)."""
    from pyckpt.kinds import memory

    spy = spy if spy is not None else UffdSpy(memory.lib)
    monkeypatch.setattr(memory, "lib", spy)
    monkeypatch.setitem(memory._UFFD, "usable", True)
    t, before, view = _dump_kill(spawn, python_exe, tmp_path, env=env)
    proc = pyckpt.restore(tmp_path / "img")
    spawn.track(proc.pid)
    return spy, t, before, view, proc


def _vmflags(pid: int) -> list[str]:
    with open(f"/proc/{pid}/smaps") as f:
        return [line.split(":", 1)[1] for line in f if line.startswith("VmFlags:")]


def test_pages_copied_in_then_the_copy_dumped_again(spawn, python_exe, tmp_path, monkeypatch):
    """A small restore's private anonymous memory is copied in through a userfaultfd
    (UFFDIO_COPY from pages.img) instead of read by the task: the process checks its
    32 MiB and its dict, no VMA is left registered (a dump refuses those: "um"), and
    the copy dumps and restores again."""
    spy, t, before, view, proc = _spied_restore(spawn, python_exe, tmp_path, monkeypatch)
    assert spy.results == [0]
    assert not any(" um" in flags for flags in _vmflags(proc.pid))
    _same_process(t, before, view, proc.pid)
    pyckpt.dump(proc.pid, tmp_path / "again", kill=True)
    reap_dumped(t)
    again = pyckpt.restore(tmp_path / "again")
    spawn.track(again.pid)
    assert spy.results == [0, 0]
    assert check(t) > before


def test_a_big_restore_is_copied_in_too(spawn, python_exe, tmp_path, monkeypatch):
    """More private anonymous memory than the 64 MiB the copy-in once took (160 MiB of
    the target's bytearray) is copied in as well, up to UFFD_MAX (a quarter of the
    machine's memory): the process checks its memory and dict; the page check beside
    read the same mapping of pages.img."""
    from pyckpt.kinds import memory

    assert memory.UFFD_MAX >= 256 << 20
    spy, t, before, view, proc = _spied_restore(spawn, python_exe, tmp_path, monkeypatch,
                                                env={"PYTARGET_BUF_MIB": "160"})
    assert os.path.getsize(tmp_path / "img" / "pages.img") > 160 << 20
    assert spy.results == [0] and spy.reads == [] and spy.parts >= 5  # (32 MiB at most a part)
    assert not any(" um" in flags for flags in _vmflags(proc.pid))
    _same_process(t, before, view, proc.pid)

def test_pages_read_when_the_task_cannot_make_a_userfaultfd(spawn, python_exe, tmp_path, monkeypatch):
    """The task's userfaultfd() fails (here: an unknown syscall number, ENOSYS): the
    task reads all its pages itself, and no later restore of this pyckpt asks again."""
    from pyckpt.inject import nr
    from pyckpt.kinds import memory

    monkeypatch.setattr(nr, "userfaultfd", 1023)  # no such syscall
    spy, t, before, view, proc = _spied_restore(spawn, python_exe, tmp_path, monkeypatch)
    assert spy.results == []
    assert memory._UFFD["usable"] is False
    _same_process(t, before, view, proc.pid)


def test_the_stub_cannot_run_on_its_own():
    """A task born of the stub and let go before it was filled (as a pyckpt that died
    right after the exec, before PTRACE_O_EXITKILL, would leave it) runs the stub's
    `syscall; int3` and dies of SIGTRAP: nothing of it runs on."""
    import signal

    from pyckpt import ptrace_ops as pt

    with open("/proc/sys/kernel/pid_max") as f:
        top = int(f.read())
    free = next(p for p in range(top - 1, top - 2000, -1) if not os.path.exists(f"/proc/{p}"))
    child = restorer.lib.ck_clone_exec(free, restorer.ffi.NULL, 0)
    assert child == free, child
    try:
        status = pt.wait(child)
        assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP
        with open(f"/proc/{child}/maps") as f:
            assert "pyckpt-stub" in f.read()  # born of the stub, not a copy of pyckpt
        import resource

        resource.prlimit(child, resource.RLIMIT_CORE, (0, 0))  # SIGTRAP dumps core: not here
        pt.request(pt.PTRACE_DETACH, child, 0, 0, "PTRACE_DETACH")
        _, status = os.waitpid(child, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTRAP, status
    except BaseException:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        raise
