"""Credentials: user and group ids (real, effective, saved, fs) and supplementary groups.

A restored task starts with pyckpt's credentials (root).  Its ids are set back
after every step that needs privilege, so a process dumped as an ordinary
user comes back as that user, with the capabilities the kernel leaves an
ordinary user (setresuid away from 0 clears them).  The dumpable flag
(which setresuid clears) and no_new_privs are set back too.

What restore cannot give back is refused at dump time instead of being
restored with more privilege than the process had: seccomp filters, and
capability sets other than the ones the restore will produce (pyckpt's own
for a root process; none but pyckpt's bounding and inheritable sets for an
ordinary user).
"""

from __future__ import annotations

import os
import struct
from .._dataclass import dataclass

from .. import proc
from ..errors import UnsupportedError
from ..image import record
from ..inject import WANT_ANY, nr
from .context import DumpContext, RestoreContext


@record(2, scope="process")
@dataclass
class CredsRecord:
    uids: list[int]  # real, effective, saved, fs
    gids: list[int]
    groups: list[int]
    dumpable: int  # prctl(PR_GET_DUMPABLE)
    no_new_privs: bool


PR_SET_DUMPABLE, PR_GET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 3, 38
CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
MAX_GROUPS = 900  # what fits in the scratch page

def _ids(line: str) -> list[int]:
    return [int(x) for x in line.split()]


def _caps(status: dict[str, str]) -> dict[str, int]:
    return {k: int(status.get(k, "0"), 16) for k in CAP_FIELDS}


def dump(ctx: DumpContext) -> list:
    s, pid = ctx.status, ctx.pid  # (seccomp is refused before the seize: see seize.refusal)
    uids = _ids(s["Uid"])
    caps, own = _caps(s), _caps(proc.read_status(os.getpid()))
    expected = own if uids[1] == 0 else dict(own, CapPrm=0, CapEff=0, CapAmb=0)
    if caps != expected:
        diff = ", ".join(f"{k} {caps[k]:x} (restore would give {expected[k]:x})"
                         for k in CAP_FIELDS if caps[k] != expected[k])
        raise UnsupportedError(f"process {pid} has capability sets pyckpt cannot restore yet: {diff}", pid=pid)
    groups = _ids(s.get("Groups", ""))
    if len(groups) > MAX_GROUPS:
        raise UnsupportedError(f"process {pid} has {len(groups)} supplementary groups; "
                               f"pyckpt restores at most {MAX_GROUPS}", pid=pid)
    dumpable = ctx.inj.check(nr.prctl, PR_GET_DUMPABLE, what="prctl(PR_GET_DUMPABLE)")
    return [CredsRecord(uids, _ids(s["Gid"]), groups, dumpable, s.get("NoNewPrivs", "0") == "1")]


def beyond(rec: CredsRecord, uid: int, gids: frozenset[int] | None) -> list[str]:
    """What identity `rec` asks for that user `uid`, in groups `gids` (None: unknown),
    does not have, in words; [] when none.  A non-root user's process holds no
    capabilities (pyckpt refuses at dump what it could not give back, and a change
    of ids away from root drops them), so an identity wholly the user's cannot
    carry any: uid 0 anywhere (saved and fs included) is asking for root."""
    out = []
    if any(u != uid for u in rec.uids):
        ids = (f"uid {rec.uids[0]}" if len(set(rec.uids)) == 1
               else f"uids {'/'.join(map(str, rec.uids))} (real/effective/saved/fs)")
        out.append(ids + (" (root, with every capability)" if 0 in rec.uids else ""))
    gid_words = (f"gid {rec.gids[0]}" if len(set(rec.gids)) == 1
                 else f"gids {'/'.join(map(str, rec.gids))} (real/effective/saved/fs)")
    if gids is None:
        out.append(f"{gid_words} and groups {', '.join(map(str, rec.groups)) or 'none'} (uid {uid} "
                   "is not in the user database: its groups are unknown)")
        return out
    if any(g not in gids for g in rec.gids):
        out.append(f"{gid_words}, not a group of uid {uid}")
    extra = sorted(set(g for g in rec.groups if g not in gids))
    if extra:
        out.append(f"supplementary group{'s' if len(extra) > 1 else ''} {', '.join(map(str, extra))}, "
                   f"not of uid {uid}")
    return out


def restore(rctx: RestoreContext) -> None:
    """Ids, dumpable, no_new_privs of every thread: the leader's in one batch (one stop),
    each other thread's in one of its own."""
    rec = rctx.image.one(CredsRecord)
    b = rctx.inj.batch()
    _set_ids(rctx, rec, b)
    b.add(nr.prctl, PR_SET_DUMPABLE, 1 if rec.dumpable else 0, what="prctl(PR_SET_DUMPABLE)")
    if rec.no_new_privs:
        for inj in rctx.threads.values():
            inj.check(nr.prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, what="prctl(PR_SET_NO_NEW_PRIVS)")
        b.add(nr.prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, what="prctl(PR_SET_NO_NEW_PRIVS)")
    b.run()


def _set_ids(rctx: RestoreContext, rec: CredsRecord, leader) -> None:
    """Each thread's ids: the other threads' now, the leader's queued in batch `leader`."""
    if rec.uids == [0] * 4 and rec.gids == [0] * 4 and sorted(rec.groups) == sorted(os.getgroups()):
        return  # same as pyckpt's (root): nothing to change
    rctx.inj.write(rctx.scratch, struct.pack(f"<{len(rec.groups)}I", *rec.groups))
    # Credentials are per thread in the kernel (glibc's setuid() broadcasts
    # to every thread): each thread sets its own.
    for b in [*(inj.batch() for inj in rctx.threads.values()), leader]:
        b.add(nr.setgroups, len(rec.groups), rctx.scratch, what="setgroups")
        b.add(nr.setresgid, *rec.gids[:3], what="setresgid")
        b.add(nr.setfsgid, rec.gids[3], want=WANT_ANY)
        b.add(nr.setresuid, *rec.uids[:3], what="setresuid")
        b.add(nr.setfsuid, rec.uids[3], want=WANT_ANY)
        if b is not leader:
            b.run()
