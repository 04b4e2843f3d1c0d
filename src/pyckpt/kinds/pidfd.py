"""pidfds: file descriptors that refer to a process (pidfd_open, clone's CLONE_PIDFD).

Programs hold them to wait for a child without SIGCHLD races (asyncio's
PidfdChildWatcher polls one in its epoll set), to signal a process without
PID reuse (pidfd_send_signal), or to take its fds (pidfd_getfd).

Dump: the fdinfo's `Pid:` line names the process.  It must be a process of
the image (a child in the tree, the holder itself, a zombie of the tree); a
pidfd of a process outside the image, or of one that has exited and been
reaped, is refused by name: nothing could make a pidfd of it again.  The
record keeps the process's PID and the status flags (O_NONBLOCK, which is
PIDFD_NONBLOCK).

Restore: a pidfd can only be made once its process exists, after every fd
inherited at creation was opened, so this kind `opens_late` (kinds/files.py):
pyckpt opens one pidfd per description with pidfd_open once every process of
the image exists, and each holder takes that same description through
pidfd_getfd — shared across fork as it was, and in the same epoll sets
(epoll items are added after the late fds are placed).  A pidfd of a thread
(PIDFD_THREAD) names a TID that is no process of the image: refused by name.
"""

from __future__ import annotations

import os
from .._dataclass import dataclass

from ..errors import ImageError, UnsupportedFdError
from ..image import record
from ..proc.anon_fdinfo import parse_pidfd, read_fdinfo_text
from .context import DumpContext, RestoreContext
from .files import DumpedFd, FileKind, file_kind
from .task import ProcessRecord


@record(150, scope="image")
@dataclass
class PidfdRecord:
    id: int
    pid: int  # the process it refers to, a process of the image
    flags: int  # status flags: O_NONBLOCK (PIDFD_NONBLOCK)


@file_kind
class Pidfd(FileKind):
    name = "pidfd"
    records = (PidfdRecord,)
    opens_late = True

    def claims(self, f: DumpedFd) -> bool:
        return f.link == "anon_inode:[pidfd]"

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        target = parse_pidfd(read_fdinfo_text(f.pid, f.fd))
        if target not in (ctx.tree or [ctx.pid]):
            why = ("a process that has exited and been reaped" if target == -1 else
                   "a process in a PID namespace pyckpt does not see" if target == 0 else
                   f"process {target}, which is not in the image (dump a tree that holds it, "
                   "or close the pidfd)")
            raise UnsupportedFdError(f.pid, f.fd, f"pidfd of {why}", f.link)
        return [PidfdRecord(file_id, target, f.info.flags & os.O_NONBLOCK)]

    def open_late(self, rctx: RestoreContext, rec: PidfdRecord) -> int:
        return os.pidfd_open(rctx.pids[rec.pid], rec.flags & os.O_NONBLOCK)

    def describe(self, rec: PidfdRecord) -> str:
        return f"pidfd of process {rec.pid}"


def validate(image) -> None:
    """Each pidfd names a process of the image."""
    whole = getattr(image, "reader", image)
    pids = {r.pid for r in whole.records if isinstance(r, ProcessRecord)}
    for r in image.of_type(PidfdRecord):
        if r.pid not in pids:
            raise ImageError(f"image at {whole.path}: pidfd file #{r.id} refers to process {r.pid}, "
                             "which is not in the image", path=whole.path)
