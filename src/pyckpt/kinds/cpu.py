"""CPU state: general registers (with fs/gs base) and the full xstate.

Registers are restored last.  A task stopped inside a syscall carries the
kernel's restart code in rax and the syscall number in orig_rax.  For
ERESTARTSYS/NOINTR/NOHAND both are restored as they were: the task is
released from a ptrace stop inside the kernel's signal path, so the kernel
itself decides, exactly as it would have without the dump — re-enter the
call, or return EINTR if a pending signal's handler runs first (pause() and
sigsuspend() depend on that).

Two other results of the dump's stop are not the program's to see:

- ERESTART_RESTARTBLOCK (poll with a timeout, futex waits with a timeout,
  nanosleep, clock_nanosleep): the kernel would resume through
  restart_syscall and the task's restart block, which lives in the kernel
  and cannot be carried over (restarting would run the block the new task
  inherited from pyckpt).  poll and futex are run again with their own
  arguments instead, as if the task had not entered them yet: the wait
  starts over, so it may end later than asked (a late wake-up, which both
  allow; futex re-checks the word).  nanosleep and clock_nanosleep return
  EINTR: the kernel has already written the time left to the `rem` argument
  (when one is given), and sleeping the whole time again could double a long
  sleep.  CRIU returns EINTR for all of them; poll's EINTR ended script(1).
- EINTR from a call the kernel never restarts (signal(7): rt_sigtimedwait,
  epoll_wait/epoll_pwait/epoll_pwait2 fail with EINTR after any stop, a
  ptrace interrupt too, even with no handler).  Those are run again too,
  after a restore as after a live dump (inject/trampoline.py rewind_eintr):
  a program gets that EINTR from a SIGSTOP/SIGCONT as well, but a restore
  always comes after its deadline, and CPython's signal.sigtimedwait (3.11)
  then returns an uninitialised siginfo — a signal that never came —
  instead of None.  Running the call again is a state the program can be in
  anyway (about to enter the call); only those calls are rewound, which do
  nothing before they fail with EINTR (close() for one has closed the fd and
  must not be run again).
"""

from __future__ import annotations

from .._dataclass import dataclass

from .. import ptrace_ops as pt
from ..errors import KernelMismatchError
from ..image import record
from ..inject import nr, trampoline
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


# ERESTART_RESTARTBLOCK calls run again with their own arguments (see the docstring)
RERUN_RESTARTBLOCK = frozenset({nr.poll, nr.futex})


def fixup_restart(raw: bytes) -> bytes:
    """Registers for a fresh task from those of a task stopped in a syscall."""
    regs = pt.decode_regs(raw)
    if regs.orig_rax != U64:  # stopped inside a syscall
        err = (-regs.rax) & U64 if regs.rax & (1 << 63) else 0
        if err in (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND):
            return pt.encode_regs(regs)  # the kernel restarts it, or not, on release
        rerun = (err == ERESTART_RESTARTBLOCK and regs.orig_rax in RERUN_RESTARTBLOCK) or (
            err == EINTR and regs.orig_rax in trampoline.RERUN_EINTR)
        if rerun and regs.rip >= 2:  # (a forged image's rip may not be after an instruction)
            trampoline.rewind(regs)
        elif err == ERESTART_RESTARTBLOCK:
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
