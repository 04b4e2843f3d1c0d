"""inotify instances: every watch with its path, mask and watch descriptor.

/proc/PID/fdinfo of an inotify fd lists each watch as
`inotify wd:N ino:I sdev:D mask:M ignored_mask:0 fhandle-bytes:B
fhandle-type:T f_handle:H` (ino, sdev, mask hex; sdev in the kernel's
dev_t encoding).  The path of a watch is found with open_by_handle_at on
a directory of the watched inode's file system (its mount point, from
/proc/PID/mountinfo) and readlink of the result.  Events queued and not
yet read at dump time cannot be saved (reading them would take them from
the target): such an instance is refused, so nothing is dropped silently.

Restore: inotify_init1 in pyckpt, then inotify_add_watch in wd order.  The
kernel hands out wds cyclically in increasing order, so a gap in the
dumped numbers is skipped by adding and removing a throwaway watch (its
IN_IGNORED event is read away before the task exists); every wd is checked
to come out as dumped.  A watched path that is gone or is another inode
now raises FileChangedError (another inode is accepted with
`allow_changed_files`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import termios
from .._dataclass import dataclass

from ..arch import libc as _libc
from ..errors import FileChangedError, RestoreError, UnsupportedError, UnsupportedFdError
from ..image import record
from ..problems import Fix, needs
from ..proc import read_fdinfo_text
from ..proc.anon_fdinfo import FdinfoWatch, parse_watches  # noqa: F401 (parse_watches: tests)
from .context import DumpContext, RestoreContext
from .files import DumpedFd, FileKind, file_kind, take_fd

IN_CLOEXEC, IN_NONBLOCK = os.O_CLOEXEC, os.O_NONBLOCK
IN_IGNORED = 0x8000
IN_DONT_FOLLOW, IN_MASK_CREATE = 0x02000000, 0x10000000
IN_DELETE_SELF = 0x400
AT_FDCWD, AT_HANDLE_FID = -100, 0x200
MAX_SKIPPED_WDS = 1 << 20  # a gap wider than this is refused rather than walked
@dataclass
class InotifyWatch:
    wd: int
    path: str
    mask: int  # event mask with IN_ONESHOT / IN_EXCL_UNLINK as the kernel keeps them
    dev: int  # st_dev of the watched inode (user-space encoding)
    ino: int
    handle_type: int  # its file handle: inode and generation, so a reused inode
    handle: bytes  # number is still told apart


@record(99, scope="image")
@dataclass
class InotifyRecord:
    id: int
    flags: int  # O_NONBLOCK and access mode (no O_CLOEXEC)
    watches: list[InotifyWatch]


def _mount_dirs(ctx: DumpContext, pid: int, dev: int) -> list[str]:
    """Directories (reachable from pyckpt) where a file system of `dev` is mounted,
    whole-file-system mounts first (mountinfo, read once per dump)."""
    found = [(m.root != "/", f"/proc/{pid}/root" + m.mount_point) for m in ctx.tables.mountinfo(pid)
             if (m.major, m.minor) == (os.major(dev), os.minor(dev))]
    return [d for _, d in sorted(found)]


def _path_by_handle(ctx: DumpContext, pid: int, fd: int, w: FdinfoWatch) -> str:
    what = f"process {pid}: fd {fd} (inotify) watches inode {w.ino} on device " \
           f"{os.major(w.dev)}:{os.minor(w.dev)} (wd {w.wd})"
    if w.handle is None:
        raise UnsupportedError(f"{what}, but the kernel gives no file handle for it; pyckpt "
                               "cannot find its path — remove that watch in the target", pid=pid)
    buf = ctypes.create_string_buffer(struct.pack("<Ii", len(w.handle), w.handle_type) + w.handle)
    last = "no mount of that file system is visible"
    for d in _mount_dirs(ctx, pid, w.dev):
        try:
            mfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            last = f"{d}: {e.strerror}"
            continue
        try:
            r = _libc.open_by_handle_at(mfd, buf, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
            if r < 0:
                last = f"open_by_handle_at: {os.strerror(ctypes.get_errno())}"
                continue
            try:
                st = os.fstat(r)
                path = os.readlink(f"/proc/self/fd/{r}")
            finally:
                os.close(r)
        finally:
            os.close(mfd)
        if (st.st_dev, st.st_ino) != (w.dev, w.ino):
            last = f"the handle led to another inode ({path})"
            continue
        if path.endswith(" (deleted)") or not path.startswith("/"):
            raise UnsupportedError(f"{what}, which is deleted or unreachable ({path}); pyckpt "
                                   "cannot watch it again — remove that watch in the target", pid=pid)
        return path
    raise UnsupportedError(f"{what}; pyckpt cannot find its path ({last})", pid=pid)


def _queued_bytes(pid: int, fd: int) -> int:
    """Bytes of events waiting in the target's inotify fd (FIONREAD on a pidfd_getfd copy)."""
    copy = take_fd(pid, fd)
    try:
        buf = bytearray(4)
        fcntl.ioctl(copy, termios.FIONREAD, buf)
        return int.from_bytes(buf, "little")
    finally:
        os.close(copy)


@file_kind
class Inotify(FileKind):
    name = "inotify"
    records = (InotifyRecord,)

    def claims(self, f: DumpedFd) -> bool:
        return f.link == "anon_inode:inotify"

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        if f.info.flags & os.O_ASYNC:  # its signal owner (F_SETOWN) is not saved
            raise UnsupportedFdError(f.pid, f.fd, "inotify with O_ASYNC (signal-driven I/O)", f.link)
        queued = _queued_bytes(f.pid, f.fd)
        if queued:
            raise UnsupportedError(
                f"process {f.pid}: fd {f.fd} (inotify) has {queued} bytes of events queued that "
                "it has not read yet; pyckpt cannot save them without taking them from the "
                "process — let it read its events and dump again", pid=f.pid)
        text = read_fdinfo_text(f.pid, f.fd)
        watches = [InotifyWatch(w.wd, _path_by_handle(ctx, f.pid, f.fd, w), w.mask, w.dev, w.ino,
                                w.handle_type, w.handle)
                   for w in sorted(parse_watches(text), key=lambda w: w.wd)]
        return [InotifyRecord(file_id, f.info.flags & ~os.O_CLOEXEC, watches)]

    def open(self, rctx: RestoreContext, rec: InotifyRecord) -> int:
        for w in rec.watches:
            _check_watched(rctx, w)
        fd = _libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        try:
            _add_watches(rctx, fd, rec.watches)
            fcntl.fcntl(fd, fcntl.F_SETFL, rec.flags)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def describe(self, rec: InotifyRecord) -> str:
        return "inotify " + ", ".join(f"wd {w.wd} {w.path} mask {w.mask:#x}" for w in rec.watches)


def _check_watched(rctx: RestoreContext, w: InotifyWatch) -> None:
    try:
        st = os.stat(w.path, follow_symlinks=False)
    except FileNotFoundError:
        raise FileChangedError(w.path, f"it no longer exists; an inotify watch (wd {w.wd}) "
                                       "was on it") from None
    except OSError as e:
        raise FileChangedError(w.path, f"it cannot be watched again (wd {w.wd}): {e.strerror}") \
            from None
    if rctx.options.allows_changed(w.path):
        return
    if (st.st_dev, st.st_ino) != (w.dev, w.ino):
        why = f"device/inode {st.st_dev}/{st.st_ino}, was {w.dev}/{w.ino}"
    elif _handle_differs(w):
        why = "same inode number, but another generation: it was deleted and made again"
    else:
        return
    raise needs(FileChangedError(w.path, f"it is another file now ({why}); an inotify watch (wd {w.wd}) "
                                         "was on it — restore with allow_changed_files to watch the new one"),
                Fix("allow_changed_files"))


def _handle_differs(w: InotifyWatch) -> bool:
    """Whether the file handle of `w.path` (not following a last symlink) is not
    the dumped one; False when the file system cannot say.  AT_HANDLE_FID asks
    for the same encoding fdinfo shows."""
    size = max(len(w.handle), 128)
    for flags in (AT_HANDLE_FID, 0):
        buf = ctypes.create_string_buffer(struct.pack("<Ii", size, 0) + bytes(size))
        mount_id = ctypes.c_int()
        if _libc.name_to_handle_at(AT_FDCWD, os.fsencode(w.path), buf, ctypes.byref(mount_id),
                                   flags) == 0:
            nbytes, htype = struct.unpack_from("<Ii", buf.raw)
            if htype == w.handle_type:
                return buf.raw[8:8 + nbytes] != w.handle
    return False


def _add_watch(fd: int, path: str, mask: int) -> int:
    wd = _libc.inotify_add_watch(fd, os.fsencode(path), mask)
    if wd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"inotify_add_watch({path!r}, {mask:#x}): {os.strerror(err)}")
    return wd


def _burn_wd(rctx: RestoreContext, fd: int) -> int:
    """Use up the next wd: add a throwaway watch, remove it, read its IN_IGNORED away."""
    for spare in (str(rctx.image.path), "/", "/proc/self"):
        try:
            wd = _add_watch(fd, spare, IN_DELETE_SELF | IN_MASK_CREATE | IN_DONT_FOLLOW)
        except OSError as e:
            if e.errno == errno.EEXIST:  # watched for real: try another
                continue
            raise
        if _libc.inotify_rm_watch(fd, wd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_rm_watch({wd}): {os.strerror(err)}")
        while True:
            try:
                os.read(fd, 4096)
            except BlockingIOError:
                break
        return wd
    raise RestoreError("no spare path to skip an inotify watch number with")


def _add_watches(rctx: RestoreContext, fd: int, watches: list[InotifyWatch]) -> None:
    last = 0
    for w in sorted(watches, key=lambda w: w.wd):
        if w.wd - last > MAX_SKIPPED_WDS:
            raise RestoreError(f"inotify watch {w.wd} ({w.path}) lies {w.wd - last} numbers "
                               "past the previous one; pyckpt does not walk gaps that wide")
        while last < w.wd - 1:
            got = _burn_wd(rctx, fd)
            if got <= last:
                break  # numbers wrapped or are not handed out in order: caught below
            last = got
        got = _add_watch(fd, w.path, w.mask | IN_DONT_FOLLOW)
        if got != w.wd:
            raise RestoreError(f"inotify watch on {w.path} came back as wd {got}, not {w.wd} as "
                               "dumped; the kernel did not hand out watch numbers in order")
        last = got
