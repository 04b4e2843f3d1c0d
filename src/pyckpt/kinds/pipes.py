"""Pipes and named FIFOs: the pipe (its size and unread data) and each open end.

Objref: the pipe itself is saved once, as a `PipeRecord` keyed by its inode
(`("pipe", st_dev, st_ino)` in `ctx.objects`); every open file description
of it — a read end, a write end, a FIFO opened by path — is its own record
naming the pipe's id and keeping its access mode and status flags
(O_NONBLOCK, O_DIRECT...).  fds sharing one description (dup) are already
folded into one description by the fd table (kcmp).

Unread data is copied without consuming it: pyckpt takes a readable
description of the pipe (a `pidfd_getfd` copy of one the target holds, or
else a new read end opened through /proc/PID/fd/N), `tee()`s it into a
scratch pipe resized to the source's F_GETPIPE_SZ first (tee copies buffer
slots: a smaller scratch pipe would take only part), and reads the scratch
pipe.  The data goes to the page store (padded to a page, checksummed).

At restore a pipe is built once in pyckpt: `pipe2`, F_SETPIPE_SZ, the data
written back before the task exists (the pipe keeps it), and the ends handed
out from that same pipe — the first description of each end is the one
pipe2 made, any further description of that end is a new open of the same
pipe through /proc/self/fd.  A named FIFO is opened by path (O_RDWR first,
which never blocks and keeps the pipe alive while its data is written), then
each description is reopened with its own access mode and flags.

A pipe end whose other end is not in the image (stdout piped to the parent
that started the process) is external: see files.ExternalFileRecord.  But
when nobody holds the other end any more — the writer exited (poll on the
read end says POLLHUP: the pipe has no writer left anywhere), or the reader
did (POLLERR on a write end) — the pipe is the image's alone: it is saved
like a pipe with both ends inside, and at restore re-created with its unread
data and no writer (the reader gets the data, then EOF), or with no reader
(a write fails with EPIPE, and SIGPIPE).  The end pyckpt made for it is
closed with the other passed fds before the process runs.

Limits: a process outside the image that also holds an end of a pipe the
image restores is not detected (it keeps the old pipe); a FIFO opened
while deleted, and O_PATH handles of FIFOs, are refused.  When the target
holds only write ends of a FIFO, dump opens a read end for a moment (a
writer blocked in open() elsewhere may then proceed).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import stat
import termios

from .._dataclass import dataclass, field

from ..arch import libc as _libc
from ..errors import DumpError, FileChangedError, RestoreError
from ..image import padded, record
from ..problems import Fix, needs
from ..proc import parse_fdinfo
from .context import DumpContext, RestoreContext
from .fileid import FileIdentity, check_same, identify
from .files import DumpedFd, ExternalFileRecord, FileKind, file_kind, set_status_flags, take_fd

F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
SPLICE_F_NONBLOCK = 0x02
O_ACCMODE = 3
O_CLOEXEC = os.O_CLOEXEC
O_DIRECT = os.O_DIRECT  # packet mode on a pipe
O_PATH = getattr(os, "O_PATH", 0o10000000)  # a handle, not an open pipe end
# Status flags F_SETFL can change on a pipe description.
SETTABLE_FLAGS = os.O_NONBLOCK | os.O_APPEND | O_DIRECT | getattr(os, "O_ASYNC", 0o20000) | os.O_NOATIME
END_OF_MODE = {os.O_RDONLY: "read end", os.O_WRONLY: "write end", os.O_RDWR: "read-write"}


@record(70, scope="image")
@dataclass
class PipeRecord:
    """The pipe object, saved once however many descriptions refer to it."""

    id: int
    ino: int
    size: int  # F_GETPIPE_SZ
    length: int  # unread bytes
    offset: int  # in pages.img (padded to a page); 0 when length is 0
    xxh3: int
    # Packet mode (O_DIRECT writers): the length of each unread packet, in
    # order; empty for an ordinary byte stream.
    packets: list[int] = field(default_factory=list)
    fifo: FileIdentity | None = None  # a named FIFO: where it lives

    def stored_runs(self) -> list[tuple[int, int, int]]:
        if not self.length:
            return []
        return [(self.offset, padded(self.length), self.xxh3)]


@record(71, scope="image")
@dataclass
class PipeEndRecord:
    """One open file description of an anonymous pipe."""

    id: int
    pipe_id: int
    flags: int  # access mode (the end) and status flags, without O_CLOEXEC
    ino: int  # the pipe's inode and unread bytes: only for `pyckpt show`
    unread: int


@record(72, scope="image")
@dataclass
class FifoRecord:
    """One open file description of a named FIFO, reopened by path."""

    id: int
    pipe_id: int
    flags: int
    file: FileIdentity
    unread: int  # for `pyckpt show`


def _end(flags: int) -> str:
    return END_OF_MODE.get(flags & O_ACCMODE, "end")


# --- dump ---------------------------------------------------------------------


def ends_in_image(ctx: DumpContext) -> dict[tuple[int, int], set[int]]:
    """(st_dev, st_ino) of every pipe or FIFO the image holds -> access modes held.

    The one place that decides whether a pipe is inside the image: the fds of
    every process of the image (a tree's members).  Computed once per dump.
    """
    cached = ctx.objects.get("pipe ends in image")
    if cached is not None:
        return cached
    held: dict[tuple[int, int], set[int]] = {}
    for pid in ctx.tree or [ctx.pid]:
        for fd, st in ctx.tables.fd_stats(pid).items():
            if not stat.S_ISFIFO(st.st_mode):
                continue
            try:
                flags = parse_fdinfo(ctx.tables.fdinfo_text(pid, fd)).flags
            except FileNotFoundError:
                continue
            if flags & O_PATH:
                continue
            held.setdefault((st.st_dev, st.st_ino), set()).add(flags & O_ACCMODE)
    ctx.objects["pipe ends in image"] = held
    return held


def _has_both_ends(modes: set[int]) -> bool:
    return os.O_RDWR in modes or {os.O_RDONLY, os.O_WRONLY} <= modes


def _other_end_gone(f: DumpedFd) -> bool:
    """Whether nobody at all holds the other end of f's pipe (f a read or write end):
    poll on the target's own description (a copy of it; nothing read or written)
    says POLLHUP on a read end with no writer left, POLLERR on a write end with no
    reader."""
    mode = f.info.flags & O_ACCMODE
    if mode == os.O_RDWR:
        return False
    copy = take_fd(f.pid, f.fd)
    try:
        p = select.poll()
        p.register(copy, 0)  # POLLHUP and POLLERR are always reported
        events = dict(p.poll(0)).get(copy, 0)
    finally:
        os.close(copy)
    return bool(events & (select.POLLHUP if mode == os.O_RDONLY else select.POLLERR))


def _readable_copy(ctx: DumpContext, f: DumpedFd) -> int:
    """A readable description of f's pipe in pyckpt, without consuming anything.

    A description the target already reads from is copied with pidfd_getfd
    (the same description: no reader is added).  Otherwise (the target holds
    only write ends of a FIFO) a new read end is opened through the magic
    link, non-blocking.
    """
    key = (f.st.st_dev, f.st.st_ino)
    for fd, st in ctx.tables.fd_stats(ctx.pid).items():
        if (st.st_dev, st.st_ino) != key:
            continue
        try:
            flags = parse_fdinfo(ctx.tables.fdinfo_text(ctx.pid, fd)).flags
            if flags & O_PATH or flags & O_ACCMODE == os.O_WRONLY:
                continue
        except FileNotFoundError:
            continue
        return take_fd(ctx.pid, fd)
    return os.open(f.proc_path, os.O_RDONLY | os.O_NONBLOCK | O_CLOEXEC)


def _fionread(fd: int) -> int:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little", signed=True)


def copy_unread(src: int, what: str) -> tuple[int, bytes, list[int]]:
    """(size, unread data, packet lengths) of the pipe readable as `src`, left unread."""
    size = fcntl.fcntl(src, F_GETPIPE_SZ)
    want = _fionread(src)
    if want == 0:
        return size, b"", []
    r, w = os.pipe2(O_CLOEXEC | os.O_NONBLOCK)
    try:
        if fcntl.fcntl(r, F_GETPIPE_SZ) < size:
            fcntl.fcntl(r, F_SETPIPE_SZ, size)
        n = _libc.tee(src, w, want, SPLICE_F_NONBLOCK)
        if n < 0:
            err = ctypes.get_errno()
            raise DumpError(f"{what}: tee of its {want} unread bytes failed: {os.strerror(err)}")
        if n != want:
            raise DumpError(f"{what}: tee copied {n} of its {want} unread bytes; "
                            "its data cannot be saved")
        os.close(w)
        w = -1
        chunks = []
        while True:
            try:
                chunk = os.read(r, want)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    data = b"".join(chunks)
    if len(data) != want:
        raise DumpError(f"{what}: read {len(data)} of its {want} unread bytes back from a copy")
    # A read returns at most one packet of a packet-mode pipe, and everything
    # available otherwise: more than one chunk means packet boundaries.
    packets = [len(c) for c in chunks] if len(chunks) > 1 else []
    return size, data, packets


def _dump_pipe(ctx: DumpContext, f: DumpedFd, fifo: FileIdentity | None) -> tuple[list, PipeRecord]:
    """The pipe behind f: ([its record] the first time it is met, [] after), and the record."""
    key = ("pipe", f.st.st_dev, f.st.st_ino)
    saved = ctx.objects.setdefault("pipe records", {})  # the image's, shared by its processes
    if key in ctx.objects:
        return [], saved[ctx.objects[key]]
    what = f"process {ctx.pid}: fd {f.fd} ({f.link})"
    src = _readable_copy(ctx, f)
    try:
        size, data, packets = copy_unread(src, what)
    finally:
        os.close(src)
    offset = digest = 0
    if data:
        offset, digest = ctx.pages.append(data + bytes(padded(len(data)) - len(data)))
    pipe_id = len(ctx.objects) + 1
    while pipe_id in saved:
        pipe_id += 1
    rec = PipeRecord(pipe_id, f.st.st_ino, size, len(data), offset, digest, packets, fifo)
    ctx.objects[key] = pipe_id
    saved[pipe_id] = rec
    return [rec], rec


@file_kind
class Pipe(FileKind):
    """An anonymous pipe end; external when the image does not hold the other end."""

    name = "pipe"
    records = (PipeEndRecord,)

    def claims(self, f: DumpedFd) -> bool:
        return (stat.S_ISFIFO(f.st.st_mode) and f.link.startswith("pipe:")
                and not f.info.flags & O_PATH)

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        flags = f.info.flags & ~O_CLOEXEC
        modes = ends_in_image(ctx).get((f.st.st_dev, f.st.st_ino), set())
        if not _has_both_ends(modes) and not _other_end_gone(f):
            other = "read end" if flags & O_ACCMODE == os.O_WRONLY else "write end"
            return [ExternalFileRecord(
                file_id, f"{f.link} ({_end(flags)}; its {other} is held outside the image)", flags)]
        pipe_recs, pipe = _dump_pipe(ctx, f, None)
        return [PipeEndRecord(file_id, pipe.id, flags, pipe.ino, pipe.length)] + pipe_recs

    def open(self, rctx: RestoreContext, rec: PipeEndRecord) -> int:
        pipe = _pipe_record(rctx, rec.pipe_id)
        r, w = _anonymous_pipe(rctx, pipe)
        mode = rec.flags & O_ACCMODE
        if _is_first_description(rctx, rec, PipeEndRecord) and mode != os.O_RDWR:
            fd = os.dup(r if mode == os.O_RDONLY else w)
        else:
            fd = os.open(f"/proc/self/fd/{r}", mode | os.O_NONBLOCK | O_CLOEXEC)
        return _set_flags(fd, rec.flags)

    def describe(self, rec: PipeEndRecord) -> str:
        return f"pipe:[{rec.ino}] {_end(rec.flags)}, {rec.unread} bytes unread"


@file_kind
class Fifo(FileKind):
    """A named FIFO, reopened by path; its unread data is saved like a pipe's."""

    name = "fifo"
    records = (FifoRecord,)

    def claims(self, f: DumpedFd) -> bool:
        return (stat.S_ISFIFO(f.st.st_mode) and f.link.startswith("/")
                and not f.link.endswith(" (deleted)") and not f.info.flags & O_PATH)

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        ident = identify(f.link, f.proc_path)
        pipe_recs, pipe = _dump_pipe(ctx, f, ident)
        return [FifoRecord(file_id, pipe.id, f.info.flags & ~O_CLOEXEC, ident, pipe.length)] + pipe_recs

    def open(self, rctx: RestoreContext, rec: FifoRecord) -> int:
        holder = _fifo_holder(rctx, _pipe_record(rctx, rec.pipe_id))
        fd = os.open(f"/proc/self/fd/{holder}", (rec.flags & O_ACCMODE) | os.O_NONBLOCK | O_CLOEXEC)
        return _set_flags(fd, rec.flags)

    def describe(self, rec: FifoRecord) -> str:
        return f"fifo {rec.file.path} {_end(rec.flags)}, {rec.unread} bytes unread"


# --- restore ------------------------------------------------------------------


def _pipe_record(rctx: RestoreContext, pipe_id: int) -> PipeRecord:
    for p in rctx.image.of_type(PipeRecord):
        if p.id == pipe_id:
            return p
    raise RestoreError(f"image at {rctx.image.path}: no pipe #{pipe_id}, which a pipe end refers to "
                       "(damaged image)")


def _is_first_description(rctx: RestoreContext, rec, cls) -> bool:
    """True for the first description of its end (same access mode) of its pipe in the image."""
    for other in rctx.image.of_type(cls):
        if other.pipe_id == rec.pipe_id and other.flags & O_ACCMODE == rec.flags & O_ACCMODE:
            return other is rec
    return False


def _set_flags(fd: int, flags: int) -> int:
    return set_status_flags(fd, flags, SETTABLE_FLAGS)


def _anonymous_pipe(rctx: RestoreContext, pipe: PipeRecord) -> tuple[int, int]:
    """The new pipe for `pipe` (made once per restore), as (read end, write end) in pyckpt.

    Both ends are kept in rctx.passed, so they are closed with the other
    passed fds when restore ends, whether it succeeds or not.
    """
    keys = (("pipe", pipe.id, "read"), ("pipe", pipe.id, "write"))
    if keys[0] not in rctx.passed:
        r, w = os.pipe2(O_CLOEXEC | os.O_NONBLOCK)
        try:
            _fill(rctx, pipe, w, f"pipe:[{pipe.ino}]")
        except BaseException:
            os.close(r)
            os.close(w)
            raise
        rctx.pass_fd(keys[1], lambda: w)
        rctx.pass_fd(keys[0], lambda: r)
    return rctx.passed[keys[0]], rctx.passed[keys[1]]


def _fifo_holder(rctx: RestoreContext, pipe: PipeRecord) -> int:
    """An O_RDWR description of the FIFO (opened once): keeps the pipe and its data alive."""
    key = ("fifo", pipe.id)
    if key not in rctx.passed:
        ident = pipe.fifo
        if ident is None:
            raise RestoreError(f"image at {rctx.image.path}: pipe #{pipe.id} is not a FIFO "
                               "(damaged image)")
        rctx.pass_fd(key, lambda: _open_fifo(rctx, pipe, ident))
    return rctx.passed[key]


def _open_fifo(rctx: RestoreContext, pipe: PipeRecord, ident: FileIdentity) -> int:
    path = ident.path
    try:
        # O_RDWR never blocks on a FIFO (Linux) and counts as reader and writer.
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | O_CLOEXEC)
    except FileNotFoundError:
        raise FileChangedError(path, "the FIFO no longer exists") from None
    except OSError as e:
        raise FileChangedError(path, f"the FIFO cannot be opened: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISFIFO(st.st_mode):
            raise FileChangedError(path, "it is no longer a FIFO")
        if not rctx.options.allows_changed(path):
            try:
                check_same(ident, fd, content=False)
            except FileChangedError as e:
                raise needs(e, Fix("allow_changed_files")) from None
        waiting = _fionread(fd)
        if waiting and pipe.length:
            raise FileChangedError(
                path, f"the FIFO already holds {waiting} unread bytes (another process has it "
                f"open); the {pipe.length} bytes of the dump would be mixed with them")
        if not rctx.checking:  # a check puts nothing into a FIFO others may read
            _fill(rctx, pipe, fd, f"FIFO {path}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fill(rctx: RestoreContext, pipe: PipeRecord, w: int, what: str) -> None:
    """Size the pipe writable as non-blocking `w` and write its saved data into it."""
    try:
        if fcntl.fcntl(w, F_GETPIPE_SZ) != pipe.size:
            fcntl.fcntl(w, F_SETPIPE_SZ, pipe.size)
    except OSError as e:
        raise RestoreError(f"{what}: cannot make the pipe {pipe.size} bytes big as it was "
                           f"({e.strerror}; see /proc/sys/fs/pipe-max-size)") from None
    if not pipe.length:
        return
    data = rctx.image.read_blob(pipe.offset, pipe.length, what)
    flags = fcntl.fcntl(w, fcntl.F_GETFL)
    if pipe.packets:
        if sum(pipe.packets) != pipe.length:
            raise RestoreError(f"image at {rctx.image.path}: the packets of {what} do not add up "
                               "(damaged image)")
        fcntl.fcntl(w, fcntl.F_SETFL, flags | O_DIRECT)
        chunks, pos = [], 0
        for n in pipe.packets:
            chunks.append(data[pos:pos + n])
            pos += n
    else:
        chunks = [data]
    try:
        for chunk in chunks:
            done = 0
            while done < len(chunk):
                try:
                    done += os.write(w, chunk[done:])
                except BlockingIOError:
                    raise RestoreError(f"{what}: only {done} of {len(chunk)} bytes of its saved data "
                                       "fit back into it") from None
    finally:
        fcntl.fcntl(w, fcntl.F_SETFL, flags)
