"""memfd files: name, content, size, mode and seals.

A memfd (readlink `/memfd:NAME (deleted)` on the kernel's internal shmem
mount, mnt_id 0) is saved once per inode (objref) as a `MemfdRecord` with
its content in the page store (same size limit as deleted files:
`max_deleted_size`); each open file description of it is a
`MemfdFileRecord` with its flags and offset.  Seals are read with
F_GET_SEALS on a copy opened from /proc/PID/fd/N (seals belong to the inode).
A memfd created without MFD_ALLOW_SEALING reports F_SEAL_SEAL.

Restore: memfd_create(NAME, MFD_ALLOW_SEALING) in pyckpt, write the
content, ftruncate, fchmod, then the seals last (F_SEAL_SEAL included: that
also gives back "sealing not allowed").  Every description is opened
through /proc/self/fd of that one memfd, so they share it as before.
Memory mappings of a memfd (`MemfdMapping`, registered with
memory.mapped_object) map that same restored memfd: a shared mapping and
the fds that hold the memfd share memory again, a private mapping keeps its
copy-on-write pages in its VMA record.  A memfd that is only mapped (its fd
closed) is saved from /proc/PID/map_files.  Not supported: hugetlb memfds;
a shared writable mapping made before F_SEAL_FUTURE_WRITE was added (the
mmap at restore comes after the seal and fails).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
from .._dataclass import dataclass

from ..arch import libc as _libc
from ..errors import ImageError, UnsupportedError
from ..image import record
from .context import DumpContext, RestoreContext
from .deleted import DELETED, ContentRun, check_size, is_memfd_link, open_description, \
    store_content, write_content
from .fileid import FileIdentity
from .files import DumpedFd, FileKind, file_kind
from .memory import MappedObject, mapped_object

PREFIX = "/memfd:"
MFD_CLOEXEC, MFD_ALLOW_SEALING, MFD_HUGETLB, MFD_NOEXEC_SEAL, MFD_EXEC = 1, 2, 4, 8, 0x10
F_SEAL_SEAL = fcntl.F_SEAL_SEAL
HUGETLBFS_MAGIC = 0x958458F6


@record(97, scope="image")
@dataclass
class MemfdRecord:
    """One memfd (the inode), saved once however many descriptions it has."""

    id: int  # object id (MemfdFileRecord.memfd_id)
    name: str  # as given to memfd_create
    dev: int  # identity at dump time (what mappings refer to)
    ino: int
    mode: int  # permission bits
    uid: int
    gid: int
    size: int
    seals: int  # F_GET_SEALS
    allow_sealing: bool  # created with MFD_ALLOW_SEALING (for show; seals say it all)
    runs: list[ContentRun]

    def stored_runs(self) -> list[tuple[int, int, int]]:
        return [(r.offset, r.stored, r.xxh3) for r in self.runs]


@record(98, scope="image")
@dataclass
class MemfdFileRecord:
    """One open file description of a memfd."""

    id: int
    memfd_id: int
    flags: int  # access mode and status flags (no O_CLOEXEC)
    pos: int
    link: str  # as /proc/PID/fd showed it (for `pyckpt show`)


def _fs_magic(fd: int) -> int:
    buf = ctypes.create_string_buffer(128)  # struct statfs; f_type comes first
    if _libc.fstatfs(fd, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int.from_bytes(buf.raw[:8], "little")


@file_kind
class Memfd(FileKind):
    name = "memfd"
    records = (MemfdFileRecord,)

    def claims(self, f: DumpedFd) -> bool:
        return stat.S_ISREG(f.st.st_mode) and is_memfd_link(f.link) and f.info.mnt_id == 0

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        memfd_id, recs = save_memfd(ctx, f.proc_path, f.link,
                                    f"process {f.pid}: fd {f.fd} is a memfd ({f.link})")
        return [MemfdFileRecord(file_id, memfd_id, f.info.flags & ~os.O_CLOEXEC, f.info.pos,
                                f.link)] + recs

    def open(self, rctx: RestoreContext, rec: MemfdFileRecord) -> int:
        m = _memfd(rctx, rec.memfd_id)
        holder = rctx.pass_fd(("memfd", m.id), lambda: recreate(rctx, m))
        return open_description(holder, rec.flags, rec.pos)

    def describe(self, rec: MemfdFileRecord) -> str:
        return f"{rec.link} (memfd #{rec.memfd_id})"


def save_memfd(ctx: DumpContext, proc_path: str, link: str, what: str) -> tuple[int, list]:
    """(object id, records) of the memfd open or mapped at `proc_path`
    (/proc/PID/fd/N or /proc/PID/map_files/A-B); saved only the first time."""
    st = os.stat(proc_path)
    key = ("memfd", st.st_dev, st.st_ino)
    if key in ctx.objects:
        return ctx.objects[key], []
    check_size(ctx, what, st.st_size)
    fd = os.open(proc_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _fs_magic(fd) == HUGETLBFS_MAGIC:
            raise UnsupportedError(f"{what}: a hugetlb memfd; pyckpt cannot save hugetlb memfds "
                                   "yet — close or unmap it in the target", pid=ctx.pid)
        st = os.fstat(fd)
        check_size(ctx, what, st.st_size)
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        runs = store_content(ctx, fd, st.st_size)
    finally:
        os.close(fd)
    memfd_id = ctx.objects[key] = len(ctx.objects) + 1
    name = link[len(PREFIX): -len(DELETED)]
    return memfd_id, [MemfdRecord(memfd_id, name, st.st_dev, st.st_ino, stat.S_IMODE(st.st_mode),
                                  st.st_uid, st.st_gid, st.st_size, seals,
                                  not seals & F_SEAL_SEAL, runs)]


@mapped_object
class MemfdMapping(MappedObject):
    """Memory mappings of a memfd: they map the memfd restored once for all
    its descriptions and mappings.  Private mappings keep their own
    (copy-on-write) pages in the VMA record, as private file mappings do."""

    kind = "memfd"

    def claims_mapping(self, name: str) -> bool:
        return is_memfd_link(name)

    def dump_mapping(self, ctx: DumpContext, map_path: str, name: str) -> tuple[FileIdentity, list]:
        memfd_id, recs = save_memfd(ctx, map_path, name,
                                    f"process {ctx.pid}: memory at {map_path.rsplit('/', 1)[1]} "
                                    f"maps a memfd ({name})")
        st = os.stat(map_path)
        return FileIdentity(name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), recs

    def mapping_opener(self, rctx: RestoreContext, v):
        m = next((m for m in rctx.image.of_type(MemfdRecord)
                  if (m.dev, m.ino) == (v.file.dev, v.file.ino)), None)
        if m is None:
            raise ImageError(f"image at {rctx.image.path}: the memfd mapped at {v.start:#x} "
                             f"({v.name}) is missing", path=rctx.image.path)
        return ("memfd", m.id), lambda: recreate(rctx, m)


def _memfd(rctx: RestoreContext, memfd_id: int) -> MemfdRecord:
    for m in rctx.image.of_type(MemfdRecord):
        if m.id == memfd_id:
            return m
    raise ImageError(f"image at {rctx.image.path}: memfd #{memfd_id} is missing", path=rctx.image.path)


def _memfd_create(name: str, exec_bits: bool) -> int:
    flags = MFD_CLOEXEC | MFD_ALLOW_SEALING
    if exec_bits:
        try:
            return os.memfd_create(name, flags | MFD_EXEC)
        except OSError:  # a kernel before 6.3 has no MFD_EXEC (and gives exec bits anyway)
            pass
    return os.memfd_create(name, flags)


def recreate(rctx: RestoreContext, m: MemfdRecord) -> int:
    """The memfd again, with content, mode and seals; an O_RDWR fd in pyckpt."""
    fd = _memfd_create(m.name, bool(m.mode & 0o111))
    try:
        write_content(rctx, fd, m.size, m.runs)
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (m.uid, m.gid):
            os.fchown(fd, m.uid, m.gid)
        if stat.S_IMODE(st.st_mode) != m.mode:
            os.fchmod(fd, m.mode)
        if m.seals:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, m.seals)
        got = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        if got != m.seals:
            raise OSError(f"memfd {m.name!r}: seals {got:#x} after restore, wanted {m.seals:#x}")
    except BaseException:
        os.close(fd)
        raise
    return fd
