"""Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS): one object, many windows.

The kernel backs shared anonymous memory with a nameless shmem file
("/dev/zero (deleted)" in /proc/PID/maps).  One such object may be mapped by
several VMAs: the processes of a tree that inherited it, and one process
whose mapping was split by mprotect or partly unmapped, each at its own
offset.  So the object, not the VMA, is what is saved: ONCE per tree (objref
by the device and inode of /proc/PID/map_files), whole — every page that
holds data, also pages no process maps any more but a window still could
reach — as a `ShmemRecord`.  Every VMA of it is a window: its record names
the object and its offset (`VmaRecord.file`, `offset`).

Restore makes one fresh shared anonymous object of the dumped size in pyckpt
(a MAP_SHARED mapping of /dev/zero, reopened through /proc/self/map_files and
unmapped again), writes its data into it, and hands it to the new tasks like
any other file to map (memory.MappedObject): every window maps that one
object at its own offset, so the sharing comes back in and across processes.
"""

from __future__ import annotations

import ctypes
import os
from .._dataclass import dataclass

from ..arch import libc as _libc
from ..errors import ImageError
from ..image import record
from .context import DumpContext, RestoreContext
from .deleted import ContentRun, store_content, write_content
from .fileid import FileIdentity
from .memory import PAGE, MappedObject, VmaRecord, mapped_object

PROT_RW, MAP_SHARED, MAP_NORESERVE = 3, 0x01, 0x4000
MAP_FAILED = ctypes.c_void_p(-1).value


@record(12, scope="image")
@dataclass
class ShmemRecord:
    """One shared anonymous memory object, saved once for all its windows."""

    id: int
    dev: int  # of the object at dump time: how VMAs name it
    ino: int
    size: int
    runs: list[ContentRun]  # file_offset = offset in the object

    def stored_runs(self) -> list[tuple[int, int, int]]:
        return [(r.offset, r.stored, r.xxh3) for r in self.runs]


@mapped_object
class SharedAnonymous(MappedObject):
    kind = "shared_anon"

    def claims_mapping(self, name: str) -> bool:
        return False  # memory._classify tells shared anonymous memory by its name and flags

    def dump_mapping(self, ctx: DumpContext, map_path: str, name: str) -> tuple[FileIdentity, list]:
        st = os.stat(map_path)
        key = ("shmem", st.st_dev, st.st_ino)
        recs = []
        if key not in ctx.objects:
            fd = os.open(map_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                size = os.fstat(fd).st_size
                runs = store_content(ctx, fd, size, "dump shared memory")
            finally:
                os.close(fd)
            ctx.objects[key] = len(ctx.objects) + 1
            recs.append(ShmemRecord(ctx.objects[key], st.st_dev, st.st_ino, size, runs))
        return FileIdentity(name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), recs

    def mapping_opener(self, rctx: RestoreContext, v: VmaRecord):
        rec = _object(rctx.image, v)
        return ("shmem", rec.id), lambda: create(rctx, rec)


# image reader -> its table (a weakref.WeakKeyDictionary, made when first needed: a dump
# and an image without shared memory import no weakref)
_by_identity = None


def _object(image, v: VmaRecord) -> ShmemRecord:
    """The object VMA `v` is a window on (looked up in a table built once per image:
    a region split into thousands of VMAs must not cost a scan of the image each)."""
    global _by_identity
    if _by_identity is None:
        import weakref

        _by_identity = weakref.WeakKeyDictionary()
    reader = getattr(image, "reader", image)  # an ImageView's objects are its reader's
    table = _by_identity.get(reader)
    if table is None:
        table = _by_identity[reader] = {(r.dev, r.ino): r for r in reader.of_type(ShmemRecord)}
    rec = table.get((v.file.dev, v.file.ino))
    if rec is None:
        raise ImageError(f"image at {image.path}: the shared memory mapped at {v.start:#x} is missing",
                         path=image.path)
    return rec


def create(rctx: RestoreContext, rec: ShmemRecord) -> int:
    """A new shared anonymous object of `rec.size` bytes holding its data; an O_RDWR fd.

    Made without a memory reservation (MAP_NORESERVE): a sparse region far
    larger than the machine's memory is as valid after restore as before."""
    length = max(-(-rec.size // PAGE) * PAGE, PAGE)  # what mmap maps; the size is set after
    zero = os.open("/dev/zero", os.O_RDWR | os.O_CLOEXEC)
    try:
        addr = _libc.mmap(None, length, PROT_RW, MAP_SHARED | MAP_NORESERVE, zero, 0)
    finally:
        os.close(zero)
    if addr in (None, MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, f"cannot make {rec.size} bytes of shared memory: {os.strerror(err)}")
    try:
        fd = os.open(f"/proc/self/map_files/{addr:x}-{addr + length:x}", os.O_RDWR | os.O_CLOEXEC)
    finally:
        _libc.munmap(addr, length)
    try:
        write_content(rctx, fd, rec.size, rec.runs, "restore shared memory")
    except BaseException:
        os.close(fd)
        raise
    return fd


def validate(image) -> None:
    """Each shared anonymous VMA of a process (`image` is its view) names a saved
    object at a page-aligned offset; each object's data lies inside it.

    A window may reach past the object's end: mremap can grow a mapping
    without growing the object, and touching that part raises SIGBUS, after
    a restore as before."""
    def bad(what: str):
        raise ImageError(f"image at {image.path}: {what}", path=image.path)

    for v in image.of_type(VmaRecord):
        if v.kind != SharedAnonymous.kind:
            continue
        if v.file is None:
            bad(f"shared memory at {v.start:#x} names no object")
        _object(image, v)
        if v.offset % PAGE or v.offset < 0:
            bad(f"shared memory at {v.start:#x} has a bad offset {v.offset}")
    seen = set()
    for rec in image.of_type(ShmemRecord):
        if rec.size <= 0 or rec.id in seen:
            bad(f"shared memory object #{rec.id} has a bad size or a duplicate id")
        seen.add(rec.id)
        for r in rec.runs:
            if r.file_offset < 0 or r.length <= 0 or r.length > r.stored or r.file_offset + r.length > rec.size:
                bad(f"shared memory object #{rec.id} has data outside it")
