"""Deleted-but-open regular files: their content travels in the image.

A file the process still holds after it was unlinked (readlink of the fd
ends with " (deleted)" and it has no links left) cannot be reopened by path.
Its content is read at dump time through a copy opened from
/proc/PID/fd/N (pread: the target's offset does not move), stored in the
page store, and saved ONCE per file (objref by device and inode) as a
`DeletedContentRecord`; every open file description of it is a small
`DeletedFileRecord` with its own flags and offset that names the content.
Files larger than `max_deleted_size` (DumpOptions) are refused.

Restore re-creates the file next to where it was (its original name when
that is free, so /proc/PID/fd shows what it showed before; else a unique
hidden name `.NAME.pyckpt-XXXX` in the same directory), or in
`deleted_dir`, unlinks it AT ONCE, then writes the content into the
nameless file, sets its mode, owner and times.  Every description is then
opened through /proc/self/fd of that one copy, so all descriptions share
one file again and it is deleted-but-open again before the task exists.
The name lives for the microseconds between open(O_CREAT|O_EXCL) and
unlink: a failed restore never leaves it behind.

Memory mappings of a deleted file (a library replaced by an upgrade, a
file mapped and then removed) map that same re-created file
(`DeletedMapping`, registered with memory.mapped_object); the file is saved
from /proc/PID/map_files when no fd holds it.

A file whose name was removed but that still has a link elsewhere is not
deleted: "PATH (deleted)" with a link count above zero (a POSIX semaphore
or shared memory object glibc created under a temporary name, a file
renamed by link and unlink).  When another name of it is in the same
directory, its fds (`LinkedElsewhere`) and mappings (memory.linked_name) are
saved as that name, reopened and checked as any file; when none is there
(pyckpt does not search the whole file system) it is refused, saying so.

Holes are found with SEEK_DATA/SEEK_HOLE and stay holes.  The content
helpers (`check_size`, `store_content`, `write_content`,
`open_description`) are shared with memfd.py.
"""

from __future__ import annotations

import errno
import os
import stat
from .._dataclass import dataclass

from ..arch import PAGE
from ..errors import FileChangedError, ImageError, UnsupportedError
from ..image import PAGES_FILE, record
from ..problems import Fix, needs
from .context import DumpContext, RestoreContext
from .fileid import FileIdentity, identify, reopen_flags
from .files import DumpedFd, FileKind, file_kind
from .memory import MappedObject, mapped_object, other_name

CHUNK = 4 << 20  # content is read, stored and checksummed in runs of at most this
DELETED = " (deleted)"


@dataclass
class ContentRun:
    """`length` bytes of a file's content from `file_offset` on, stored at `offset`
    of pages.img (page-padded: `stored` bytes, digest over those)."""

    file_offset: int
    length: int
    offset: int
    stored: int
    xxh3: int


@record(95, scope="image")
@dataclass
class DeletedContentRecord:
    """A deleted-but-open file itself, saved once however many fds hold it."""

    id: int  # object id (DeletedFileRecord.content_id)
    path: str  # where it was, without " (deleted)"
    dev: int
    ino: int
    mode: int  # permission bits (st_mode & 0o7777)
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    runs: list[ContentRun]

    def stored_runs(self) -> list[tuple[int, int, int]]:
        return [(r.offset, r.stored, r.xxh3) for r in self.runs]


@record(96, scope="image")
@dataclass
class DeletedFileRecord:
    """One open file description of a deleted file."""

    id: int
    content_id: int
    flags: int  # access mode and status flags (no O_CLOEXEC: that is per fd)
    pos: int
    link: str  # as /proc/PID/fd showed it (for `pyckpt show`)


# --- content in the page store (shared with memfd.py) ---------------------------


def check_size(ctx: DumpContext, what: str, size: int) -> None:
    """Refuse content over max_deleted_size; `what` names it ("process P: fd N is a ...")."""
    limit = ctx.options.max_deleted_size
    if size > limit:
        raise UnsupportedError(
            f"{what} of {size} bytes, more than the {limit} bytes pyckpt keeps in an image; "
            f"raise the limit with dump(..., max_deleted_size={size}) or --max-deleted-size "
            f"{size}, or close the file in the target", pid=ctx.pid
        )


def _data_extents(fd: int, size: int):
    """(start, end) of the parts of the file that hold data (SEEK_DATA/SEEK_HOLE
    on pyckpt's own copy: the target's offset does not move)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole is left
                return
            yield pos, size  # the file system cannot tell: all of it
            return
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        pos = end


def store_content(ctx: DumpContext, fd: int, size: int, label: str = "dump file content") -> list[ContentRun]:
    """Copy `size` bytes of `fd` (pread: no offset moves) into the page store.

    Holes, and runs that read as all zeros, are not stored; restore leaves
    them as holes."""
    runs = []
    extents = list(_data_extents(fd, size))
    with ctx.progress.bar(sum(end - start for start, end in extents), label) as bar:
        for start, end in extents:
            pos = start
            while pos < end:
                want = min(CHUNK, end - pos)
                data = bytearray(os.pread(fd, want, pos))
                if len(data) < want:  # shrunk meanwhile (someone else's write): zeros
                    data += bytes(want - len(data))
                if data.count(0) != len(data):
                    data += bytes(-len(data) % PAGE)
                    offset, digest = ctx.pages.append(data)
                    runs.append(ContentRun(pos, want, offset, len(data), digest))
                pos += want
                bar.update(want)
    return runs


def write_content(rctx: RestoreContext, fd: int, size: int, runs: list[ContentRun],
                  label: str = "restore file content") -> None:
    """Fill the new, empty file `fd` with its content from the page store."""
    pages = rctx.pass_fd("pages", lambda: rctx.image.open_pages())
    with rctx.progress.bar(sum(r.length for r in runs), label) as bar:
        for r in runs:
            done = 0
            while done < r.length:
                n = min(CHUNK, r.length - done)
                data = os.pread(pages, n, r.offset + done)
                if len(data) != n:
                    raise OSError(f"short read of {PAGES_FILE} at offset {r.offset + done}")
                view = memoryview(data)
                while view:
                    w = os.pwrite(fd, view, r.file_offset + done)
                    view = view[w:]
                    done += w
                    bar.update(w)
    os.ftruncate(fd, size)


def open_description(holder: int, flags: int, pos: int) -> int:
    """A new open file description of the file `holder` is open on."""
    # (the magic link is a symlink: O_NOFOLLOW, which tempfile uses, would refuse it)
    fd = os.open(f"/proc/self/fd/{holder}", (reopen_flags(flags) & ~os.O_NOFOLLOW) | os.O_CLOEXEC)
    try:
        os.lseek(fd, pos, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


# --- the kind --------------------------------------------------------------------


def is_memfd_link(link: str) -> bool:
    return link.startswith("/memfd:") and link.endswith(DELETED)


@file_kind
class DeletedFile(FileKind):
    name = "deleted"
    records = (DeletedFileRecord,)

    def claims(self, f: DumpedFd) -> bool:
        return (stat.S_ISREG(f.st.st_mode) and f.st.st_nlink == 0 and f.link.startswith("/")
                and f.link.endswith(DELETED) and not (is_memfd_link(f.link) and f.info.mnt_id == 0))

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        content_id, recs = save_deleted(ctx, f.proc_path, f.link,
                                        f"process {f.pid}: fd {f.fd} is a deleted file ({f.link})")
        return [DeletedFileRecord(file_id, content_id, f.info.flags & ~os.O_CLOEXEC, f.info.pos,
                                  f.link)] + recs

    def open(self, rctx: RestoreContext, rec: DeletedFileRecord) -> int:
        content = _content(rctx, rec.content_id)
        holder = rctx.pass_fd(("deleted file", content.id), lambda: recreate(rctx, content))
        return open_description(holder, rec.flags, rec.pos)

    def describe(self, rec: DeletedFileRecord) -> str:
        return f"{rec.link} (content #{rec.content_id})"


@file_kind
class LinkedElsewhere(FileKind):
    """An fd whose name was removed while its file lives on under another name in
    the same directory (a POSIX shared memory object or semaphore opened by a
    temporary name, a file renamed by a hard link and unlink): not deleted, so it is
    reopened by that other name, as any file (regfile's FileRecord)."""

    name = "linked elsewhere"
    records = ()  # restored by regfile.PathFile
    before = ("deleted",)  # a deleted name whose file lives on elsewhere is not deleted
    after = ("memfd",)  # a memfd's name ends in " (deleted)" too

    def claims(self, f: DumpedFd) -> bool:
        return (stat.S_ISREG(f.st.st_mode) and f.st.st_nlink > 0 and f.link.startswith("/")
                and f.link.endswith(DELETED))

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        from .regfile import FileRecord

        other = other_name(f.proc_path, f.link)
        if other is None:
            raise UnsupportedError(
                f"process {f.pid}: fd {f.fd} is a file whose name was removed ({f.link}) but that "
                f"still has {f.st.st_nlink} link(s) under another name, not in "
                f"{os.path.dirname(f.link[: -len(DELETED)]) or '/'}; pyckpt cannot find that name to "
                "reopen it by — open the file by its name, or remove its other names", pid=f.pid)
        return [FileRecord(file_id, "regular", f.info.flags & ~os.O_CLOEXEC, f.info.pos,
                           identify(other, f.proc_path))]


def save_deleted(ctx: DumpContext, proc_path: str, link: str, what: str) -> tuple[int, list]:
    """(object id, records) of the deleted file open or mapped at `proc_path`
    (/proc/PID/fd/N or /proc/PID/map_files/A-B); its content only the first time."""
    st = os.stat(proc_path)
    key = ("deleted", st.st_dev, st.st_ino)
    if key in ctx.objects:
        return ctx.objects[key], []
    check_size(ctx, what, st.st_size)
    fd = os.open(proc_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        check_size(ctx, what, st.st_size)
        runs = store_content(ctx, fd, st.st_size)
    finally:
        os.close(fd)
    content_id = ctx.objects[key] = len(ctx.objects) + 1
    return content_id, [DeletedContentRecord(
        content_id, link[: -len(DELETED)], st.st_dev, st.st_ino, stat.S_IMODE(st.st_mode),
        st.st_uid, st.st_gid, st.st_size, st.st_atime_ns, st.st_mtime_ns, runs)]


def _visible_devices(ctx: DumpContext) -> set[int]:
    return {os.makedev(m.major, m.minor) for m in ctx.tables.mountinfo(ctx.pid)}


@mapped_object
class DeletedMapping(MappedObject):
    """Memory mappings of a deleted file (a library replaced by an upgrade...):
    they map the file re-created once for all its descriptions and mappings."""

    kind = "deleted"

    def claims_mapping(self, name: str) -> bool:
        return (name.startswith("/") and name.endswith(DELETED) and not is_memfd_link(name)
                and not name.startswith(("/SYSV", "/dev/zero ", "/[")))

    def dump_mapping(self, ctx: DumpContext, map_path: str, name: str) -> tuple[FileIdentity, list]:
        what = f"process {ctx.pid}: memory at {map_path.rsplit('/', 1)[1]} maps a deleted file ({name})"
        st = os.stat(map_path)
        if stat.S_ISREG(st.st_mode) and st.st_nlink != 0:
            # (memory.linked_name found no other name in the same directory)
            raise UnsupportedError(f"{what} whose file still has {st.st_nlink} link(s) under another "
                                   f"name, not in {os.path.dirname(name[: -len(DELETED)]) or '/'}; pyckpt "
                                   "cannot find that name to map it by — map the file by its name, or "
                                   "remove its other names", pid=ctx.pid)
        if not stat.S_ISREG(st.st_mode) or st.st_dev not in _visible_devices(ctx):
            kind = (f"not a regular file (mode {st.st_mode:o})" if not stat.S_ISREG(st.st_mode) else
                    "a file of a file system the process has not mounted (a kernel-internal one)")
            raise UnsupportedError(f"{what}, {kind}; pyckpt cannot save it — unmap it in the target",
                                   pid=ctx.pid)
        exe = os.stat(f"/proc/{ctx.pid}/exe")
        if (exe.st_dev, exe.st_ino) == (st.st_dev, st.st_ino):
            raise UnsupportedError(f"{what}: its own executable, deleted since it started; pyckpt "
                                   "cannot restore a deleted executable yet — restart the process",
                                   pid=ctx.pid)
        content_id, recs = save_deleted(ctx, map_path, name, what)
        return FileIdentity(name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), recs

    def mapping_opener(self, rctx: RestoreContext, v):
        c = next((c for c in rctx.image.of_type(DeletedContentRecord)
                  if (c.dev, c.ino) == (v.file.dev, v.file.ino)), None)
        if c is None:
            raise ImageError(f"image at {rctx.image.path}: the deleted file mapped at {v.start:#x} "
                             f"({v.name}) is missing", path=rctx.image.path)
        return ("deleted file", c.id), lambda: recreate(rctx, c)


def _content(rctx: RestoreContext, content_id: int) -> DeletedContentRecord:
    for c in rctx.image.of_type(DeletedContentRecord):
        if c.id == content_id:
            return c
    raise ImageError(f"image at {rctx.image.path}: deleted file content #{content_id} is missing",
                     path=rctx.image.path)


def _create_unlinked(directory: str, name: str) -> tuple[int, str]:
    """Create a new file in `directory` (as `name` if free) and unlink it at once."""
    # (os.urandom, as secrets.token_hex would, without its hmac/hashlib imports)
    candidates = [name] + [f".{name}.pyckpt-{os.urandom(6).hex()}" for _ in range(8)]
    for cand in candidates:
        path = os.path.join(directory, cand)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
        except FileExistsError:
            continue
        try:
            os.unlink(path)
        except BaseException:
            os.close(fd)
            raise
        return fd, path
    raise FileExistsError(f"no free name for a deleted file in {directory}")


def recreate(rctx: RestoreContext, c: DeletedContentRecord) -> int:
    """The deleted file again: created, unlinked, filled. Returns an O_RDWR fd."""
    directory, name = os.path.split(c.path)
    if rctx.options.deleted_dir is not None:
        directory = rctx.options.deleted_dir
    where = "deleted_dir" if rctx.options.deleted_dir is not None else "its directory"
    try:
        fd, _ = _create_unlinked(directory, name or "deleted")
    except FileNotFoundError:
        raise needs(FileChangedError(
            c.path, f"{where} {directory} no longer exists, so the deleted-but-open file cannot "
            "be re-created there; restore with deleted_dir=DIR (--deleted-dir DIR) to put it "
            "elsewhere"), Fix("deleted_dir")) from None
    except OSError as e:
        raise needs(FileChangedError(
            c.path, f"the deleted-but-open file cannot be re-created in {where} {directory}: "
            f"{e.strerror or e}; restore with deleted_dir=DIR (--deleted-dir DIR) to put it "
            "elsewhere"), Fix("deleted_dir")) from None
    try:
        write_content(rctx, fd, c.size, c.runs)
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (c.uid, c.gid):
            os.fchown(fd, c.uid, c.gid)
        os.fchmod(fd, c.mode)
        os.utime(fd, ns=(c.atime_ns, c.mtime_ns))
    except BaseException:
        os.close(fd)
        raise
    return fd
