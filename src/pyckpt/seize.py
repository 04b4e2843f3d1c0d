"""Freeze and thaw tasks: the only module that stops or resumes a process.

`check_dumpable()` refuses unsuitable targets from /proc alone, before any
ptrace call.  `Seized` stops a task with PTRACE_SEIZE + PTRACE_INTERRUPT (no
signal is sent, so the target cannot tell) and, on leaving its `with` block,
detaches so the task carries on exactly as it was — including going back
into a sleep or read it was stopped in — or kills it when asked.
`release()` and `kill_and_reap()` do the same for a task made by restore.
"""

from __future__ import annotations

import contextlib
import errno
import os
import _signal as signal  # (signal's constants without its enums' import)

from . import proc
from .signals import blocked
from . import ptrace_ops as pt
from .errors import (
    AlreadyTracedError,
    DumpError,
    NoSuchProcessError,
    PtraceError,
    PyckptError,
    UnsuitableProcessError,
    UnsupportedError,
)


__WALL = 0x40000000


def check_dumpable(pid: int) -> proc.ProcStat:
    """Refuse from /proc alone a PID pyckpt must not or cannot seize."""
    if pid <= 0:
        raise NoSuchProcessError(f"no process with PID {pid}", pid=pid)
    try:
        stat = proc.read_stat(pid)
        status = proc.read_status(pid)
    except (FileNotFoundError, ProcessLookupError):
        raise NoSuchProcessError(f"no process with PID {pid}", pid=pid) from None
    error = refusal(stat, status, os.getpid())
    if error is not None:
        raise error
    return stat


def refusal(stat: proc.ProcStat, status: dict[str, str], own_pid: int) -> PyckptError | None:
    """Why a process (as /proc describes it) cannot be dumped, or None.

    A pure function of parsed /proc text, so it is tested on captured text
    (e.g. of a kernel thread) without touching any process of the machine.
    """
    pid = stat.pid
    if pid == own_pid:
        return UnsuitableProcessError(f"process {pid} is pyckpt itself; it cannot dump itself", pid=pid)
    if stat.is_kernel_thread:
        return UnsuitableProcessError(
            f"process {pid} ({stat.comm}) is a kernel thread; only user processes can be dumped", pid=pid
        )
    if stat.state in ("Z", "X"):
        return UnsuitableProcessError(
            f"process {pid} ({stat.comm}) is a zombie: it has exited and only waits to be reaped", pid=pid
        )
    if stat.state == "D":
        return UnsuitableProcessError(
            f"process {pid} ({stat.comm}) is in an uninterruptible wait (disk I/O, or a vfork "
            "parent waiting for its child); it cannot be frozen now — try again", pid=pid
        )
    if stat.state == "T":
        return UnsuitableProcessError(
            f"process {pid} ({stat.comm}) is stopped by a signal; continue it (SIGCONT) first", pid=pid
        )
    tracer = int(status.get("TracerPid", "0"))
    if tracer:
        return AlreadyTracedError(pid, tracer)
    if status.get("Seccomp", "0") != "0":
        # Refused before any ptrace call: an injected syscall could kill it.
        return UnsupportedError(
            f"process {pid} ({stat.comm}) runs under seccomp, which pyckpt cannot save yet "
            "(restoring it without its filter would widen what it may do)", pid=pid
        )
    return None


@contextlib.contextmanager
def pinned_to_cpu(cpu: int):
    """Run pyckpt on one CPU for a while.

    In this VM a ptrace stop/resume round trip costs ~10 us when tracer and
    tracee share a CPU and ~700 us when they do not.  A thread started
    meanwhile inherits the pin: one that makes no ptrace call (the page
    writer of a dump) takes `unpinned_cpus()` back, so it runs on another CPU.
    """
    old = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        yield
        return
    _UNPINNED.append(old)
    try:
        yield
    finally:
        _UNPINNED.pop()
        os.sched_setaffinity(0, old)


_UNPINNED: list = []  # the CPUs pyckpt had before each pinned_to_cpu now in force


def unpinned_cpus() -> set[int] | None:
    """The CPUs pyckpt may use when not pinned (its affinity before the outermost
    pinned_to_cpu in force), or None when it is not pinned."""
    return set(_UNPINNED[0]) if _UNPINNED else None


PTRACE_O_TRACESYSGOOD = 1


class Seized:
    """Every thread of a process stopped by PTRACE_SEIZE + PTRACE_INTERRUPT.

    The thread list is re-read until it is stable: a thread created while
    the others were being stopped is caught by the next pass, and once all
    are stopped none can be created.  A thread that exits meanwhile is
    dropped.  Leaving the `with` block detaches every thread (the process
    resumes as it was), or kills the process if `kill_on_exit` was set by
    the caller once its image is safe.
    """

    def __init__(self, pid: int):
        self.pid = pid
        self.tids: list[int] = []  # the leader first
        self.kill_on_exit = False

    def __enter__(self) -> "Seized":
        try:
            self._seize_all()
        except BaseException:
            self._detach_all()
            raise
        return self

    def _seize_all(self) -> None:
        for _ in range(100):
            try:
                now = sorted(int(t) for t in os.listdir(f"/proc/{self.pid}/task"))
            except FileNotFoundError:
                raise NoSuchProcessError(f"process {self.pid} vanished while being frozen",
                                         pid=self.pid) from None
            new = [t for t in now if t not in self.tids]
            if not new:
                return
            new.sort(key=lambda t: t != self.pid)  # the leader first
            for tid in new:
                if self._seize(tid):
                    self.tids.append(tid)
        raise DumpError(f"process {self.pid} kept creating threads; could not freeze it")

    def _seize(self, tid: int) -> bool:
        """Stop one thread; False if it exited first."""
        try:
            # TRACESYSGOOD: a syscall stop's code is then SIGTRAP|0x80, which the kernel
            # cannot send as a signal; a tracer killed before it collected the stop
            # would otherwise leave the task a SIGTRAP (see inject/trampoline.py).
            pt.request(pt.PTRACE_SEIZE, tid, 0, PTRACE_O_TRACESYSGOOD, "PTRACE_SEIZE")
        except PtraceError as e:
            if e.errno == errno.ESRCH:
                if tid == self.pid:
                    raise NoSuchProcessError(f"process {self.pid} vanished before it was seized",
                                             pid=self.pid) from None
                return False
            if e.errno == errno.EPERM:
                return self._refused(tid)
            raise
        for attempt in range(64):
            pt.request(pt.PTRACE_INTERRUPT, tid, 0, 0, "PTRACE_INTERRUPT")
            status = pt.wait(tid)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                if tid == self.pid:
                    raise DumpError(f"process {self.pid} exited while being frozen")
                return False
            if status >> 16 == pt.PTRACE_EVENT_STOP:
                return True
            # Signal-delivery stop: let the signal go through, then stop again —
            # or, after too many, let go of the thread from this stop, signal and all.
            if attempt == 63:
                pt.request(pt.PTRACE_DETACH, tid, 0, os.WSTOPSIG(status), "PTRACE_DETACH")
                raise DumpError(
                    f"thread {tid} of process {self.pid} kept receiving signals; could not freeze it")
            pt.request(pt.PTRACE_CONT, tid, 0, os.WSTOPSIG(status), "PTRACE_CONT")
        return False  # not reached

    def _refused(self, tid: int) -> bool:
        """PTRACE_SEIZE said EPERM: another tracer holds the thread, or it is
        already exiting (the kernel refuses to attach to a task whose exit has
        begun). An exiting thread counts as gone; so does an exiting leader,
        which the caller learns as NoSuchProcessError."""
        try:
            status = proc.read_status(tid)
        except OSError:
            status = {"State": "X"}
        tracer = int(status.get("TracerPid", "0"))
        if tracer:
            raise AlreadyTracedError(self.pid, tracer)
        if status.get("State", "")[:1] in ("Z", "X"):
            if tid == self.pid:
                raise NoSuchProcessError(f"process {self.pid} exited before it was seized", pid=self.pid)
            return False
        raise UnsuitableProcessError(
            f"the kernel does not let pyckpt trace thread {tid} of process {self.pid} "
            f"(ptrace EPERM; a Yama ptrace_scope or LSM policy?)", pid=self.pid)

    def _detach_all(self) -> None:
        for tid in self.tids:
            try:
                pt.request(pt.PTRACE_DETACH, tid, 0, 0, "PTRACE_DETACH")
            except PtraceError:
                pass
        self.tids = []

    def __exit__(self, exc_type, exc, tb) -> None:
        with blocked():
            if self.kill_on_exit and exc_type is None:
                kill_and_reap_traced(self.pid, self.tids)
                self.tids = []
            else:
                self._detach_all()


def kill_and_reap_traced(pid: int, tids: list[int]) -> None:
    """SIGKILL a process whose threads we trace and take the tracer's exit notifications.

    The process's real parent still gets the exit status and must reap it —
    also when that parent is the caller of pyckpt itself: then the leader's
    status is only peeked at (WNOWAIT), not consumed.  Other threads are
    reaped first: the leader's exit is reported only after theirs.
    """
    try:
        ours = proc.read_stat(pid).ppid == os.getpid()
    except OSError:
        ours = False
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # (gone; or a kernel before 5.3)
        pidfd = -1
    try:
        os.kill(pid, signal.SIGKILL)
        from ._native._ck import lib

        if pidfd >= 0 and hasattr(lib, "ck_process_mrelease"):  # (not in a helper built before it)
            # Its memory freed here, beside its own exit, which the waits below are
            # for: a killed 1 GiB process reaped after 74 -> 58 ms (medians of 8).
            lib.ck_process_mrelease(pidfd)
    except ProcessLookupError:
        return
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    for tid in [t for t in tids if t != pid] + [pid]:
        try:
            if tid == pid and ours:
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | __WALL)
            else:
                pt.wait(tid)
        except (PtraceError, ChildProcessError):
            pass


def release(pid: int, threads: list[int] = ()) -> None:
    """Let a restored process (every thread traced by us, registers in place) run.

    All threads are complete before the first one is let go.
    """
    for tid in [t for t in threads if t != pid] + [pid]:
        pt.request(pt.PTRACE_DETACH, tid, 0, 0, "PTRACE_DETACH")


def release_all(procs: list[tuple[int, list[int]]]) -> None:
    """Let the restored processes `procs` (pid, threads), complete, run: all of them
    or, should pyckpt die on the way, none.

    One process alone is let go whole or not at all: a thread left traced when
    pyckpt dies is killed (PTRACE_O_EXITKILL), and with it its process.  For a tree,
    a guard (ck_release_guard) that outlives pyckpt holds a pidfd of every process
    while they are let go one after another; if pyckpt dies, or fails, before the
    last one is, the guard SIGKILLs those already running (the others die of
    EXITKILL).  A dying process closes its files before it lets its tracees go, so
    where pyckpt's tracing thread is its last (the command) the guard is woken before
    a process let go can see its parent die; where other threads outlive it by a few
    microseconds (a host process's), the guard comes that much later.
    """
    if len(procs) < 2:
        for pid, threads in procs:
            release(pid, threads)
        return
    from ._native._ck import ffi, lib

    pidfds: list[int] = []
    rd = wr = -1
    guard = 0
    try:
        for pid, _ in procs:
            pidfds.append(os.pidfd_open(pid))  # (traced and stopped: surely ours)
        rd, wr = os.pipe2(os.O_CLOEXEC)
        area = ffi.new("char[]", 16384 + 4 * len(pidfds))  # its arguments and stack
        guard = lib.ck_release_guard(rd, wr, pidfds, len(pidfds), area, len(area))
        if guard < 0:
            raise OSError(-guard, f"the release's guard: {os.strerror(-guard)}")
        for pid, threads in procs:
            release(pid, threads)
        os.write(wr, b"D")  # complete: the guard goes without a kill
    finally:
        for fd in [wr, rd] + pidfds:  # (a write end closed before the byte: the guard kills)
            if fd >= 0:
                os.close(fd)
        if guard > 0:
            os.waitpid(guard, 0)


def kill_and_reap(pids: list[int], tids=()) -> None:
    """Remove what a failed restore made: processes `pids` (outermost first, e.g. a
    PID namespace's init, then the process in it) and every thread in them.

    Threads are found in /proc as well as in `tids` (one may exist that no
    record names yet).  Every traced thread is reaped before its leader, and
    leaders before the init that is their parent — in any other order a wait
    can block forever.
    """
    with blocked():
        threads: list[int] = []
        for pid in pids:
            try:
                threads += [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
            except OSError:
                pass
        threads += [t for t in tids if t not in threads and t not in pids]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for tid in threads + list(reversed(pids)):
            try:
                pt.wait(tid)
            except PtraceError:
                pass
        # A member whose parent died with it is handed to the nearest subreaper: when
        # that is the caller of pyckpt, the zombie is ours to reap (after the tracer's
        # wait above, only its new parent can).
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG | __WALL)
            except ChildProcessError:
                pass
