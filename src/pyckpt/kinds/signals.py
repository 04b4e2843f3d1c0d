"""Signal dispositions (all of them, SIG_IGN included) and pending signals.

Dispositions are read with injected rt_sigaction calls: /proc shows only
which signals are caught or ignored, not handlers, flags, masks or
restorers.  A restored task starts with pyckpt's dispositions (ignored ones, and its
handlers where it is a copy of pyckpt), so every signal's disposition is set, defaults included (in one batch of injected calls).  The per-thread parts (blocked
mask, sigaltstack) live with the thread (kinds/thread.py).

Pending signals — the process's shared queue and each thread's private one
— are read with PTRACE_PEEKSIGINFO, which dequeues nothing, and queued
again in the restored task with their full siginfo by injected
rt_sigqueueinfo / rt_tgsigqueueinfo (a task may queue any si_code to
itself), while every signal is still blocked; they are delivered once the
task runs with its own mask, as they would have been.
"""

from __future__ import annotations

import struct
from .._dataclass import dataclass

from .. import ptrace_ops as pt
from ..image import record
from ..inject import nr, spread
from .context import DumpContext, RestoreContext

SIGKILL, SIGSTOP, SIGCHLD = 9, 19, 17
SIGACTION = struct.Struct("<QQQQ")  # handler, flags, restorer, mask (kernel layout)


@dataclass
class SigAction:
    signo: int
    handler: int
    flags: int
    restorer: int
    mask: int


@record(30, scope="process")
@dataclass
class SignalsRecord:
    actions: list[SigAction]


@record(31, scope="process")
@dataclass
class PendingSignalsRecord:
    tid: int  # 0: the process's shared queue
    siginfos: list[bytes]  # 128-byte siginfo_t each, in queue order


def dump(ctx: DumpContext) -> list:
    inj, scratch = ctx.inj, ctx.scratch
    # Only caught and ignored signals (and SIGCHLD, whose SA_NOCLDWAIT and
    # SA_NOCLDSTOP count even with SIG_DFL) are read from the task: the others
    # are SIG_DFL, whose flags and mask do nothing.  Fewer injected calls: a
    # shorter freeze, and fewer moments at which the target holds foreign state.
    interesting = (int(ctx.status.get("SigCgt", "f" * 16), 16)
                   | int(ctx.status.get("SigIgn", "f" * 16), 16) | 1 << (SIGCHLD - 1))
    asked = [sig for sig in range(1, 65) if sig not in (SIGKILL, SIGSTOP) and interesting >> (sig - 1) & 1]
    # (the actions are the process's: read by its threads at once, inject.spread)
    got = dict(zip(asked, spread(list(ctx.threads.values()) or [inj], scratch,
                                 [(nr.rt_sigaction, lambda at, sig=sig: (sig, 0, at, 8),
                                   f"reading the action of signal {sig}") for sig in asked],
                                 SIGACTION.size)))
    actions = []
    for sig in range(1, 65):
        if sig in (SIGKILL, SIGSTOP):
            continue
        if sig not in got:
            actions.append(SigAction(sig, 0, 0, 0, 0))
            continue
        handler, flags, restorer, mask = SIGACTION.unpack(got[sig])
        actions.append(SigAction(sig, handler, flags, restorer, mask))
    records: list = [SignalsRecord(actions)]
    shared = pt.peek_siginfo(ctx.pid, shared=True)
    if shared:
        records.append(PendingSignalsRecord(0, shared))
    for tid in ctx.threads:
        private = pt.peek_siginfo(tid, shared=False)
        if private:
            records.append(PendingSignalsRecord(tid, private))
    return records


def restore(rctx: RestoreContext) -> None:
    """Every action set, in one batch of injected calls (the task is a copy of
    pyckpt, whose own handlers must not stay)."""
    batch = rctx.inj.batch()
    for a in rctx.image.one(SignalsRecord).actions:
        at = batch.data(SIGACTION.pack(a.handler, a.flags, a.restorer, a.mask))
        batch.add(nr.rt_sigaction, a.signo, at, 0, 8, what=f"setting the action of signal {a.signo}")
    batch.run()


def restore_pending(rctx: RestoreContext) -> None:
    """Queue the pending signals again (every thread still blocks all signals)."""
    for rec in rctx.image.of_type(PendingSignalsRecord):
        inj = rctx.inj if rec.tid in (0, rctx.image_pid) else rctx.threads[rctx.tid_map[rec.tid]]
        for info in rec.siginfos:
            signo = int.from_bytes(info[:4], "little", signed=True)
            if signo in (SIGKILL, SIGSTOP):
                continue
            inj.write(rctx.scratch, info)
            if rec.tid == 0:
                # PIDs as the task sees them: the image's
                inj.check(nr.rt_sigqueueinfo, rctx.image_pid, signo, rctx.scratch,
                          what=f"queueing pending signal {signo}")
            else:
                inj.check(nr.rt_tgsigqueueinfo, rctx.image_pid, rec.tid, signo, rctx.scratch,
                          what=f"queueing pending signal {signo} of thread {rec.tid}")
