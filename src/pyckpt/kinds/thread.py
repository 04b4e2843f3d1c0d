"""Per-thread kernel pointers and name: clear_child_tid, robust futex list, rseq, comm.

rseq matters twice at restore: the new task inherits pyckpt's registration
(glibc registers rseq on every thread) and must drop it before its memory
goes away, and must register the target's area once memory is back —
otherwise sched_getcpu() silently returns a stale CPU.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass

from .. import ptrace_ops as pt
from ..image import record
from ..inject import nr
from .context import DumpContext, RestoreContext

PR_SET_NAME, PR_GET_TID_ADDRESS = 15, 40
RSEQ_FLAG_UNREGISTER = 1
SYS_get_robust_list = 274
_libc = ctypes.CDLL(None, use_errno=True)


@record(40)
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


def get_robust_list(tid: int) -> tuple[int, int]:
    head = ctypes.c_void_p()
    length = ctypes.c_size_t()
    if _libc.syscall(SYS_get_robust_list, tid, ctypes.byref(head), ctypes.byref(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"get_robust_list({tid}): {os.strerror(err)}")
    return head.value or 0, length.value


def dump(ctx: DumpContext) -> list:
    inj, pid = ctx.inj, ctx.pid
    inj.check(nr.prctl, PR_GET_TID_ADDRESS, ctx.scratch, what="prctl(PR_GET_TID_ADDRESS)")
    (tid_addr,) = struct.unpack("<Q", inj.read(ctx.scratch, 8))
    head, length = get_robust_list(pid)
    rseq = pt.get_rseq(pid)
    with open(f"/proc/{pid}/task/{pid}/comm", "rb") as f:
        comm = f.read().rstrip(b"\n").decode("utf-8", "surrogateescape")
    return [ThreadRecord(pid, comm, tid_addr, head, length, rseq.pointer, rseq.size, rseq.signature)]


def drop_inherited_rseq(rctx: RestoreContext) -> None:
    """Unregister the rseq area the new task inherited from pyckpt."""
    cfg = pt.get_rseq(rctx.pid)
    if cfg.pointer:
        rctx.inj.check(nr.rseq, cfg.pointer, cfg.size, RSEQ_FLAG_UNREGISTER, cfg.signature,
                       what="unregistering pyckpt's inherited rseq")


def restore(rctx: RestoreContext) -> None:
    """After memory is back: name, robust list, clear_child_tid, rseq."""
    inj, scratch = rctx.inj, rctx.scratch
    rec = rctx.image.one(ThreadRecord)
    name = rec.comm.encode("utf-8", "surrogateescape")[:15] + b"\0"
    inj.write(scratch, name)
    inj.check(nr.prctl, PR_SET_NAME, scratch, what="prctl(PR_SET_NAME)")
    if rec.robust_head:
        inj.check(nr.set_robust_list, rec.robust_head, rec.robust_len, what="set_robust_list")
    inj.call(nr.set_tid_address, rec.clear_child_tid)
    if rec.rseq_pointer:
        inj.check(nr.rseq, rec.rseq_pointer, rec.rseq_size, 0, rec.rseq_signature,
                  what="registering the task's rseq area")
