"""Signal dispositions: all of them, SIG_IGN included (process-wide).

Dispositions are read with injected rt_sigaction calls: /proc shows only
which signals are caught or ignored, not handlers, flags, masks or
restorers.  A restored task starts as a copy of pyckpt, so every signal's
disposition is set, defaults included.  The per-thread parts (blocked
mask, sigaltstack) live with the thread (kinds/thread.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..image import record
from ..inject import nr
from .context import DumpContext, RestoreContext

SIGKILL, SIGSTOP = 9, 19
SIGACTION = struct.Struct("<QQQQ")  # handler, flags, restorer, mask (kernel layout)


@dataclass
class SigAction:
    signo: int
    handler: int
    flags: int
    restorer: int
    mask: int


@record(30)
@dataclass
class SignalsRecord:
    actions: list[SigAction]


def dump(ctx: DumpContext) -> list:
    inj, scratch = ctx.inj, ctx.scratch
    actions = []
    for sig in range(1, 65):
        if sig in (SIGKILL, SIGSTOP):
            continue
        inj.check(nr.rt_sigaction, sig, 0, scratch, 8, what=f"reading the action of signal {sig}")
        handler, flags, restorer, mask = SIGACTION.unpack(inj.read(scratch, SIGACTION.size))
        actions.append(SigAction(sig, handler, flags, restorer, mask))
    return [SignalsRecord(actions)]


def restore(rctx: RestoreContext) -> None:
    inj, scratch = rctx.inj, rctx.scratch
    for a in rctx.image.one(SignalsRecord).actions:
        inj.write(scratch, SIGACTION.pack(a.handler, a.flags, a.restorer, a.mask))
        inj.check(nr.rt_sigaction, a.signo, scratch, 0, 8, what=f"setting the action of signal {a.signo}")
