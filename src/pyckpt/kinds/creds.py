"""Credentials: user and group ids (real, effective, saved, fs) and supplementary groups.

A restored task starts as a copy of pyckpt (root).  Its ids are set back
after every step that needs privilege, so a process dumped as an ordinary
user comes back as that user, with the capabilities the kernel leaves an
ordinary user (setresuid away from 0 clears them).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from ..image import record
from .context import DumpContext, RestoreContext

SYS_setgroups, SYS_setresuid, SYS_setresgid = 116, 117, 119
SYS_setfsuid, SYS_setfsgid = 122, 123


@record(2)
@dataclass
class CredsRecord:
    uids: list[int]  # real, effective, saved, fs
    gids: list[int]
    groups: list[int]


def _ids(line: str) -> list[int]:
    return [int(x) for x in line.split()]


def dump(ctx: DumpContext) -> list:
    s = ctx.status
    return [CredsRecord(_ids(s["Uid"]), _ids(s["Gid"]), _ids(s.get("Groups", "")))]


def restore(rctx: RestoreContext) -> None:
    rec = rctx.image.one(CredsRecord)
    if rec.uids == [0] * 4 and rec.gids == [0] * 4 and sorted(rec.groups) == sorted(os.getgroups()):
        return  # same as pyckpt's (root): nothing to change
    rctx.inj.write(rctx.scratch, struct.pack(f"<{len(rec.groups)}I", *rec.groups))
    # Credentials are per thread in the kernel (glibc's setuid() broadcasts
    # to every thread): each thread sets its own.
    for inj in [rctx.inj, *rctx.threads.values()]:
        inj.check(SYS_setgroups, len(rec.groups), rctx.scratch, what="setgroups")
        inj.check(SYS_setresgid, *rec.gids[:3], what="setresgid")
        inj.call(SYS_setfsgid, rec.gids[3])
        inj.check(SYS_setresuid, *rec.uids[:3], what="setresuid")
        inj.call(SYS_setfsuid, rec.uids[3])
