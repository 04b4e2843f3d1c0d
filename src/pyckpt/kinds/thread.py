"""Threads: each one's kernel pointers, name, blocked mask, sigaltstack and scheduling.

Per thread: clear_child_tid (set_tid_address), the robust futex list, the
rseq registration, comm, the blocked signal mask, sigaltstack, scheduling
policy/priority and nice.  Registers are kinds/cpu.py's.

rseq matters twice at restore: the first task inherits pyckpt's
registration (glibc registers rseq on every thread) and must drop it before
its memory goes away, and every thread must register the target's area once
memory is back — otherwise sched_getcpu() silently returns a stale CPU.

Threads other than the leader are made by an injected clone3 (CLONE_THREAD,
set_tid = the dumped TID) from the leader; pyckpt traces them from birth
(PTRACE_O_TRACECLONE), so they run no instruction before their registers
are in place and every thread of the process is released together.
"""

from __future__ import annotations

import ctypes
import os
import struct
from .._dataclass import dataclass

from .. import ptrace_ops as pt
from ..arch import PAGE
from ..arch import libc as _libc
from ..image import record
from ..inject import WANT_ANY, Injector, check_each, nr
from ..proc import read_comm
from .context import DumpContext, RestoreContext

PR_SET_NAME, PR_GET_TID_ADDRESS = 15, 40
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2
RSEQ_FLAG_UNREGISTER = 1
STACK_T = struct.Struct("<QiiQ")  # ss_sp, ss_flags, pad, ss_size
SS_ONSTACK = 1
# clone3 for a thread of the restored process
CLONE_THREAD_FLAGS = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000  # VM FS FILES SIGHAND THREAD SYSVSEM
CLONE_ARGS = struct.Struct("<10Q")  # struct clone_args up to set_tid_size (CLONE_ARGS_SIZE_VER1)


@dataclass
class AltStack:
    sp: int
    flags: int
    size: int


@record(40, scope="process")
@dataclass
class ThreadRecord:
    tid: int
    comm: str
    clear_child_tid: int
    robust_head: int
    robust_len: int
    rseq_pointer: int
    rseq_size: int
    rseq_signature: int
    blocked: int
    altstack: AltStack
    policy: int  # sched_getscheduler
    priority: int  # sched_param.sched_priority
    nice: int
    affinity: list[int]
    # prctl(PR_GET_PDEATHSIG): the signal it gets when its parent thread dies;
    # re-armed only below the image's root (the root's parent is not restored)
    pdeathsig: int


def get_robust_list(tid: int) -> tuple[int, int]:
    head = ctypes.c_void_p()
    length = ctypes.c_size_t()
    if _libc.syscall(nr.get_robust_list, tid, ctypes.byref(head), ctypes.byref(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"get_robust_list({tid}): {os.strerror(err)}")
    return head.value or 0, length.value


# Where each thread's calls leave their results in the scratch page: a slot of
# SLOT bytes a thread (clear_child_tid at 0, stack_t at 8, pdeathsig at 32), so
# that all the threads of a group make each call at once (inject.check_each).
SLOT = 64


def dump(ctx: DumpContext) -> list:
    tids = list(ctx.threads)
    found: dict[int, tuple[int, tuple, int]] = {}
    per_page = PAGE // SLOT
    for first in range(0, len(tids), per_page):
        group = tids[first:first + per_page]
        at = {tid: ctx.scratch + i * SLOT for i, tid in enumerate(group)}
        for number, arg, what in (
                (nr.prctl, lambda a: (PR_GET_TID_ADDRESS, a), "prctl(PR_GET_TID_ADDRESS) in thread {}"),
                (nr.sigaltstack, lambda a: (0, a + 8), "reading the sigaltstack of thread {}"),
                (nr.prctl, lambda a: (PR_GET_PDEATHSIG, a + 32), "prctl(PR_GET_PDEATHSIG) in thread {}")):
            check_each([(ctx.threads[tid], what.format(tid), number, arg(at[tid])) for tid in group])
        raw = ctx.inj.read(ctx.scratch, len(group) * SLOT)
        for i, tid in enumerate(group):
            (tid_addr,) = struct.unpack_from("<Q", raw, i * SLOT)
            (pdeathsig,) = struct.unpack_from("<i", raw, i * SLOT + 32)
            found[tid] = tid_addr, STACK_T.unpack_from(raw, i * SLOT + 8), pdeathsig
    records = []
    for tid, inj in ctx.threads.items():
        tid_addr, (sp, flags, _, size), pdeathsig = found[tid]
        head, length = get_robust_list(tid)
        rseq = pt.get_rseq(tid)
        comm = read_comm(ctx.pid, tid).decode("utf-8", "surrogateescape")
        records.append(ThreadRecord(
            tid, comm, tid_addr, head, length, rseq.pointer, rseq.size, rseq.signature,
            inj.saved_sigmask, AltStack(sp, flags, size),
            os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority,
            os.getpriority(os.PRIO_PROCESS, tid), sorted(os.sched_getaffinity(tid)), pdeathsig,
        ))
    return records


def thread_records(image) -> list[ThreadRecord]:
    """The image's threads, the leader (TID == PID) first."""
    from .task import TaskRecord

    pid = image.one(TaskRecord).pid  # the leader's TID is the PID
    return sorted(image.of_type(ThreadRecord), key=lambda r: r.tid != pid)


def drop_inherited_rseq(rctx: RestoreContext) -> None:
    """Unregister the rseq area the new task inherited from pyckpt."""
    cfg = pt.get_rseq(rctx.pid)
    if cfg.pointer:
        rctx.inj.check(nr.rseq, cfg.pointer, cfg.size, RSEQ_FLAG_UNREGISTER, cfg.signature,
                       what="unregistering pyckpt's inherited rseq")


def create_threads(rctx: RestoreContext) -> None:
    """Make every thread but the leader, stopped and traced, with its dumped TID."""
    leader = rctx.inj
    others = thread_records(rctx.image)[1:]
    if not others:
        return
    pt.request(pt.PTRACE_SETOPTIONS, rctx.pid, 0, pt.PTRACE_O_TRACECLONE | pt.PTRACE_O_EXITKILL,
               "PTRACE_SETOPTIONS")
    for rec in others:
        set_tid = rctx.scratch + 128
        leader.write(set_tid, struct.pack("<Q", rec.tid))
        leader.write(rctx.scratch, CLONE_ARGS.pack(CLONE_THREAD_FLAGS, 0, 0, 0, 0, 0, 0, 0, set_tid, 1))
        tid = leader.call_clone(nr.clone3, rctx.scratch, CLONE_ARGS.size)
        rctx.tid_map[rec.tid] = tid
        rctx.threads[tid] = Injector(tid, leader.site, pt.get_regs(tid), cure_regs=False)
        rctx.threads[tid].__enter__()


def restore(rctx: RestoreContext) -> None:
    """After memory is back: each thread's name, robust list, clear_child_tid, rseq, altstack."""
    for rec in thread_records(rctx.image):
        inj = rctx.inj if rec.tid == rctx.image_pid else rctx.threads[rctx.tid_map[rec.tid]]
        inj.site = rctx.inj.site
        scratch = rctx.scratch
        name = rec.comm.encode("utf-8", "surrogateescape")[:15] + b"\0"
        st = rec.altstack
        # the name and the stack_t side by side in the scratch page; the calls in one batch
        # (one stop of the thread: the leader's runs at the batch area, others one by one)
        inj.write(scratch, name.ljust(32, b"\0") + STACK_T.pack(st.sp, st.flags & ~SS_ONSTACK, 0, st.size))
        b = inj.batch()
        b.add(nr.prctl, PR_SET_NAME, scratch, what=f"prctl(PR_SET_NAME) in thread {rec.tid}")
        if rec.robust_head:
            b.add(nr.set_robust_list, rec.robust_head, rec.robust_len,
                  what=f"set_robust_list in thread {rec.tid}")
        b.add(nr.set_tid_address, rec.clear_child_tid, want=WANT_ANY)
        if rec.rseq_pointer:
            b.add(nr.rseq, rec.rseq_pointer, rec.rseq_size, 0, rec.rseq_signature,
                  what=f"registering the rseq area of thread {rec.tid}")
        b.add(nr.sigaltstack, scratch + 32, 0, what=f"setting the sigaltstack of thread {rec.tid}")
        b.run()


def restore_pdeathsig(rctx: RestoreContext) -> None:
    """Each thread's parent-death signal, after the ids (changing them clears it).

    Not the image's root's, whose parent now is whoever restored it: the root was
    made asking for SIGKILL when pyckpt dies (ck_clone_stopped), which must not
    outlive the restore; that is cleared.  (Until the release every task is
    traced with PTRACE_O_EXITKILL: pyckpt's death kills it all the same.)"""
    if rctx.image_pid == rctx.image.header.root_pid:
        rctx.inj.check(nr.prctl, PR_SET_PDEATHSIG, 0, what="prctl(PR_SET_PDEATHSIG, 0) in the root")
        return
    for rec in thread_records(rctx.image):
        if rec.pdeathsig:
            inj = rctx.inj if rec.tid == rctx.image_pid else rctx.threads[rctx.tid_map[rec.tid]]
            inj.check(nr.prctl, PR_SET_PDEATHSIG, rec.pdeathsig,
                      what=f"prctl(PR_SET_PDEATHSIG) in thread {rec.tid}")


def restore_from_outside(rctx: RestoreContext) -> None:
    """Scheduling and CPU affinity of each thread, set by pyckpt while they are still root's."""
    for rec in thread_records(rctx.image):
        tid = rctx.tid_map[rec.tid]
        try:
            os.sched_setaffinity(tid, rec.affinity)
        except OSError:
            pass  # CPUs of the dump are not all here: keep pyckpt's
        try:
            os.sched_setscheduler(tid, rec.policy, os.sched_param(rec.priority))
        except OSError:
            pass  # e.g. a real-time policy this machine does not allow: keep the default
        os.setpriority(os.PRIO_PROCESS, tid, rec.nice)


def restore_masks(rctx: RestoreContext) -> None:
    for rec in thread_records(rctx.image):
        pt.set_sigmask(rctx.tid_map[rec.tid], rec.blocked)


def validate(image) -> None:
    """One record per thread, the leader among them, registers for each, no stray tids."""
    from ..errors import ImageError
    from .cpu import CpuRecord
    from .signals import PendingSignalsRecord
    from .task import TaskRecord

    pid = image.one(TaskRecord).pid
    tids = [r.tid for r in image.of_type(ThreadRecord)]
    cpu = [r.tid for r in image.of_type(CpuRecord)]
    if pid not in tids or len(tids) != len(set(tids)) or sorted(tids) != sorted(cpu) or min(tids) <= 0:
        raise ImageError(f"image at {image.path}: thread records do not match (threads {sorted(tids)}, "
                         f"registers {sorted(cpu)}, process {pid})")
    for r in image.of_type(PendingSignalsRecord):
        if r.tid != 0 and r.tid not in tids:
            raise ImageError(f"image at {image.path}: pending signals of unknown thread {r.tid}")
