"""Signal dispositions (all of them, SIG_IGN included), the blocked mask and sigaltstack.

Dispositions are read with injected rt_sigaction calls: /proc shows only
which signals are caught or ignored, not handlers, flags, masks or
restorers.  A restored task starts as a copy of pyckpt, so every signal's
disposition is set, defaults included.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..image import record
from ..inject import nr
from .context import DumpContext, RestoreContext

SIGKILL, SIGSTOP = 9, 19
SIGACTION = struct.Struct("<QQQQ")  # handler, flags, restorer, mask (kernel layout)
STACK_T = struct.Struct("<QiiQ")  # ss_sp, ss_flags, pad, ss_size
SS_ONSTACK, SS_DISABLE = 1, 2


@dataclass
class SigAction:
    signo: int
    handler: int
    flags: int
    restorer: int
    mask: int


@dataclass
class AltStack:
    sp: int
    flags: int
    size: int


@record(30)
@dataclass
class SignalsRecord:
    tid: int
    actions: list[SigAction]
    blocked: int
    altstack: AltStack


def dump(ctx: DumpContext) -> list:
    inj, scratch = ctx.inj, ctx.scratch
    actions = []
    for sig in range(1, 65):
        if sig in (SIGKILL, SIGSTOP):
            continue
        inj.check(nr.rt_sigaction, sig, 0, scratch, 8, what=f"reading the action of signal {sig}")
        handler, flags, restorer, mask = SIGACTION.unpack(inj.read(scratch, SIGACTION.size))
        actions.append(SigAction(sig, handler, flags, restorer, mask))
    inj.check(nr.sigaltstack, 0, scratch, what="reading sigaltstack")
    sp, flags, _, size = STACK_T.unpack(inj.read(scratch, STACK_T.size))
    return [SignalsRecord(ctx.pid, actions, inj.saved_sigmask, AltStack(sp, flags, size))]


def restore(rctx: RestoreContext) -> None:
    """Dispositions and the alternate stack (the blocked mask is set with the registers)."""
    inj, scratch = rctx.inj, rctx.scratch
    rec = rctx.image.one(SignalsRecord)
    for a in rec.actions:
        inj.write(scratch, SIGACTION.pack(a.handler, a.flags, a.restorer, a.mask))
        inj.check(nr.rt_sigaction, a.signo, scratch, 0, 8, what=f"setting the action of signal {a.signo}")
    st = rec.altstack
    flags = st.flags & ~SS_ONSTACK
    inj.write(scratch, STACK_T.pack(st.sp, flags, 0, st.size))
    inj.check(nr.sigaltstack, scratch, 0, what="setting sigaltstack")
