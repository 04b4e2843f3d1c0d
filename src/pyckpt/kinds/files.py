"""Open files (minimum set): regular files and the harmless character devices.

The fd table and the open file descriptions behind it are kept apart, as
the objref rule wants: a `FileRecord` is one open file description (path,
access mode and status flags, offset) saved once; each `FdRecord` names a
descriptor number, its close-on-exec flag and the description's id.  Two
fds share a description when the kernel says so (kcmp KCMP_FILE), not when
their paths match.  Restore opens each description once in pyckpt, passes it
to the new task, and dup3s it to every fd number that had it.

Any other kind of fd is refused at dump time with an error naming the fd
and its kind; full file support (pipes, epoll, locks...) is its own issue.
"""

from __future__ import annotations

import ctypes
import os
import stat
from dataclasses import dataclass

from ..errors import FileChangedError, UnsupportedFdError
from ..image import record
from ..inject import nr
from ..proc import read_fdinfo
from .context import DumpContext, RestoreContext
from .fileid import FileIdentity, check_same, identify

SYS_kcmp, KCMP_FILE = 312, 0
O_CLOEXEC = os.O_CLOEXEC
# Character devices with no state of their own: (major, minor) -> path
SIMPLE_DEVICES = {(1, 3): "/dev/null", (1, 5): "/dev/zero", (1, 7): "/dev/full",
                  (1, 8): "/dev/random", (1, 9): "/dev/urandom"}
_libc = ctypes.CDLL(None, use_errno=True)


@record(60)
@dataclass
class FileRecord:
    id: int
    kind: str  # "regular" or "chardev"
    flags: int  # access mode and status flags (no O_CLOEXEC: that is per fd)
    pos: int
    file: FileIdentity


@record(61)
@dataclass
class FdRecord:
    fd: int
    file_id: int
    cloexec: bool


def same_description(pid: int, fd1: int, fd2: int) -> bool:
    r = _libc.syscall(SYS_kcmp, pid, pid, KCMP_FILE, fd1, fd2)
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"kcmp({pid}, fd {fd1}, fd {fd2}): {os.strerror(err)}")
    return r == 0


def _kind_of(pid: int, fd: int, target: str, st: os.stat_result) -> str:
    """The fd's kind in words, for the dump or for the refusal."""
    if stat.S_ISREG(st.st_mode):
        return "regular"
    if stat.S_ISCHR(st.st_mode):
        if (os.major(st.st_rdev), os.minor(st.st_rdev)) in SIMPLE_DEVICES:
            return "chardev"
        return "terminal or character device"
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    if stat.S_ISFIFO(st.st_mode):
        return "pipe" if target.startswith("pipe:") else "FIFO"
    if stat.S_ISSOCK(st.st_mode):
        return "socket"
    if target.startswith("anon_inode:"):
        return target[len("anon_inode:"):].strip("[]") + " (anon inode)"
    return "special file"


def dump(ctx: DumpContext) -> list:
    pid = ctx.pid
    files: list[FileRecord] = []
    fds: list[FdRecord] = []
    owners: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (dev, ino) -> [(fd, file id)]
    for fd in sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd")):
        link = f"/proc/{pid}/fd/{fd}"
        target = os.readlink(link)
        st = os.stat(link)
        kind = _kind_of(pid, fd, target, st)
        if kind not in ("regular", "chardev"):
            raise UnsupportedFdError(pid, fd, kind, target)
        if kind == "regular" and target.endswith(" (deleted)"):
            raise UnsupportedFdError(pid, fd, "deleted file", target)
        info = read_fdinfo(pid, fd)
        cloexec = bool(info.flags & O_CLOEXEC)
        file_id = None
        for other_fd, other_id in owners.get((st.st_dev, st.st_ino), []):
            if same_description(pid, fd, other_fd):
                file_id = other_id
                break
        if file_id is None:
            file_id = len(files) + 1
            path = target if kind == "regular" else SIMPLE_DEVICES[(os.major(st.st_rdev), os.minor(st.st_rdev))]
            ident = identify(path, link)
            files.append(FileRecord(file_id, kind, info.flags & ~O_CLOEXEC, info.pos, ident))
            owners.setdefault((st.st_dev, st.st_ino), []).append((fd, file_id))
        fds.append(FdRecord(fd, file_id, cloexec))
    return files + fds


def highest_fd(image) -> int:
    return max((r.fd for r in image.of_type(FdRecord)), default=-1)


def prepare(rctx: RestoreContext) -> None:
    """Open every description in pyckpt, at its offset, checked against the dump."""
    for f in rctx.image.of_type(FileRecord):
        def opener(f=f):
            flags = f.flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY)
            try:
                fd = os.open(f.file.path, flags | O_CLOEXEC)
            except FileNotFoundError:
                raise FileChangedError(f.file.path, "it no longer exists") from None
            except OSError as e:
                raise FileChangedError(f.file.path, f"it cannot be opened: {e.strerror}") from None
            try:
                if f.kind == "regular":
                    check_same(f.file, fd, content=False)
                    os.lseek(fd, f.pos, os.SEEK_SET)
            except BaseException:
                os.close(fd)
                raise
            return fd

        rctx.pass_fd(("file", f.id), opener)


def restore(rctx: RestoreContext) -> None:
    for r in rctx.image.of_type(FdRecord):
        src = rctx.passed[("file", r.file_id)]
        rctx.inj.check(nr.dup3, src, r.fd, O_CLOEXEC if r.cloexec else 0,
                       what=f"dup3 to fd {r.fd}")
