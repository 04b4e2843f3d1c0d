"""The one place ptrace requests are made.

The constants and the x86-64 register struct are written here (the values of
<linux/ptrace.h> and <sys/user.h>; tests/test_startup.py holds them against
python-ptrace's), so neither dump nor restore loads python-ptrace, which costs
a command ~20 ms of start-up.  Every request goes through the C helper and a
failure becomes `errors.PtraceError` naming the request and the PID.
"""

from __future__ import annotations

import ctypes
import struct
from ._dataclass import dataclass

from ._native._ck import ffi, lib
from .errors import PtraceError

PTRACE_TRACEME = 0
PTRACE_CONT = 7
PTRACE_DETACH = 17
PTRACE_SINGLESTEP = 9
PTRACE_GETSIGINFO = 0x4202
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEFORK = 0x2
PTRACE_EVENT_FORK = 1
PTRACE_EVENT_CLONE = 3
# (python-ptrace 0.9.9 lacks these:)
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_PEEKSIGINFO = 0x4209
PTRACE_PEEKSIGINFO_SHARED = 1
PTRACE_GETSIGMASK = 0x420A
PTRACE_SETSIGMASK = 0x420B
PTRACE_GET_RSEQ_CONFIGURATION = 0x420F
PTRACE_EVENT_STOP = 128
PTRACE_O_EXITKILL = 0x100000  # SIGKILL the tracee when its tracer exits


class user_regs_struct(ctypes.Structure):
    """struct user_regs_struct of x86-64 (<sys/user.h>), what NT_PRSTATUS holds."""

    _fields_ = [(name, ctypes.c_ulong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
        "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds",
        "es", "fs", "gs")]

    def __str__(self):
        return str({name: getattr(self, name) for name, _ in self._fields_})


NT_PRSTATUS = 1
NT_X86_XSTATE = 0x202
REGS_SIZE = ctypes.sizeof(user_regs_struct)  # 216 on x86-64
XSTATE_MAX = 16384  # generous; the kernel reports the real size (2688 here)

Regs = user_regs_struct


def request(req: int, pid: int, addr: int = 0, data: int = 0, what: str = "") -> int:
    r = lib.ck_ptrace(req, pid, addr, data)
    if r < 0:
        raise PtraceError(what or f"ptrace request {req:#x}", pid, -r)
    return r


def wait(pid: int) -> int:
    """waitpid(pid, __WALL); returns the raw status."""
    status = ffi.new("int *")
    r = lib.ck_wait(pid, status)
    if r < 0:
        raise PtraceError("waitpid", pid, -r)
    return status[0]


def get_event_msg(pid: int) -> int:
    buf = ffi.new("unsigned long *")
    request(PTRACE_GETEVENTMSG, pid, 0, int(ffi.cast("uintptr_t", buf)), "PTRACE_GETEVENTMSG")
    return int(buf[0])


def get_regs(pid: int) -> bytes:
    buf = ffi.new("char[]", REGS_SIZE)
    r = lib.ck_getregset(pid, NT_PRSTATUS, buf, REGS_SIZE)
    if r < 0:
        raise PtraceError("PTRACE_GETREGSET(NT_PRSTATUS)", pid, -r)
    return bytes(ffi.buffer(buf, r))


def set_regs(pid: int, regs: bytes) -> None:
    buf = ffi.from_buffer(regs)
    r = lib.ck_setregset(pid, NT_PRSTATUS, buf, len(regs))
    if r < 0:
        raise PtraceError("PTRACE_SETREGSET(NT_PRSTATUS)", pid, -r)


def get_xstate(pid: int) -> bytes:
    buf = ffi.new("char[]", XSTATE_MAX)
    r = lib.ck_getregset(pid, NT_X86_XSTATE, buf, XSTATE_MAX)
    if r < 0:
        raise PtraceError("PTRACE_GETREGSET(NT_X86_XSTATE)", pid, -r)
    return bytes(ffi.buffer(buf, r))


def set_xstate(pid: int, xstate: bytes) -> None:
    buf = ffi.from_buffer(xstate)
    r = lib.ck_setregset(pid, NT_X86_XSTATE, buf, len(xstate))
    if r < 0:
        raise PtraceError("PTRACE_SETREGSET(NT_X86_XSTATE)", pid, -r)


def get_sigmask(pid: int) -> int:
    buf = ffi.new("unsigned long long *")
    request(PTRACE_GETSIGMASK, pid, 8, int(ffi.cast("uintptr_t", buf)), "PTRACE_GETSIGMASK")
    return int(buf[0])


def set_sigmask(pid: int, mask: int) -> None:
    buf = ffi.new("unsigned long long *", mask)
    request(PTRACE_SETSIGMASK, pid, 8, int(ffi.cast("uintptr_t", buf)), "PTRACE_SETSIGMASK")


SIGINFO_SIZE = 128


def peek_siginfo(tid: int, shared: bool) -> list[bytes]:
    """Every pending siginfo of a thread's private queue, or of the process's shared one.

    PTRACE_PEEKSIGINFO reads the queues without dequeuing anything.
    """
    batch = 32
    args = ffi.new("unsigned long long[2]")  # struct ptrace_peeksiginfo_args {u64 off; u32 flags; s32 nr}
    buf = ffi.new("char[]", SIGINFO_SIZE * batch)
    out: list[bytes] = []
    while True:
        args[0] = len(out)
        args[1] = (PTRACE_PEEKSIGINFO_SHARED if shared else 0) | (batch << 32)
        n = request(PTRACE_PEEKSIGINFO, tid, int(ffi.cast("uintptr_t", args)),
                    int(ffi.cast("uintptr_t", buf)), "PTRACE_PEEKSIGINFO")
        raw = bytes(ffi.buffer(buf, n * SIGINFO_SIZE))
        out += [raw[i * SIGINFO_SIZE:(i + 1) * SIGINFO_SIZE] for i in range(n)]
        if n < batch:
            return out


@dataclass(frozen=True)
class RseqConfig:
    pointer: int
    size: int
    signature: int
    flags: int


def get_rseq(pid: int) -> RseqConfig:
    """PTRACE_GET_RSEQ_CONFIGURATION: the task's registered rseq area (pointer 0: none)."""
    buf = ffi.new("char[]", 24)
    request(
        PTRACE_GET_RSEQ_CONFIGURATION, pid, 24, int(ffi.cast("uintptr_t", buf)),
        "PTRACE_GET_RSEQ_CONFIGURATION",
    )
    ptr, size, sig, flags, _ = struct.unpack("<QIIII", bytes(ffi.buffer(buf, 24)))
    return RseqConfig(ptr, size, sig, flags)


def decode_regs(raw: bytes) -> user_regs_struct:
    return user_regs_struct.from_buffer_copy(raw)


def encode_regs(regs: user_regs_struct) -> bytes:
    return bytes(regs)
