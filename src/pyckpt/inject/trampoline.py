"""Self-curing injection: a task that gets home by itself if pyckpt dies.

While a dump runs syscalls inside its target, the target holds foreign
registers and an all-blocked signal mask.  If pyckpt is killed then (SIGKILL,
the OOM killer, a CI timeout), nothing can cure it: the kernel detaches the
task as it is.  A sigreturn trampoline makes every moment safe:

- a *gadget* in the task's own code, `mov $15, %eax; syscall` (rt_sigreturn):
  every libc has one, the restorer its signal handlers return through;
- per thread, a signal frame (as the kernel builds for a handler) on the
  thread's own stack below its red zone, holding its own registers, signal
  mask and FPU/AVX state;
- the thread parked at the gadget with its stack pointer just past the frame's
  return slot.  Each call is run under PTRACE_SYSCALL (`ck_tramp_call`): the
  gadget's rt_sigreturn is stopped at its entry and turned into the call, and
  the call's exit returns to the gadget.  No single-step, no trap flag.

A task whose tracer dies at any moment therefore finishes the call and runs
rt_sigreturn, which puts back its registers, mask and FPU state.  A syscall it
was interrupted in is restarted (the frame holds the registers as the kernel's
restart logic would leave them; one that uses the kernel's restart block —
nanosleep and friends — returns EINTR instead, as after a signal handler; one
that failed with the stop's own EINTR runs again, see rewind_eintr), and
a restartable sequence (rseq) it was stopped in resumes at its abort handler,
as after a signal.  Normally the frame is never used: pyckpt gives the task
its own state back directly (`ck_park`).
"""

from __future__ import annotations

import struct

from .. import ptrace_ops as pt
from .._native._ck import ffi, lib
from . import nr

FRAME_SIZE = 320  # return slot and ucontext (312 bytes), rounded to the FPU state's 64-byte alignment
RED_ZONE = 128
UC_FP_XSTATE, UC_SIGCONTEXT_SS, UC_STRICT_RESTORE_SS = 1, 2, 4
FP_XSTATE_MAGIC1, FP_XSTATE_MAGIC2 = 0x46505853, 0x46505845
ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = 512, 513, 514, 516
U64 = (1 << 64) - 1
# mov $0xf,%rax; syscall (glibc's __restore_rt, Go's sigreturn) or mov $15,%eax; syscall (musl)
# The gadget: `mov $15, %rax; syscall` or `mov $15, %eax; syscall` (looked for with
# bytes.find, not a regular expression: no `re` in a command's start-up)
GADGETS = (b"\x48\xc7\xc0\x0f\x00\x00\x00\x0f\x05", b"\xb8\x0f\x00\x00\x00\x0f\x05")
# What both end with: one search for it finds the first of either (two occurrences
# are at least 6 bytes apart, so the first one's gadget starts first)
TAIL = b"\x0f\x00\x00\x00\x0f\x05"
HEADS = {len(g) - len(TAIL): g[:len(g) - len(TAIL)] for g in GADGETS}


def gadget_in(buf) -> int:
    """Offset of the first gadget in `buf` (bytes, or a buffer: copied), or -1."""
    data = bytes(buf)
    at = data.find(TAIL)
    while at >= 0:
        for n, head in HEADS.items():
            if at >= n and data[at - n:at] == head:
                return at - n
        at = data.find(TAIL, at + 1)
    return -1


SCAN_LIMIT = 64 << 20  # bytes of executable mappings searched at most
# Searched a piece at a time, as read from the target: glibc's gadget (__restore_rt)
# lies some 250 KB into its ~1.5 MB of code, and reading and searching all of it cost
# ~3 ms of the freeze of a process's first dump (that of every `pyckpt dump`).
PIECE = 128 << 10
# Where a gadget was found before, by the mapping (device, inode, file offset, size):
# the same library mapped again has it at the same place.  Only a hint: the bytes
# there are read and matched again before use.
_FOUND: dict[tuple, int] = {}


def find_gadget(pid: int, maps) -> int | None:
    """Address of an rt_sigreturn gadget in an executable mapping of `pid`
    (libc's first), or None."""
    code = [m for m in maps if m.perms.startswith("r-x") and m.path.startswith("/")]
    code.sort(key=lambda m: not ("/libc." in m.path or "/libc-" in m.path))
    for m in code:
        at = _FOUND.get((m.dev, m.inode, m.offset, m.end - m.start))
        if at is not None:
            buf = ffi.new("char[]", 9)
            if lib.ck_vm_read(pid, m.start + at, buf, 9) == 9 and gadget_in(ffi.buffer(buf, 9)) == 0:
                return m.start + at
    budget = SCAN_LIMIT
    overlap = max(len(g) for g in GADGETS) - 1  # (a gadget across two pieces)
    buf = ffi.new("char[]", PIECE + overlap)
    for m in code:
        size = min(m.end - m.start, budget)
        if size <= 0:
            break
        budget -= size
        for start in range(0, size, PIECE):
            first = max(start - overlap, 0)
            n = min(start + PIECE, size) - first
            if lib.ck_vm_read(pid, m.start + first, buf, n) != n:
                break  # (not readable: the next mapping)
            found = gadget_in(ffi.buffer(buf, n))
            if found >= 0:
                _FOUND[(m.dev, m.inode, m.offset, m.end - m.start)] = first + found
                return m.start + first + found
    return None


def on_a_stack(maps, at: int, rsp: int) -> bool:
    """Whether [at, rsp) lies in memory that is only ever a thread's stack: the
    process's `[stack]`, or an anonymous read-write mapping with a guard page
    (PROT_NONE) right below it, as glibc's thread stacks and the JVM's have.
    Anything else under a stack pointer — a Go goroutine's stack in its heap, a
    coroutine's stack in a malloc'd block — may have live data just below the
    stack pointer's page, and is not written to."""
    below = None
    for m in maps:
        if m.start <= at and rsp <= m.end:
            if m.perms[:3] != "rw-":
                return False
            if m.path == "[stack]":
                return True
            return m.path == "" and below is not None and below.end == m.start and below.perms[:3] == "---"
        below = m
    return False


def frame_address(rsp: int, fp_size: int) -> int:
    """Where a thread stopped with stack pointer `rsp` gets its frame (with an
    FPU state of `fp_size` bytes): below the red zone, the FPU state 64-byte
    aligned, as the kernel places a signal frame."""
    fp = (rsp - RED_ZONE - fp_size) & ~63
    return fp - FRAME_SIZE


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


# Calls that fail with EINTR after any stop, a ptrace interrupt too, even when no
# handler runs (signal(7), "Interruption of system calls and library functions by
# stop signals"; rt_sigtimedwait: do_sigtimedwait returns -EINTR whenever its sleep
# ends early, epoll: ep_poll returns -EINTR when a signal is pending), and have done
# nothing then.  The dump's stop is not the program's to see: CPython 3.11's
# signal.sigtimedwait, for one, turns an EINTR past its deadline into a garbage
# siginfo.  Such a call is given back rewound, to run again.
RERUN_EINTR = frozenset({nr.rt_sigtimedwait, nr.epoll_wait, nr.epoll_pwait, nr.epoll_pwait2})
EINTR = 4


def rewind(regs: pt.Regs) -> None:
    """Put a task stopped right after its syscall back onto the 2-byte `syscall`
    instruction, to run the same call again: its number in rax, its arguments
    still in rdi/rsi/rdx/r10/r8/r9 (the kernel keeps them), orig_rax -1 so that
    the kernel's own restart logic leaves it alone.  A state the program can be
    in anyway (about to enter the call; a signal that comes runs its handler
    first).  Only for calls that did nothing (close() with EINTR has closed its fd)."""
    regs.rax, regs.rip, regs.orig_rax = regs.orig_rax, regs.rip - 2, U64


def rewind_eintr(raw: bytes) -> bytes:
    """Registers `raw` of a task stopped in the kernel, with a call of RERUN_EINTR
    that failed with EINTR rewound (see rewind); others as they are."""
    regs = pt.decode_regs(raw)
    if regs.orig_rax in RERUN_EINTR and regs.rax == (-EINTR) & U64 and regs.rip >= 2:
        rewind(regs)
        return pt.encode_regs(regs)
    return raw


def resume_regs(regs: pt.Regs, rseq_cs: tuple[int, int, int] | None) -> pt.Regs:
    """The registers a task stopped with `regs` resumes with when no handler runs:
    an interrupted syscall restarted, a restartable sequence aborted."""
    out = pt.decode_regs(pt.encode_regs(regs))
    if _signed(out.orig_rax) >= 0:
        err = -_signed(out.rax)
        if err in (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND):
            out.rax, out.rip = out.orig_rax, out.rip - 2
        elif err == ERESTART_RESTARTBLOCK:
            out.rax, out.rip = nr.restart_syscall, out.rip - 2
        elif err == EINTR and out.orig_rax in RERUN_EINTR:  # the stop's own EINTR, as at a normal release
            out.rax, out.rip = out.orig_rax, out.rip - 2
    if rseq_cs is not None:
        start, post_commit, abort = rseq_cs
        if start <= out.rip < start + post_commit:
            out.rip = abort
    return out


def frame(regs: pt.Regs, mask: int, fp: bytes, at: int) -> bytes:
    """A signal frame at address `at` restoring `regs`, `mask` and the FPU
    state `fp` (see fpstate()) through rt_sigreturn; the task's stack pointer
    must be `at + 8` when it runs the gadget."""
    r = regs
    mcontext = struct.pack(
        "<18Q4H4QQ64x",
        r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
        r.rdi, r.rsi, r.rbp, r.rbx, r.rdx, r.rax, r.rcx, r.rsp, r.rip, r.eflags,
        r.cs & 0xFFFF, 0, 0, r.ss & 0xFFFF,  # cs, gs, fs, ss
        0, 0, 0, 0,  # err, trapno, oldmask, cr2
        at + FRAME_SIZE,  # fpstate
    )
    # uc_stack with an invalid ss_flags: rt_sigreturn's sigaltstack() then fails,
    # and that error is ignored, so the thread's own altstack stays as it is.
    uc = struct.pack("<QQQi4xQ", UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS, 0, 0, 3, 0)
    head = struct.pack("<Q", 0) + uc + mcontext + struct.pack("<Q", mask & U64)
    assert len(head) == 312
    return head.ljust(FRAME_SIZE, b"\0") + fp


def fpstate(xstate: bytes) -> bytes:
    """The regset's XSAVE image as a signal frame carries it: only the components
    in use (the others are in their initial state and stay so), with the
    software-reserved bytes and the trailing magic rt_sigreturn checks."""
    (xstate_bv,) = struct.unpack_from("<Q", xstate, 512)
    features = xstate_bv | 3  # x87 and SSE always
    size = lib.ck_xsave_size(features)
    if size > len(xstate):
        raise ValueError(f"XSAVE area of {len(xstate)} bytes, {size} needed")
    area = bytearray(xstate[:size])
    struct.pack_into("<IIQI28x", area, 464, FP_XSTATE_MAGIC1, size + 4, features, size)
    struct.pack_into("<Q", area, 520, 0)  # XCOMP_BV: standard format
    return bytes(area) + struct.pack("<I", FP_XSTATE_MAGIC2)


def rseq_cs(read, tid: int) -> tuple[int, int, int] | None:
    """(start_ip, post_commit_offset, abort_ip) of the restartable sequence thread
    `tid` has declared, if any; `read(addr, size)` reads its memory."""
    try:
        cfg = pt.get_rseq(tid)
    except Exception:  # noqa: BLE001 -- no rseq support: nothing to abort
        return None
    if not cfg.pointer:
        return None
    try:
        (cs,) = struct.unpack("<Q", read(cfg.pointer + 8, 8))
        if not cs:
            return None
        _version, _flags, start, post_commit, abort = struct.unpack("<IIQQQ", read(cs, 32))
    except Exception:  # noqa: BLE001 -- unreadable: the kernel would kill it anyway
        return None
    return start, post_commit, abort
