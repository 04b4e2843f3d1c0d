"""The mm's own fields: code/data/brk/stack/arg/env bounds, auxv and the exe link.

brk is not shown in /proc: dump asks with an injected brk(0).  Restore sets
everything at once with PR_SET_MM_MAP (the single-field PR_SET_MM_* calls
need CAP_SYS_RESOURCE).  The exe link can change only once no mapping of
the old exe is left.  A task born of pyckpt's stub (restorer: FRESH_EXE) has
the stub's memfd as its exe, unmapped by CLEAR, and always gets the image's;
a task that is a copy of pyckpt running the target's binary (a CPython target
restored by a fork of pyckpt) has the right link already, left alone (setting
it would fail: the binary is mapped again by then).
mmap_base cannot be set back: later mmaps of the restored task may land
elsewhere than they would have (harmless).
"""

from __future__ import annotations

import os
import struct
from .._dataclass import dataclass

from .. import proc
from ..image import record
from ..inject import nr
from .context import DumpContext, RestoreContext
from .fileid import FileIdentity, identify, open_checked

PR_SET_MM, PR_SET_MM_MAP = 35, 14
PRCTL_MM_MAP = struct.Struct("<11QQII")  # struct prctl_mm_map, 104 bytes


@record(50, scope="process")
@dataclass
class MmRecord:
    start_code: int
    end_code: int
    start_data: int
    end_data: int
    start_brk: int
    brk: int
    start_stack: int
    arg_start: int
    arg_end: int
    env_start: int
    env_end: int
    auxv: list[int]  # flat key, value pairs, ending with AT_NULL
    exe: FileIdentity


def dump(ctx: DumpContext) -> list:
    s = ctx.stat
    brk = ctx.inj.check(nr.brk, 0, what="brk(0)")
    auxv = [x for pair in proc.read_auxv(ctx.pid) for x in pair]
    exe_path = os.readlink(f"/proc/{ctx.pid}/exe")
    exe = identify(exe_path, f"/proc/{ctx.pid}/exe")
    return [MmRecord(s.start_code, s.end_code, s.start_data, s.end_data, s.start_brk, brk,
                     s.start_stack, s.arg_start, s.arg_end, s.env_start, s.env_end, auxv, exe)]


FRESH_EXE = "mm: the tasks were born of pyckpt's stub"  # RestoreContext.shared (restorer)
_OWN_EXE: dict[int, tuple[int, int]] = {}  # pid -> pyckpt's own exe (dev, inode)


def _same_as_own(rec: MmRecord) -> bool:
    pid = os.getpid()
    if pid not in _OWN_EXE:
        own = os.stat("/proc/self/exe")
        _OWN_EXE[pid] = own.st_dev, own.st_ino
    return _OWN_EXE[pid] == (rec.exe.dev, rec.exe.ino)


def prepare(rctx: RestoreContext) -> None:
    rec = rctx.image.one(MmRecord)
    # Opened even when it is pyckpt's own binary: a task born of the stub needs it.
    # Only a label (/proc/PID/exe): its content may have changed with allow_changed_files.
    rctx.pass_fd(("exe", rec.exe.path), lambda: open_checked(
        rec.exe, os.O_RDONLY, content=not rctx.options.allows_changed(rec.exe.path)))


def restore(rctx: RestoreContext) -> None:
    rec = rctx.image.one(MmRecord)
    auxv = struct.pack(f"<{len(rec.auxv)}Q", *rec.auxv)
    auxv_addr = rctx.scratch + 256
    exe_fd = rctx.passed.get(("exe", rec.exe.path), 0xFFFFFFFF)
    if not rctx.shared.get(FRESH_EXE) and _same_as_own(rec):
        exe_fd = 0xFFFFFFFF  # a copy of pyckpt: its link is right already
    mm_map = PRCTL_MM_MAP.pack(
        rec.start_code, rec.end_code, rec.start_data, rec.end_data, rec.start_brk, rec.brk,
        rec.start_stack, rec.arg_start, rec.arg_end, rec.env_start, rec.env_end,
        auxv_addr, len(auxv), exe_fd,
    )
    rctx.inj.write(rctx.scratch, mm_map)
    rctx.inj.write(auxv_addr, auxv)
    rctx.inj.check(nr.prctl, PR_SET_MM, PR_SET_MM_MAP, rctx.scratch, PRCTL_MM_MAP.size, 0,
                   what="prctl(PR_SET_MM_MAP)")
