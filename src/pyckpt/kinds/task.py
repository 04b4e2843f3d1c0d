"""Process-wide basics: session and group, cwd, root, umask, personality, rlimits."""

from __future__ import annotations

import os
import resource
from .._dataclass import dataclass

from .. import proc
from ..errors import RestoreError, UnsupportedError
from ..image import record
from ..inject import WANT_ANY, nr
from .context import DumpContext, RestoreContext


@record(3, scope="process")
@dataclass
class ProcessRecord:
    """Starts the records of one process of the image (a tree lists them parent first)."""

    STARTS_PROCESS = True  # the records of scope "process" after it are this process's


    pid: int
    ppid: int  # as dumped; the image's root keeps no parent


@record(4, scope="process")
@dataclass
class ZombieRecord:
    """A process of the tree that had exited and waited to be reaped by its parent."""


    pid: int
    ppid: int
    status: int  # its wait status (what the parent's wait() will get)


def is_zombie(view) -> bool:
    return bool(view.of_type(ZombieRecord))


def process_views(image) -> list:
    """One view per process, in image order (the root first).  An image without
    ProcessRecords is one process."""
    from ..image import ImageView

    reader = getattr(image, "reader", image)
    views, current = [], None
    for rec in reader.records:
        if isinstance(rec, ProcessRecord):
            current = []
            views.append(ImageView(reader, current))
        if current is None:
            current = []
            views.append(ImageView(reader, current))
        current.append(rec)
    return views


@record(1, scope="process")
@dataclass
class TaskRecord:
    pid: int
    ppid: int
    pgid: int
    sid: int
    cwd: str
    root: str  # chroot directory, as pyckpt sees it ("/" unless chrooted)
    umask: int
    personality: int
    rlimits: list[tuple[int, int, int]]  # resource, soft, hard (-1: unlimited)


def dump(ctx: DumpContext) -> list:
    pid = ctx.pid
    cwd = os.readlink(f"/proc/{pid}/cwd")
    if cwd.endswith(" (deleted)"):
        raise UnsupportedError(f"process {pid}: its working directory {cwd} was removed", pid=pid)
    root = os.readlink(f"/proc/{pid}/root")
    if root.endswith(" (deleted)"):
        raise UnsupportedError(f"process {pid}: its root directory {root} was removed", pid=pid)
    if len(os.fsencode(root)) > 3000:  # restore passes it through the scratch page
        raise UnsupportedError(f"process {pid}: its root directory path is too long for pyckpt", pid=pid)
    personality = proc.read_personality(pid)
    # From /proc: prlimit() on another user's process needs CAP_SYS_RESOURCE.
    rlimits = [(r, soft, hard) for r, (soft, hard) in enumerate(proc.read_limits(pid))]
    return [TaskRecord(
        pid=pid, ppid=ctx.stat.ppid, pgid=ctx.stat.pgrp, sid=ctx.stat.session, cwd=cwd, root=root,
        umask=int(ctx.status.get("Umask", "0022"), 8), personality=personality,
        rlimits=rlimits,
    )]


def prepare(rctx: RestoreContext) -> None:
    rec = rctx.image.one(TaskRecord)

    def open_cwd():
        try:
            return os.open(rec.cwd, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            from ..errors import FileChangedError

            raise FileChangedError(rec.cwd, f"the working directory cannot be opened: {e.strerror}") from None

    rctx.pass_fd(("cwd", rec.cwd), open_cwd)


def restore(rctx: RestoreContext) -> None:
    """cwd, root, umask, personality, process group: one batch (one stop of the task)."""
    rec = rctx.image.one(TaskRecord)
    b = rctx.inj.batch()
    b.add(nr.fchdir, rctx.passed[("cwd", rec.cwd)], what=f"chdir to {rec.cwd}")
    if rec.root != "/":
        rctx.inj.write(rctx.scratch, os.fsencode(rec.root) + b"\0")
        b.add(nr.chroot, rctx.scratch, what=f"chroot to {rec.root}")
    b.add(nr.umask, rec.umask, want=WANT_ANY)
    b.add(nr.personality, rec.personality, what="personality")
    # Leading a session or group was set up when the process was made (before
    # its children); joining the group of another process of the image needs
    # that process, so it happens here.
    if rec.pgid != rec.pid and rec.sid != rec.pid and rec.pgid in rctx.pids:
        b.add(nr.setpgid, 0, rec.pgid, what=f"setpgid to group {rec.pgid}")
    b.run()


def make_leader(inj, rec: "TaskRecord", own_group: bool = False) -> None:
    """In a freshly made process: lead a session or a process group as the dumped one did
    (`own_group`: a process group in any case unless a session, as the first process of a
    shell job does: kinds/tty.py)."""
    if rec.sid == rec.pid:
        inj.check(nr.setsid, what="setsid")
    elif rec.pgid == rec.pid or own_group:
        inj.check(nr.setpgid, 0, 0, what="setpgid")


def restore_from_outside(rctx: RestoreContext) -> None:
    """Resource limits, set by pyckpt on the stopped task (no injection needed).

    Runs while the task still has pyckpt's credentials: prlimit() on a task
    of another user needs CAP_SYS_RESOURCE, which root lacks here.
    """
    rec = rctx.image.one(TaskRecord)
    for res, soft, hard in rec.rlimits:
        try:
            resource.prlimit(rctx.pid, res, (soft, hard))
        except OSError as e:
            raise RestoreError(
                f"cannot set resource limit {res} of process {rctx.pid} to ({soft}, {hard}): "
                f"{e.strerror} (raising a hard limit above pyckpt's own needs CAP_SYS_RESOURCE)"
            ) from None


PID_MAX_LIMIT = 1 << 22  # the kernel's largest pid_max
RLIM_NLIMITS = 16


def validate(image) -> None:
    """The process's ids, umask and limits are values the kernel can have."""
    from ..errors import ImageError

    rec = image.one(TaskRecord)
    where = f"image at {image.where}: process {rec.pid}"
    if not (0 < rec.pid <= PID_MAX_LIMIT and 0 <= rec.ppid <= PID_MAX_LIMIT
            and 0 <= rec.pgid <= PID_MAX_LIMIT and 0 <= rec.sid <= PID_MAX_LIMIT):  # 0: outside the namespace
        raise ImageError(f"{where}: a process, parent, group or session id out of range")
    if not (0 <= rec.umask <= 0o777 and 0 <= rec.personality < 1 << 32):
        raise ImageError(f"{where}: umask or personality out of range")
    if len(os.fsencode(rec.root)) > 3000 or not rec.root.startswith("/") or not rec.cwd.startswith("/"):
        raise ImageError(f"{where}: its root or working directory is not an absolute path pyckpt saves")
    seen = set()
    for res, soft, hard in rec.rlimits:
        unlimited = 1 << 64
        s, h = (unlimited if v == -1 else v for v in (soft, hard))
        if not 0 <= res < RLIM_NLIMITS or res in seen or not (0 <= s <= h <= unlimited):
            raise ImageError(f"{where}: resource limit {res} is invalid or listed twice")
        seen.add(res)
