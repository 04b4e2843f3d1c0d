"""CPU state: general registers (with fs/gs base) and the full xstate.

Registers are restored last.  A task stopped inside a syscall carries the
kernel's restart code in rax and the syscall number in orig_rax.  For
ERESTARTSYS/NOINTR/NOHAND both are restored as they were: the task is
released from a ptrace stop inside the kernel's signal path, so the kernel
itself decides, exactly as it would have without the dump — re-enter the
call, or return EINTR if a pending signal's handler runs first (pause() and
sigsuspend() depend on that).  ERESTART_RESTARTBLOCK becomes EINTR: its
kernel-side restart block cannot be carried over (restarting would run the
block the new task inherited from pyckpt).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import ptrace_ops as pt
from ..errors import KernelMismatchError
from ..image import record
from .context import DumpContext, RestoreContext

ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = 512, 513, 514, 516
EINTR = 4
U64 = (1 << 64) - 1


@record(20, scope="process")
@dataclass
class CpuRecord:
    tid: int
    regs: bytes  # struct user_regs_struct (NT_PRSTATUS), 216 bytes
    xstate: bytes  # NT_X86_XSTATE as the kernel gave it


def dump(ctx: DumpContext) -> list:
    return [CpuRecord(tid, inj.regs, pt.get_xstate(tid)) for tid, inj in ctx.threads.items()]


def fixup_restart(raw: bytes) -> bytes:
    """Registers for a fresh task from those of a task stopped in a syscall."""
    regs = pt.decode_regs(raw)
    if regs.orig_rax != U64:  # stopped inside a syscall
        err = (-regs.rax) & U64 if regs.rax & (1 << 63) else 0
        if err in (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND):
            return pt.encode_regs(regs)  # the kernel restarts it, or not, on release
        if err == ERESTART_RESTARTBLOCK:
            regs.rax = (-EINTR) & U64
    regs.orig_rax = U64
    return pt.encode_regs(regs)


def check_compatible(rctx: RestoreContext, current_xstate_size: int) -> None:
    rec = rctx.image.of_type(CpuRecord)[0]
    if len(rec.xstate) != current_xstate_size:
        raise KernelMismatchError(
            f"the image's xstate is {len(rec.xstate)} bytes, this CPU/kernel uses "
            f"{current_xstate_size}; restore on another CPU is not supported yet"
        )


def restore(rctx: RestoreContext) -> None:
    check_compatible(rctx, len(pt.get_xstate(rctx.pid)))
    for rec in rctx.image.of_type(CpuRecord):
        pt.set_xstate(rctx.tid_map[rec.tid], rec.xstate)
        pt.set_regs(rctx.tid_map[rec.tid], fixup_restart(rec.regs))
