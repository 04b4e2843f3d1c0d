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
import signal

from . import proc
from .signals import blocked
from . import ptrace_ops as pt
from .errors import (
    AlreadyTracedError,
    DumpError,
    MultiThreadedError,
    NoSuchProcessError,
    PtraceError,
    PyckptError,
    UnsuitableProcessError,
)


def check_dumpable(pid: int) -> proc.ProcStat:
    """Refuse from /proc alone a PID pyckpt must not or cannot seize."""
    if pid <= 0:
        raise NoSuchProcessError(f"no process with PID {pid}")
    try:
        stat = proc.read_stat(pid)
        status = proc.read_status(pid)
    except (FileNotFoundError, ProcessLookupError):
        raise NoSuchProcessError(f"no process with PID {pid}") from None
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
        return UnsuitableProcessError(f"process {pid} is pyckpt itself; it cannot dump itself")
    if stat.is_kernel_thread:
        return UnsuitableProcessError(
            f"process {pid} ({stat.comm}) is a kernel thread; only user processes can be dumped"
        )
    if stat.state in ("Z", "X"):
        return UnsuitableProcessError(
            f"process {pid} ({stat.comm}) is a zombie: it has exited and only waits to be reaped"
        )
    if stat.state == "T":
        return UnsuitableProcessError(
            f"process {pid} ({stat.comm}) is stopped by a signal; continue it (SIGCONT) first"
        )
    tracer = int(status.get("TracerPid", "0"))
    if tracer:
        return AlreadyTracedError(pid, tracer)
    threads = int(status.get("Threads", "1"))
    if threads != 1:
        return MultiThreadedError(pid, threads)
    return None


@contextlib.contextmanager
def pinned_to_cpu(cpu: int):
    """Run pyckpt on one CPU for a while.

    In this VM a ptrace stop/resume round trip costs ~10 us when tracer and
    tracee share a CPU and ~700 us when they do not.
    """
    old = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        yield
        return
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


class Seized:
    """A task stopped by PTRACE_SEIZE + PTRACE_INTERRUPT.

    Leaving the `with` block detaches (the task resumes as it was), or kills
    the task if `kill_on_exit` was set by the caller once its image is safe.
    """

    def __init__(self, pid: int):
        self.pid = pid
        self.kill_on_exit = False
        self._attached = False

    def __enter__(self) -> "Seized":
        try:
            pt.request(pt.PTRACE_SEIZE, self.pid, 0, 0, "PTRACE_SEIZE")
        except PtraceError as e:
            if e.errno == errno.ESRCH:
                raise NoSuchProcessError(f"process {self.pid} vanished before it was seized") from None
            if e.errno == errno.EPERM:
                status = proc.read_status(self.pid)
                raise AlreadyTracedError(self.pid, int(status.get("TracerPid", "0"))) from None
            raise
        self._attached = True
        try:
            self._interrupt()
        except BaseException:
            self._detach_quietly()
            raise
        return self

    def _interrupt(self) -> None:
        """Bring the task to a ptrace interrupt stop.

        A signal may arrive first: it shows as a signal-delivery stop; it is
        delivered (as it would have been without us) and the stop re-requested.
        """
        for _ in range(64):
            pt.request(pt.PTRACE_INTERRUPT, self.pid, 0, 0, "PTRACE_INTERRUPT")
            status = pt.wait(self.pid)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self._attached = False
                raise DumpError(f"process {self.pid} exited while being frozen")
            event = status >> 16
            sig = os.WSTOPSIG(status)
            if event == pt.PTRACE_EVENT_STOP:
                return
            # Signal-delivery stop: let the signal go through, then stop again.
            pt.request(pt.PTRACE_CONT, self.pid, 0, sig, "PTRACE_CONT")
        raise DumpError(f"process {self.pid} kept receiving signals; could not freeze it")

    def _detach_quietly(self) -> None:
        if self._attached:
            self._attached = False
            try:
                pt.request(pt.PTRACE_DETACH, self.pid, 0, 0, "PTRACE_DETACH")
            except PtraceError:
                pass

    def __exit__(self, exc_type, exc, tb) -> None:
        with blocked():
            if self.kill_on_exit and exc_type is None:
                kill_and_reap_traced(self.pid)
                self._attached = False
            else:
                self._detach_quietly()


def kill_and_reap_traced(pid: int) -> None:
    """SIGKILL a task we trace and take the tracer's exit notification.

    The process's real parent still gets the exit status and must reap it —
    also when that parent is the caller of pyckpt itself: then the status is
    only peeked at (WNOWAIT), not consumed.
    """
    try:
        ours = proc.read_stat(pid).ppid == os.getpid()
    except OSError:
        ours = False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        if ours:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | 0x40000000)  # __WALL
        else:
            pt.wait(pid)
    except (PtraceError, ChildProcessError):
        pass


def release(pid: int) -> None:
    """Let a restored task (traced by us, registers in place) run on its own."""
    pt.request(pt.PTRACE_DETACH, pid, 0, 0, "PTRACE_DETACH")


def kill_and_reap(pid: int) -> None:
    """Remove a half-restored child of ours completely."""
    with blocked():
        _kill_and_reap(pid)


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
