"""The fd table, the objref table of open file descriptions, and the file-kind registry.

The fd table and the open file descriptions behind it are kept apart, as
the objref rule wants: each `FdRecord` names a descriptor number, its
close-on-exec flag and the id of its description; a description is saved
once, by the module of its kind, under that id.  Two fds share a
description when the kernel says so (kcmp KCMP_FILE), never because their
paths match.

Each kind of file is a `FileKind` subclass registered with `@file_kind` in
its own module under kinds/: it says which fds it claims, dumps a
description into records, and at restore opens an equivalent description
*in pyckpt*, which the new task inherits (see RestoreContext.pass_fd) and
dup3s to every fd number that had it.  Work that needs the task's whole fd
table (epoll items, POSIX locks) is queued on `rctx.deferred`.  Adding a
kind touches no orchestration.

A description pyckpt cannot re-create because it belongs to something
outside the image (a terminal, a pipe whose other end is another process's)
is saved as an `ExternalFileRecord`; at restore the user supplies a
replacement fd (`fds={1: f}`), asks for pyckpt's own stdio
(`inherit_stdio=True`), or gets a clear `RestoreError`.  Nothing is dropped
silently.  Any other fd is refused at dump time with an error naming the
fd, its kind and the process.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
from dataclasses import dataclass

from ..errors import RestoreError, UnsupportedFdError
from ..image import record
from ..inject import nr
from ..proc import FdInfo, read_fdinfo
from .context import DumpContext, RestoreContext

SYS_kcmp, KCMP_FILE = 312, 0
O_CLOEXEC = os.O_CLOEXEC
O_ACCMODE = 3
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@record(61)
@dataclass
class FdRecord:
    PER_PROCESS = True  # one per process of the image
    fd: int
    file_id: int
    cloexec: bool


@record(62)
@dataclass
class ExternalFileRecord:
    """A description that belongs to something outside the image."""

    id: int
    what: str  # e.g. "terminal /dev/pts/3", "pipe:[1234] (write end)"
    flags: int


@dataclass
class DumpedFd:
    """What the fd table knows about one fd when a kind dumps its description."""

    pid: int
    fd: int
    link: str  # readlink of /proc/PID/fd/N: a path, "pipe:[ino]", "anon_inode:[eventfd]"...
    st: os.stat_result  # stat through the magic link
    info: FdInfo

    @property
    def proc_path(self) -> str:
        return f"/proc/{self.pid}/fd/{self.fd}"


class FileKind:
    """One kind of open file.  Subclass, set `records`, register with @file_kind."""

    name = "file"
    records: tuple[type, ...] = ()  # description record types this kind restores
    priority = 100  # lower claims first

    def claims(self, f: DumpedFd) -> bool:
        raise NotImplementedError

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        """Records for the description of `f`; the first has `.id == file_id`."""
        raise NotImplementedError

    def open(self, rctx: RestoreContext, rec) -> int:
        """A new fd in pyckpt holding an equivalent description."""
        raise NotImplementedError

    def describe(self, rec) -> str:
        """Short text for `pyckpt show`."""
        return self.name


FILE_KINDS: list[FileKind] = []


class TableHook:
    """State that hangs off the whole fd table (file locks, ...): dumped after
    every description is known, restored from `prepare` (usually by queueing
    deferred steps that run in the task once all its fds exist)."""

    def dump(self, ctx: DumpContext, table: list) -> list:
        """Extra records, given the table's records (descriptions and FdRecords)."""
        return []

    def prepare(self, rctx: RestoreContext) -> None:
        pass


TABLE_HOOKS: list[TableHook] = []


def table_hook(cls):
    TABLE_HOOKS.append(cls())
    return cls


def file_kind(cls):
    FILE_KINDS.append(cls())
    FILE_KINDS.sort(key=lambda k: k.priority)
    return cls


def kind_of_record(rec) -> FileKind | None:
    for k in FILE_KINDS:
        if isinstance(rec, k.records):
            return k
    return None


def description_records(image) -> list:
    """Every description record of the image (any kind, whichever process saved it),
    in image order."""
    everything = getattr(image, "reader", image).records
    return [r for r in everything if isinstance(r, ExternalFileRecord) or kind_of_record(r)]


def same_description(pid1: int, fd1: int, pid2: int, fd2: int) -> bool:
    """Whether fd1 of pid1 and fd2 of pid2 are one open file description (kcmp)."""
    r = _libc.syscall(SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2)
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"kcmp({pid1} fd {fd1}, {pid2} fd {fd2}): {os.strerror(err)}")
    return r == 0


SYS_pidfd_getfd = 438


def take_fd(pid: int, fd: int) -> int:
    """A copy in pyckpt of fd `fd` of process `pid` (pidfd_getfd): the same open
    file description, so reading its state needs no new open — and anything
    done to the description (flags, offsets) is done to the target's."""
    pidfd = os.pidfd_open(pid)
    try:
        copy = _libc.syscall(SYS_pidfd_getfd, pidfd, fd, 0)
        if copy < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd of fd {fd} of process {pid}: {os.strerror(err)}")
    finally:
        os.close(pidfd)
    return copy


def set_status_flags(fd: int, flags: int, settable: int) -> int:
    """F_SETFL the dumped status flags (those of `settable`) on a new fd; closes it on failure."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & settable)
    except BaseException:
        os.close(fd)
        raise
    return fd


def kind_in_words(f: DumpedFd) -> str:
    """The fd's kind in words, for a refusal."""
    mode = f.st.st_mode
    if stat.S_ISCHR(mode):
        return "terminal or character device"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "pipe" if f.link.startswith("pipe:") else "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if f.link.startswith("anon_inode:"):
        return f.link[len("anon_inode:"):].strip("[]") + " (anon inode)"
    if stat.S_ISREG(mode) and f.link.endswith(" (deleted)"):
        return "deleted file"
    return "special file"


def dump(ctx: DumpContext) -> list:
    pid = ctx.pid
    descriptions: list = []
    fds: list[FdRecord] = []
    # The objref table is the whole image's: a description shared by processes
    # of a tree (inherited across fork) is saved once, by its first holder.
    table = ctx.objects.setdefault("fd table", {"next_id": 1, "owners": {}})
    owners = table["owners"]  # (dev, ino) -> [(pid, fd, file id)]
    for fd in sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd")):
        link = f"/proc/{pid}/fd/{fd}"
        f = DumpedFd(pid, fd, os.readlink(link), os.stat(link), read_fdinfo(pid, fd))
        file_id = None
        for other_pid, other_fd, other_id in owners.get((f.st.st_dev, f.st.st_ino), []):
            if same_description(pid, fd, other_pid, other_fd):
                file_id = other_id
                break
        if file_id is None:
            kind = next((k for k in FILE_KINDS if k.claims(f)), None)
            if kind is None:
                raise UnsupportedFdError(pid, fd, kind_in_words(f), f.link)
            file_id = table["next_id"]
            table["next_id"] += 1
            recs = kind.dump(ctx, f, file_id)
            assert recs and recs[0].id == file_id
            descriptions += recs
            owners.setdefault((f.st.st_dev, f.st.st_ino), []).append((pid, fd, file_id))
        fds.append(FdRecord(fd, file_id, bool(f.info.flags & O_CLOEXEC)))
    table = descriptions + fds
    for hook in TABLE_HOOKS:
        table += hook.dump(ctx, table)
    return table


def highest_fd(image) -> int:
    return max((r.fd for r in image.of_type(FdRecord)), default=-1)


def _replacement(rctx: RestoreContext, r: FdRecord, ext: ExternalFileRecord) -> int:
    opts = rctx.options
    if r.fd in opts.fds:
        return os.dup(opts.fds[r.fd])
    if opts.inherit_stdio and r.fd in (0, 1, 2):
        return os.dup(r.fd)
    raise RestoreError(
        f"fd {r.fd} of process {rctx.pid} was {ext.what}, outside the image; pass a "
        f"replacement (restore(..., fds={{{r.fd}: f}}) or --fd {r.fd}=PATH), or use "
        "inherit_stdio=True / --inherit-stdio for fds 0-2"
    )


def prepare(rctx: RestoreContext) -> None:
    """Open every description of this process in pyckpt (checked against the dump) for
    the new task; one shared by processes of a tree is opened once (the first
    process to prepare it opens it; all inherit it)."""
    mine = {r.file_id for r in rctx.image.of_type(FdRecord)}
    for rec in description_records(rctx.image):
        if rec.id not in mine:
            continue
        if isinstance(rec, ExternalFileRecord):
            for r in rctx.image.of_type(FdRecord):
                if r.file_id == rec.id:
                    rctx.pass_fd(("fd", rctx.image_pid, r.fd), lambda r=r, rec=rec: _replacement(rctx, r, rec))
            continue
        kind = kind_of_record(rec)
        rctx.pass_fd(("file", rec.id), lambda kind=kind, rec=rec: kind.open(rctx, rec))
    for hook in TABLE_HOOKS:
        hook.prepare(rctx)


def restore(rctx: RestoreContext) -> None:
    for r in rctx.image.of_type(FdRecord):
        src = rctx.passed.get(("fd", rctx.image_pid, r.fd), rctx.passed.get(("file", r.file_id)))
        rctx.inj.check(nr.dup3, src, r.fd, O_CLOEXEC if r.cloexec else 0,
                       what=f"dup3 to fd {r.fd}")


def summary(image) -> list[dict]:
    """Every fd with its kind, description and sharing, for `pyckpt show`."""
    descs = {d.id: d for d in description_records(image)}
    sharing: dict[int, list[int]] = {}
    fds = image.of_type(FdRecord)
    for r in fds:
        sharing.setdefault(r.file_id, []).append(r.fd)
    out = []
    for r in fds:
        d = descs[r.file_id]
        kind = kind_of_record(d)
        out.append({
            "fd": r.fd,
            "kind": "external" if kind is None else getattr(d, "kind", kind.name),
            "what": d.what if kind is None else kind.describe(d),
            "path": d.file.path if hasattr(d, "file") else None,
            "flags": getattr(d, "flags", 0),
            "pos": getattr(d, "pos", None),
            "cloexec": r.cloexec,
            "file_id": r.file_id,
            "shared_with": [x for x in sharing[r.file_id] if x != r.fd],
        })
    return out


def validate(image) -> None:
    """fd numbers valid and unique; every fd names a saved description; ids unique."""
    from ..errors import ImageError

    ids = [d.id for d in description_records(image)]
    if len(ids) != len(set(ids)):
        raise ImageError(f"image at {image.path}: two file descriptions share an id")
    seen: set[int] = set()
    for r in image.of_type(FdRecord):
        if not 0 <= r.fd < (1 << 20) or r.fd in seen:
            raise ImageError(f"image at {image.path}: fd {r.fd} is invalid or listed twice")
        seen.add(r.fd)
        if r.file_id not in ids:
            raise ImageError(f"image at {image.path}: fd {r.fd} refers to a missing file #{r.file_id}")
