"""Memory: every VMA, the pages that must be stored, and the vDSO block.

Dump decides per page from /proc/PID/pagemap *before* reading, so untouched
pages are never faulted in: private anonymous memory stores its present or
swapped pages; private file mappings store only the pages that differ from
the file (not page-cache pages: copy-on-write copies such as RELRO); shared
file mappings store nothing (the file holds them), nor do the VMAs of
shared anonymous memory, memfds, deleted files and SysV shared memory
segments: those objects are saved once by their own kinds (`MappedObject`),
and each VMA maps the object (a SysV segment is attached again, with shmat:
kinds/sysvipc.py).  A mapping named "PATH (deleted)" whose file still has a
link in the same directory (a POSIX semaphore: glibc's sem_open maps a
temporary name, links the file under the semaphore's name, unlinks the
temporary one) is a file mapping of that other name.  What no kind claims is
refused naming what it is.

Pages are copied in pieces on a 256 KiB grid of addresses (PageCopier: one
thread reads and hashes, another writes; with `kill`, straight to the disk).  A piece of anonymous memory that
holds only zeros is recorded as a zero run and not stored.  An incremental
dump (`parent=`) does not store a piece whose xxh3 is the one the parent
image has at that address: the run says which image of the chain holds it
(PageRun.image; the chain is image/chain.py), and `run_source` answers where
a run's bytes are.  A piece that changed is compared page by page with the
parent's copy and only the pages that differ are stored; the others stay
where the parent keeps them, as runs of their own inside the piece (each
with its own digest; `merged` never joins runs inside a piece of the grid).

Restore maps every VMA at its address with its protection and flags, then
the new task itself `pread`s each stored run from pages.img (or from the
pages.img of the parent image that keeps it) — one copy, no bounce through
pyckpt; zero runs are left as the fresh mapping has them.  Read-only VMAs are written first and mprotect'ed
after.  The vDSO block is put back with arch_prctl(ARCH_MAP_VDSO_64).
A file mapped shared need only be the same inode, still as long as the part
it maps: such a mapping shows the file as it is now, whoever wrote it since (a
JVM's hsperfdata file, which the original JVM keeps writing while copies
run); a file mapped privately must have kept its size and mtime, unless
`allow_changed_files` accepts it.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import struct

from .._dataclass import dataclass, field

import xxhash

from .._native._ck import ffi, lib
from ..arch import PAGE
from ..errors import (FileChangedError, ImageError, KernelMismatchError, PyckptError, RemoteCallError,
                      UnsupportedError)
from ..image import record
from ..inject import WANT_ANY, nr
from ..problems import Fix, needs
from ..proc import own_vdso_blocks, read_maps
from .context import DumpContext, RestoreContext
from .fileid import FileIdentity, identify, open_checked_stat
from .order import ordered

CHUNK = 4 << 20  # pages are read, stored and checksummed in runs of at most this
# Restore reads a run of pages into the task in pieces of at most this, so the
# progress bar moves (and an interrupt is seen) while a large run is read; at
# two injected calls a piece, 1 GiB costs ~64 calls (well under a millisecond).
READ_CHUNK = 32 << 20
VDSO_NAMES = ("[vvar]", "[vvar_vclock]", "[vdso]")
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_GROWSDOWN, MAP_NORESERVE = 0x100, 0x4000
ARCH_MAP_VDSO_64 = 0x2003
# smaps VmFlags restored with madvise
MADVISE_FOR_FLAG = {"hg": 14, "nh": 15, "dc": 10, "dd": 16, "wf": 18}
MADV_POPULATE_WRITE = 23
# pagemap scan modes (see ck_pagemap_runs)
SCAN_ANON, SCAN_PRIVATE_FILE = 0, 1


PIECE = 256 << 10  # the grid of zero detection and of incremental images (PageRun.chunks)
PIECE_PAGES = PIECE // PAGE


@dataclass
class PageRun:
    """Pages of memory from `addr`: stored at `offset` of pages.img of the image
    `image` steps up the chain (0: this image; see image/chain.py), or all zero
    (`zero`: nothing stored; fresh anonymous memory is zero).  `chunks`, when
    present, are the xxh3 digests of the run's pieces on the PIECE grid of
    addresses (the first piece ends at the next grid line): the run is checked
    piece by piece, `xxh3` is then the digest of those digests (little-endian
    u64s), and a child image keeps a piece whose digest is unchanged."""

    COMPACT = True  # (see VmaRecord)
    addr: int
    npages: int
    offset: int  # in pages.img
    xxh3: int
    image: int = 0
    zero: bool = False
    chunks: list[int] = field(default_factory=list)

    def pieces(self) -> list[tuple[int, int, int]]:
        """(offset, length, digest) of each stored piece."""
        if not self.chunks:
            return [(self.offset, self.npages * PAGE, self.xxh3)]
        out, off = [], self.offset
        for (_, n), digest in zip(_grid(self.addr, self.npages), self.chunks):
            out.append((off, n * PAGE, digest))
            off += n * PAGE
        return out


@record(10, scope="process")
@dataclass
class VmaRecord:
    COMPACT = True  # written as an array of its values (image/codec.py): hundreds a process
    start: int
    end: int
    prot: int
    shared: bool
    kind: str  # "anon", "shared_anon", "file" or a MappedObject's ("memfd", "deleted")
    name: str  # as /proc/PID/maps shows it
    offset: int
    file: FileIdentity | None
    vmflags: list[str]
    pages: list[PageRun]

    def stored_runs(self) -> list[tuple[int, int, int]]:
        return [piece for p in self.pages if not p.zero and not p.image for piece in p.pieces()]

    def inherited_runs(self) -> list[tuple[int, int, int, int]]:
        """(image, offset, length, digest) of the pieces kept in images up the chain."""
        return [(p.image, *piece) for p in self.pages if not p.zero and p.image for piece in p.pieces()]


@dataclass
class VdsoBlock:
    name: str
    start: int
    end: int


@record(11, scope="process")
@dataclass
class VdsoRecord:
    blocks: list[VdsoBlock]
    vdso_xxh3: int  # digest of the [vdso] text: restore needs the same kernel's vDSO


def _prot(perms: str) -> int:
    return (
        (PROT_READ if perms[0] == "r" else 0)
        | (PROT_WRITE if perms[1] == "w" else 0)
        | (PROT_EXEC if perms[2] == "x" else 0)
    )


class MappedObject:
    """A file that exists only in the image (a memfd, a deleted file) and can be
    mapped: the kind that saves it registers one of these with
    @mapped_object, and memory maps the copy that kind re-creates at restore.
    VMAs of it get `kind = self.kind` and their `file` names the object.  Kinds are
    asked whether they claim a mapping in the declared order (kinds/order.py, by
    `kind`, `before`, `after`), as file kinds are."""

    kind = "object"
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.kind

    def claims_mapping(self, name: str) -> bool:
        """Whether the /proc/PID/maps name is one of this kind's objects."""
        raise NotImplementedError

    def dump_mapping(self, ctx: DumpContext, map_path: str, name: str) -> tuple[FileIdentity, list]:
        """(identity for VmaRecord.file, records) for the object mapped at
        `map_path` (/proc/PID/map_files/...); records only the first time
        (objref through ctx.objects)."""
        raise NotImplementedError

    def mapping_opener(self, rctx: RestoreContext, v: "VmaRecord"):
        """(key, opener) for rctx.pass_fd: an fd to mmap `v` from."""
        raise NotImplementedError

    # An object that is not mapped from an fd but attached (SysV shared memory) sets
    # `attaches` and defines prepare_mapping(rctx, v) (PREPARE: check what is needed)
    # and attach(rctx, v) (LAYOUT: map `v` at its address with its protection).
    attaches = False


MAPPED_OBJECTS: dict[str, MappedObject] = {}


def mapped_object(cls):
    if cls.kind in MAPPED_OBJECTS:
        raise RuntimeError(f"{cls.__name__}: mapped object kind {cls.kind!r} is taken")
    objs = ordered([*MAPPED_OBJECTS.values(), cls()])
    MAPPED_OBJECTS.clear()
    MAPPED_OBJECTS.update((o.kind, o) for o in objs)
    return cls


def identities_before(pid: int) -> dict[tuple, FileIdentity]:
    """The identities of the files `pid` maps now, (path, device, inode) -> FileIdentity,
    found before its freeze while pyckpt waits for its smaps (dumper): the dump takes
    them for the mappings it finds again in the freeze (the same path, device and
    inode), instead of two stats each there (a Python kernel's ~70 files).  Only reads
    /proc and stats files; a file found replaced on disk is left to the freeze, which
    says so."""
    out: dict[tuple, FileIdentity] = {}
    try:
        maps = read_maps(pid)
    except OSError:
        return out
    for m in maps:
        key = (m.path, m.dev, m.inode)
        if (not m.path.startswith("/") or m.path.endswith(" (deleted)") or key in out
                or any(obj.claims_mapping(m.path) for obj in MAPPED_OBJECTS.values())):
            continue
        try:
            ident = identify(m.path, f"/proc/{pid}/map_files/{m.start:x}-{m.end:x}")
            on_disk = os.stat(ident.path)
        except OSError:
            continue
        if (on_disk.st_dev, on_disk.st_ino) == (ident.dev, ident.ino):
            out[key] = ident
    return out


def _classify(pid: int, m) -> tuple[str, int | None]:
    """(kind, pagemap scan mode or None) for one VMA; refuses what is not supported."""
    name = m.path
    # Shared anonymous memory is an object of its own (kinds/shmem.py): its
    # VMAs store no pages.
    if name in ("", "[heap]", "[stack]") or name.startswith("[anon:"):
        return ("shared_anon", None) if m.shared else ("anon", SCAN_ANON)
    if name.startswith("[anon_shmem:") or (name == "/dev/zero (deleted)" and m.shared):
        return "shared_anon", None
    if name == "/dev/zero" and not m.shared:
        return "anon", SCAN_ANON
    for obj in MAPPED_OBJECTS.values():
        if obj.claims_mapping(name):
            return obj.kind, (None if m.shared else SCAN_PRIVATE_FILE)
    if name.endswith(" (deleted)"):
        raise UnsupportedError(
            f"process {pid}: memory at {m.start:#x}-{m.end:#x} maps {_deleted_what(name)} "
            f"({name}), which pyckpt cannot save yet — unmap it in the target", pid=pid
        )
    if name.startswith("/"):
        return "file", (None if m.shared else SCAN_PRIVATE_FILE)
    raise UnsupportedError(
        f"process {pid}: memory at {m.start:#x}-{m.end:#x} is a special mapping "
        f"{name!r} that pyckpt cannot save yet", pid=pid
    )


def linked_name(pid: int, m) -> str | None:
    """For a mapping named "PATH (deleted)" whose file still has links — POSIX
    semaphores: glibc's sem_open maps a temporary name, links the file under the
    semaphore's name and unlinks the temporary one — another name of that file in
    the same directory (/dev/shm), to map it by as any file; None otherwise."""
    if m.path.startswith(("/SYSV", "/[")):
        return None
    return other_name(f"/proc/{pid}/map_files/{m.start:x}-{m.end:x}", m.path)


def other_name(stat_path: str, name: str) -> str | None:
    """The file `stat_path` (/proc/PID/map_files/..., /proc/PID/fd/N) shows as
    "PATH (deleted)": another name of it in PATH's directory when it still has a link
    there; None when it has none (or no link at all)."""
    if not (name.startswith("/") and name.endswith(" (deleted)")):
        return None
    try:
        st = os.stat(stat_path)
        if st.st_nlink == 0 or not stat.S_ISREG(st.st_mode):
            return None
        with os.scandir(os.path.dirname(name[: -len(" (deleted)")]) or "/") as entries:
            for e in entries:
                if e.inode() == st.st_ino and e.is_file(follow_symlinks=False):
                    found = e.stat(follow_symlinks=False)
                    if (found.st_dev, found.st_ino) == (st.st_dev, st.st_ino):
                        return e.path
    except OSError:
        pass
    return None


def _deleted_what(name: str) -> str:
    """What a " (deleted)" mapping no kind claimed is, in words."""
    if name.startswith("/SYSV"):
        return "a SysV shared memory segment"
    if name.startswith("/["):  # the kernel's own files: [aio], [io_uring]...
        return f"a kernel object {name.split()[0][1:]}"
    return "a deleted special file"


def _vdso_text(pid: int, start: int, end: int) -> bytes:
    buf = ffi.new("char[]", end - start)
    if lib.ck_vm_read(pid, start, buf, end - start) != end - start:
        raise PyckptError(f"cannot read the vDSO of process {pid}")
    return bytes(ffi.buffer(buf, end - start))


def dump(ctx: DumpContext) -> list:
    pid = ctx.pid
    vmas: list[tuple[VmaRecord, int | None]] = []
    blocks = []
    objects: list = []  # records of mapped objects (memfds, deleted files) saved here
    # (path, device, inode) -> the mapped file's, those found before the freeze included
    identities: dict[tuple, FileIdentity] = dict(ctx.identities)
    kinds: dict[tuple, tuple] = {}  # (name, shared) -> _classify's answer (a library has 4-5 VMAs)
    for m in ctx.maps:
        if m.path == "[vsyscall]":
            continue  # the kernel's fixed page, present in every process
        if m.path in VDSO_NAMES:
            blocks.append(VdsoBlock(m.path, m.start, m.end))
            continue
        # "PATH (deleted)" still linked under another name
        linked = linked_name(pid, m) if m.path.endswith(" (deleted)") else None
        if linked:
            kind, mode = "file", None if m.shared else SCAN_PRIVATE_FILE
        else:
            kind, mode = kinds.get((m.path, m.shared)) or kinds.setdefault((m.path, m.shared), _classify(pid, m))
        ident = None
        if kind in MAPPED_OBJECTS:
            ident, recs = MAPPED_OBJECTS[kind].dump_mapping(
                ctx, f"/proc/{pid}/map_files/{m.start:x}-{m.end:x}", m.path)
            objects += recs
        if kind == "file":
            # the VMAs of one mapped file (maps names its device and inode: a library has
            # four or five) share its identity: ~300 of a Python kernel's VMAs, ~70 files
            key = (linked or m.path, m.dev, m.inode)
            ident = identities.get(key)
            if ident is None:
                ident = identify(linked or m.path, f"/proc/{pid}/map_files/{m.start:x}-{m.end:x}")
                try:
                    on_disk = os.stat(ident.path)
                except OSError:
                    on_disk = None
                if on_disk is None or (on_disk.st_dev, on_disk.st_ino) != (ident.dev, ident.ino):
                    raise UnsupportedError(
                        f"process {pid}: {m.path} mapped at {m.start:#x} was replaced or removed "
                        "on disk after it was mapped; pyckpt cannot reopen it", pid=pid
                    )
                identities[key] = ident
        rec = VmaRecord(
            start=m.start, end=m.end, prot=_prot(m.perms), shared=m.shared, kind=kind,
            name=m.path, offset=m.offset, file=ident,
            vmflags=ctx.smaps_flags.get(m.start, []), pages=[],
        )
        if "um" in rec.vmflags:  # pages still missing are not in pagemap: they would be lost
            raise UnsupportedError(
                f"process {pid}: memory at {m.start:#x}-{m.end:#x} is filled on demand through a "
                "userfaultfd (a lazy restore still in progress, or the process's own); dump it once "
                "its pages are in (after a lazy restore: when its pyckpt-lazy handler has exited)",
                pid=pid)
        vmas.append((rec, mode))

    vdso = [b for b in blocks if b.name == "[vdso]"]
    if len(vdso) != 1:
        raise UnsupportedError(f"process {pid} has no single [vdso] mapping; cannot dump it", pid=pid)
    vdso_rec = VdsoRecord(blocks, xxhash.xxh3_64_intdigest(_vdso_text(pid, vdso[0].start, vdso[0].end)))

    parent = ctx.options.parent_pages if ctx.options is not None else None
    if parent is not None and pid == (ctx.tree or [pid])[0]:
        objects.append(parent.record(ctx.pages.path.parent))

    # Decide what to store from pagemap before reading anything.
    pm = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    plans: list = []
    try:
        total = 0
        scanned = [(rec, mode) for rec, mode in vmas if mode is not None]
        # one walk of the page tables for every VMA (and pre-copy's question) when it can
        found = scan_areas(pm, [(rec.start, rec.end, mode) for rec, mode in scanned])
        for i, (rec, mode) in enumerate(scanned):
            runs, categories = found[i] if found else (_scan(pm, rec.start, (rec.end - rec.start) // PAGE, mode), None)
            pre = ctx.precopy
            if pre is not None and pre.pid == pid and mode == SCAN_ANON:
                kept, runs = pre.reusable(rec.start, rec.end, rec.offset, runs, categories)
                rec.pages += kept  # copied while the process ran, and unchanged since
            plans.append((rec, runs))
            total += sum(n for _, n in runs) * PAGE
    finally:
        os.close(pm)

    jobs, owners = [], []
    for rec, runs in plans:
        readable, zero_ok = bool(rec.prot & PROT_READ), rec.kind == "anon"
        for first, count in runs:
            jobs.append((rec.start + first * PAGE, count, readable, zero_ok))
            owners.append(rec)
    copier = PageCopier(pid, ctx.pages, parent.index.get(pid) if parent is not None else None,
                        parent.read if parent is not None else None)
    with ctx.progress.bar(total, "dump memory") as bar:
        for rec, got in zip(owners, copier.copy(jobs, bar.update, defer=True)):
            rec.pages += got
    for rec, _ in vmas:
        if rec.pages:  # (most VMAs of files store none)
            rec.pages = merged(sorted(rec.pages, key=_addr) if len(rec.pages) > 1 else rec.pages)
    return [vdso_rec] + objects + [rec for rec, _ in vmas]


# --- copying pages into the page store ----------------------------------------


def _addr(run: PageRun) -> int:
    return run.addr


def _grid(addr: int, npages: int) -> list[tuple[int, int]]:
    """(address, pages) of the pieces of [addr, addr + npages pages) cut on the PIECE grid."""
    end = addr + npages * PAGE
    if end <= addr:
        return []
    first = min(end, (addr & ~(PIECE - 1)) + PIECE)
    out = [(addr, (first - addr) // PAGE)]
    if first < end:  # whole pieces, then the last (computed, not looped: 4096 pieces a GiB)
        last = (end - 1) & ~(PIECE - 1)
        out += [(a, PIECE_PAGES) for a in range(first, last, PIECE)]
        out.append((last, (end - last) // PAGE))
    return out


def chunks_digest(chunks: list[int]) -> int:
    """PageRun.xxh3 of a run with piece digests: the digest of those digests."""
    return xxhash.xxh3_64_intdigest(struct.pack(f"<{len(chunks)}Q", *chunks))


def merged(runs: list[PageRun]) -> list[PageRun]:
    """Runs sorted by address, those that follow each other in memory (and in the same
    image's file, or both zero) made one; each run with piece digests gets its
    `xxh3` from them."""
    out: list[PageRun] = []
    for p in runs:
        q = out[-1] if out else None
        if (q is not None and q.addr + q.npages * PAGE == p.addr and q.image == p.image
                and q.zero == p.zero and bool(q.chunks) == bool(p.chunks)
                and (p.zero or (p.chunks and q.offset + q.npages * PAGE == p.offset
                                and not p.addr % PIECE))):  # (a run's digests are per piece of the grid)
            q.npages += p.npages
            q.chunks.extend(p.chunks)  # (q's own list: made below; `+` here cost O(n²) for a GiB)
        else:
            out.append(PageRun(p.addr, p.npages, p.offset, p.xxh3, p.image, p.zero, list(p.chunks)))
    for p in out:
        if p.zero:
            p.offset = p.xxh3 = 0
        elif p.chunks:
            p.xxh3 = chunks_digest(p.chunks)
    return out


def hash_fn() -> int:
    """The address of python-xxhash's XXH3 64-bit function (the one xxh3_64_intdigest
    calls), for C to hash with (ck_read_pieces, a lazy restore's handler), once checked
    against xxh3_64_intdigest on inputs of every size class; 0 if it cannot be found
    (then digests are taken in Python)."""
    if "fn" not in _HASH:
        _HASH["fn"] = 0
        try:
            from xxhash import _xxhash
        except ImportError:
            return 0
        fn = lib.ck_lazy_hash_fn(os.fsencode(_xxhash.__file__))
        sample = bytes(range(256)) * 1200 + b"pyckpt"
        if fn and all(lib.ck_lazy_hash(fn, ffi.from_buffer(sample[:n]), n) == xxhash.xxh3_64_intdigest(sample[:n])
                      for n in (0, 1, 3, 5, 9, 17, 100, 129, 240, 241, 1024, 4096, 65537, len(sample))):
            _HASH["fn"] = fn
    return _HASH["fn"]


_HASH: dict[str, int] = {}
SEG_ZERO_OK, SEG_READ = 1, 2  # a segment's flags for ck_read_pieces


THREAD_MIN = 16 << 20  # bytes to copy from which PageCopier hashes and writes in a thread
# Buffers a frozen dump's copy may fill ahead of its writer thread (see PageCopier.copy's
# `defer`): what the writer has not written when the copy ends, it writes after the
# target runs again.
DEFER_MAX = 64 << 20


_SPARE: list = []  # copy buffers kept from the last copies (see _slot, _keep)
_COPIES = [0]  # copies made with a writer thread by this process


def _slot():
    """A copy buffer of CHUNK bytes (with its view and zero-piece flags): one kept from
    the last copies if there is one, else a new one.  Keeping one (4 MiB) spares a small
    dump the page faults of fresh memory, ~1 ms for every 4 MiB it copies.  It is
    mapped MADV_WIPEONFORK (a fork gets it empty): where a restore's new task starts
    as a copy of pyckpt (clone3; restorer._clone_small), each MiB of pyckpt's memory
    costs ~0.3 ms to copy there and unmap again."""
    try:
        return _SPARE.pop()
    except IndexError:
        area = mmap.mmap(-1, CHUNK, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            area.madvise(getattr(mmap, "MADV_WIPEONFORK", 18))  # (Python 3.11 does not name it)
        except OSError:  # (a kernel before 4.14)
            pass
        # (and the zero flags and digests of its pieces, at most one a page: ck_read_pieces)
        return (ffi.from_buffer(area), area, ffi.new("unsigned char[]", CHUNK // PAGE),
                ffi.new("unsigned long long[]", CHUNK // PAGE))


def _keep(slots: list) -> None:
    """Keep copy buffers for the next copies, up to DEFER_MAX bytes of them.  All but the
    first are MADV_FREE: the kernel takes their pages back when it needs memory (one
    it has not taken back costs no fault when written again), so a dump that once
    filled many buffers does not hold pyckpt's memory for good."""
    for slot in slots:
        if (len(_SPARE) + 1) * CHUNK > DEFER_MAX:
            return
        if _SPARE:
            try:
                slot[1].madvise(mmap.MADV_FREE)
            except (AttributeError, OSError):  # (a kernel before 4.5)
                pass
            _SPARE.insert(0, slot)  # (the one not MADV_FREE stays last: _slot() takes it first)
        else:
            _SPARE.append(slot)


class _WriterThread:
    """PageCopier's writer thread: writes the buffers handed to it (hand) while the
    reading thread fills another one, at the offsets the reading thread reserved.
    With `most` above two buffers' bytes, a buffer is added (up to `most` bytes of
    them) rather than waited for: the reading thread, the one that keeps the target
    frozen, need not wait for the page cache.  A dump pins pyckpt to the target's
    CPU (cheap ptrace stops), and a thread inherits that: the writer takes pyckpt's
    CPUs from before the pin back, so the two run on two CPUs where there are two."""

    def __init__(self, copier: "PageCopier", most: int = 0):
        import queue  # (a dump's: not in a restore's start-up)
        import threading

        from ..seize import unpinned_cpus

        self.copier = copier
        self.free: queue.Queue = queue.Queue()
        self.work: queue.Queue = queue.Queue()
        self.errors: list[BaseException] = []
        self.slots = [_slot(), _slot()]
        self.most = max(most, 2 * CHUNK)
        self.held: list = []  # buffers read and sorted out, not handed to the writer yet
        for slot in self.slots:
            self.free.put(slot)
        self._cpus = unpinned_cpus()  # a dump runs pinned to the target's CPU (seize.pinned_to_cpu)
        self.thread = threading.Thread(target=self._run, name="pyckpt page writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if self._cpus is not None:  # free to run on another CPU than the reading thread's
            try:
                os.sched_setaffinity(0, self._cpus)
            except OSError:
                pass
        while True:
            item = self.work.get()
            if item is None:
                return
            slot, todo = item
            try:
                if not self.errors:
                    self.copier._write_at(slot, todo)
            except BaseException as e:  # noqa: BLE001 -- raised again in the reading thread
                self.errors.append(e)
            finally:
                self.free.put(slot)

    def hand(self, slot, todo: list, last: bool):
        """Queue `slot`'s writes; the next buffer to read into (None if `last`).  An
        error of an earlier write is raised here.  The reading thread does not wait for
        the writer while it may add buffers (`most` bytes of them): when none is free,
        a new one is read into, and what was read is held back until the writer is
        free again (writes beside the reads slow them down: ~7.6 -> ~11 ms to read a
        Python kernel's 35 MiB, two CPUs of this VM sharing the memory's bandwidth).
        Whatever is held when the copy ends is written after it (see PageCopier.copy)."""
        if self.errors:
            self.free.put(slot)
            raise self.errors[0]
        if todo:
            self.held.append((slot, todo))
        else:
            self.free.put(slot)
        if last:
            self.release()
            return None
        if self.free.empty() and (len(self.slots) + 1) * CHUNK <= self.most:
            self.slots.append(_slot())
            return self.slots[-1]
        self.release()
        slot = self.free.get()
        if self.errors:
            self.free.put(slot)
            raise self.errors[0]
        return slot

    def release(self) -> None:
        """Let the writer write what is held (see hand)."""
        for item in self.held:
            self.work.put(item)
        self.held = []

    def stop(self, raising: bool) -> None:
        """Wait for the writes queued; with `raising`, raise the first that failed."""
        self.release()
        self.work.put(None)
        self.thread.join()
        _keep(self.slots)
        if self.errors and raising:
            raise self.errors[0]


class PageCopier:
    """Copies runs of a process's memory into the page store, cut into pieces on the
    PIECE grid.  A piece of anonymous memory that holds only zeros is not stored (a
    zero run); a piece whose digest is the one the parent image has at that address
    (an incremental dump: `parent`, ParentPages.index of the process) is not stored
    either (a run kept in the parent), and of a piece that changed only the pages
    that differ from the parent's (read with `read`, ParentPages.read) are.  The rest
    is written as it comes, one write per stretch of stored pieces.

    Two threads (from THREAD_MIN bytes on): this one reads the target's memory
    into one of two buffers, finds its zero pieces and hashes the others (in C,
    ck_read_pieces, which lets the GIL go: a buffer's runs read with one
    process_vm_readv, where one per run cost ~5 us each), while a writer
    thread (_WriterThread) writes the other buffer (the page cache's fresh pages,
    or the disk, are the slow part).  A frozen target's copy (`defer`) never waits
    for the writer while it has less than DEFER_MAX bytes of buffers (it reads into a
    new one instead), and leaves what is still to be written to the time the target
    runs again: a Python kernel's memory phase 22-24 -> 18-20 ms (35 MiB), its whole
    dump ~50 -> ~48 ms."""

    threaded: bool | None = None  # None: a writer thread when there is enough to copy

    def __init__(self, pid: int, pages, parent: dict | None = None, read=None):
        self.pid, self.pages, self.parent = pid, pages, parent or {}
        self.read = read  # (image, offset, length) -> the parent chain's bytes (ParentPages.read)
        self.stored = self.zero = self.inherited = 0  # bytes

    def copy(self, jobs: list[tuple[int, int, bool, bool]], progress=None,
             lenient: bool = False, defer: bool = False) -> list[list[PageRun]]:
        """For each (address, pages, readable, zero_ok): its PageRuns, one per piece.
        `zero_ok`: zero pieces need not be stored (anonymous memory).  Memory that
        cannot be read is an error, or with `lenient` left out of the result.

        `defer` (a frozen target's copy): with a writer thread, up to DEFER_MAX bytes
        read may wait in buffers for it (_WriterThread.hand), and copy() returns once
        everything is read, leaving the writes to finish while the target runs again
        (the page store's drain() waits for them; the image is finished only after).
        Each PageRun has its offset already: they are reserved as the pieces are
        sorted out.

        Runs are read one after another into a buffer, and what they store is written
        once it is full (or at the end), one write per stretch of stored pieces — not
        one write per run: a process has dozens to hundreds of runs of a few pages
        (a Jupyter kernel ~300), and each write() into a new file costs ~40 us here
        however little it writes; with a writer thread, one hand-over per buffer."""
        results: list[list[PageRun]] = [[] for _ in jobs]
        if not jobs:
            return results
        if not hasattr(lib, "ck_read_pieces"):
            raise PyckptError("pyckpt's native helper was built before its Python code (it has no "
                              "ck_read_pieces): build it again (scripts/setup.sh, or pip install .)")
        threaded = self.threaded
        if threaded is None:  # a thread is worth its start for more than a few MiB
            threaded = sum(n for _, n, _, _ in jobs) * PAGE >= THREAD_MIN
        self.pages.drain()  # (an earlier copy's writes, of another process of the tree)
        # Not in a process's first threaded copy (a `pyckpt dump` command's only one):
        # its buffers would all be fresh memory, whose first touch costs about what
        # the writes it puts off do (the command's dump of a Python kernel, 35 MiB:
        # 117 -> 122 ms); from the next copy on they are kept ones (_keep).
        # Nor with writeback (a dump that kills its target syncs before the kill, so
        # nothing is written after a release; and writeback's bookkeeping is the
        # reading thread's alone).
        defer = defer and threaded and _COPIES[0] > 0 and not getattr(self.pages, "writeback", False)
        if threaded:
            _COPIES[0] += 1
        writer = _WriterThread(self, DEFER_MAX if defer else 0) if threaded else None
        slot = writer.free.get() if writer is not None else _slot()
        self.lenient, self.progress, self.hash = lenient, progress, hash_fn()
        # (job, address, bytes, flags, at in buf): read into the buffer once it is full
        pending: list[tuple[int, int, int, int, int]] = []
        used = 0
        self.mem_fd = -1
        done = False
        try:
            for index, (addr, npages, readable, zero_ok) in enumerate(jobs):
                end = addr + npages * PAGE
                flags = SEG_ZERO_OK if zero_ok else 0
                while addr < end:
                    n = min(end, (addr & ~(CHUNK - 1)) + CHUNK) - addr  # pieces stay whole
                    if used + n > CHUNK:
                        slot = self._store(slot, pending, results, writer)
                        pending, used = [], 0
                    if readable or self._read_mem(slot, used, addr, n):
                        pending.append((index, addr, n, flags if readable else flags | SEG_READ, used))
                        used += n
                    addr += n
            slot = self._store(slot, pending, results, writer, last=True)
            done = True
        finally:
            if self.mem_fd >= 0:
                os.close(self.mem_fd)
            if writer is not None and done and defer:
                self.pages.pending = writer.stop  # (the page store's drain() waits for its writes)
            elif writer is not None:
                writer.stop(raising=done)  # (raises what the writer raised, if nothing else is)
            else:
                _keep([slot])
        return results

    def _read_mem(self, slot, at: int, addr: int, n: int) -> bool:
        """Read `n` bytes at `addr` into the buffer at `at` through /proc/PID/mem (which,
        unlike process_vm_readv, does not honour protections: memory that cannot be
        read); whether they came (if not, an error unless `lenient`)."""
        if self.mem_fd < 0:
            self.mem_fd = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        return self._got(os.preadv(self.mem_fd, [memoryview(slot[1])[at:at + n]], addr), addr, n)

    def _got(self, got: int, addr: int, n: int) -> bool:
        if got == n:
            return True
        if not self.lenient:
            raise PyckptError(f"process {self.pid}: cannot read memory at {addr:#x} ({n} bytes)")
        return False

    def _store(self, slot, pending, results, writer: "_WriterThread | None", last: bool = False):
        """Read the runs `pending` into the buffer `slot` and sort their pieces out: zero,
        kept in the parent or written — here, or by the writer thread; the buffer to
        read into next."""
        todo: list[tuple[int, int, PageRun]] = []
        for (index, addr, n, _, at), k in self._read(slot, pending):
            self._pieces(slot, at, addr, n, k, todo, results[index])
        if writer is None:
            self._write(slot, todo)
            return slot
        return writer.hand(slot, self._reserve(todo), last)

    def _read(self, slot, pending: list) -> list:
        """Read the runs `pending` into the buffer (ck_read_pieces: one process_vm_readv
        for up to 1024 runs, where a Python kernel has ~200 of a few pages), their
        pieces' zero flags and digests into the slot's; the runs read, each with the
        index of its first piece there.  A run that does not come whole is read again
        alone: an error if it fails, unless `lenient` (then it is left out)."""
        buf, _, zero, digests = slot
        segs = ffi.new("unsigned long[]", 4 * len(pending))
        first = [0] * (len(pending) + 1)  # each run's first piece in zero and digests
        for i, (_, addr, n, flags, at) in enumerate(pending):
            segs[4 * i : 4 * i + 4] = (addr, n, at, flags)
            first[i + 1] = first[i] + (addr + n - 1) // PIECE - addr // PIECE + 1
        read, i = [], 0
        while i < len(pending):
            n = lib.ck_read_pieces(self.pid, segs + 4 * i, len(pending) - i, buf, PIECE, self.hash,
                                   zero + first[i], digests + first[i], len(zero) - first[i])
            if n < 0:  # (cannot be: a buffer of CHUNK bytes has at most a piece a page)
                raise PyckptError(f"process {self.pid}: ck_read_pieces failed ({os.strerror(-n)})")
            read += [(pending[r], first[r]) for r in range(i, i + n)]
            i += n
            if i < len(pending):
                _, addr, size, _, at = pending[i]
                if self._got(lib.ck_vm_read(self.pid, addr, buf + at, size), addr, size):
                    segs[4 * i + 3] |= SEG_READ  # (came alone: ck_read_pieces sorts it out)
                else:
                    i += 1
        if self.progress is not None:
            self.progress(sum(run[2] for run, _ in read))
        return read

    def _pieces(self, slot, pos: int, addr: int, n: int, k: int, todo: list, runs: list) -> None:
        """The PageRuns (added to `runs`) of the `n` bytes at `pos` in the buffer, read
        from `addr`, whose first piece is the `k`-th of the slot's zero flags and
        digests: zero, kept in the parent, or to be written (appended to `todo`)."""
        _, view, zero, digests = slot
        mv = memoryview(view)
        for a, np_ in _grid(addr, n // PAGE):
            length = np_ * PAGE
            if zero[k]:
                runs.append(PageRun(a, np_, 0, 0, zero=True))
                self.zero += length
            else:
                digest = digests[k] if self.hash else xxhash.xxh3_64_intdigest(mv[pos : pos + length])
                parts = _parts(self.parent.get(a & ~(PIECE - 1)), a, length) if self.parent else None
                if parts and len(parts) == 1 and parts[0][4] == digest:
                    runs.append(PageRun(a, np_, parts[0][2], digest, image=parts[0][1], chunks=[digest]))
                    self.inherited += length
                elif parts and self.read is not None:
                    runs += self._against_parent(mv, pos, a, parts, todo)
                else:
                    run = PageRun(a, np_, 0, digest, chunks=[digest])
                    runs.append(run)
                    todo.append((pos, length, run))
            pos += length
            k += 1

    def _write(self, slot, todo: list[tuple[int, int, PageRun]]) -> None:
        """Write the pieces of `todo` (start in the buffer, length, run), one write per
        stretch of them that touch in the buffer; each run gets its offset."""
        self._write_at(slot, self._reserve(todo))

    def _reserve(self, todo: list[tuple[int, int, PageRun]]) -> list[tuple[int, int, int]]:
        """The stretches of `todo`'s pieces that touch in the buffer, as (start, stop,
        offset in the page store), each reserved there; each run gets its offset."""
        out = []
        i = 0
        while i < len(todo):  # one write per stretch of stored pieces
            j = i + 1
            while j < len(todo) and todo[j][0] == todo[j - 1][0] + todo[j - 1][1]:
                j += 1
            start, stop = todo[i][0], todo[j - 1][0] + todo[j - 1][1]
            off = self.pages.reserve(stop - start)
            for p, _, run in todo[i:j]:
                run.offset = off + p - start
            self.stored += stop - start
            out.append((start, stop, off))
            i = j
        return out

    def _write_at(self, slot, stretches: list[tuple[int, int, int]]) -> None:
        """Write the stretches (see _reserve) of the buffer, their disk blocks allocated
        first: by the thread that writes, after a frozen target's copy (defer) once it
        runs again (in the reading thread, the 11 fallocates of a Python kernel's 35 MiB
        took ~1 ms of its freeze)."""
        if stretches:  # (they lie end to end in the page store)
            self.pages.allocate(stretches[0][2], stretches[-1][2] + stretches[-1][1] - stretches[-1][0]
                                - stretches[0][2])
        mv = memoryview(slot[1])
        for start, stop, off in stretches:
            self.pages.write_at(mv[start:stop], off, aligned=True)  # (whole pages of the page-aligned buffer)

    def _against_parent(self, mv, pos: int, a: int, parts: list, todo: list) -> list[PageRun]:
        """The runs of a piece at `a` (in the buffer at `pos`) that changed since the parent
        image, which keeps it as `parts` (see _parts): a part whose digest is unchanged is
        kept where it is; a changed one is compared page by page with the parent's copy,
        and only the pages that differ are stored (queued on `todo`), the others are kept
        in the parent as runs of their own.  A Python kernel's heap, rewritten by every
        cell and collection, changes a few bytes of most of its 256 KiB pieces: ~5 times
        less stored than whole pieces (measured 7 of 38 MiB)."""
        runs: list[PageRun] = []
        for qa, image, offset, qn, digest in parts:
            at = pos + (qa - a)
            new = mv[at : at + qn * PAGE]
            if xxhash.xxh3_64_intdigest(new) == digest:
                runs.append(PageRun(qa, qn, offset, digest, image=image, chunks=[digest]))
                self.inherited += qn * PAGE
                continue
            old = self.read(image, offset, qn * PAGE)
            same = _same_pages(old, new, qn)
            i = 0
            while i < qn:
                j = i + 1
                while j < qn and same[j] == same[i]:
                    j += 1
                d = xxhash.xxh3_64_intdigest(new[i * PAGE : j * PAGE])
                if same[i]:
                    runs.append(PageRun(qa + i * PAGE, j - i, offset + i * PAGE, d, image=image, chunks=[d]))
                    self.inherited += (j - i) * PAGE
                else:
                    run = PageRun(qa + i * PAGE, j - i, 0, d, chunks=[d])
                    runs.append(run)
                    todo.append((at + i * PAGE, (j - i) * PAGE, run))
                i = j
        return runs


def _same_pages(old: bytes, new, n: int) -> list[bool]:
    """For each of the `n` pages of `new` (a buffer), whether it holds what `old` does."""
    if _HAVE_SAME_PAGES:
        flags = ffi.new("unsigned char[]", n)
        lib.ck_same_pages(old, ffi.from_buffer(new), n * PAGE, PAGE, flags)
        return [bool(f) for f in flags]
    # (an old build of the helper: compared as digests, ~15 times slower than memcmp)
    was = memoryview(old)
    return [xxhash.xxh3_64_intdigest(was[k * PAGE : (k + 1) * PAGE])
            == xxhash.xxh3_64_intdigest(new[k * PAGE : (k + 1) * PAGE]) for k in range(n)]


_HAVE_SAME_PAGES = hasattr(lib, "ck_same_pages")


def _parts(parts: list | None, a: int, length: int) -> list | None:
    """Those of `parts` (what the parent keeps of a piece of the grid: (address, image,
    offset, pages, digest) runs) that make up exactly [a, a + length), in order; None when
    the parent does not hold all of it (not present there, or zero)."""
    if not parts:
        return None
    mine = [q for q in parts if a <= q[0] < a + length]
    at = a
    for q in mine:
        if q[0] != at:
            return None
        at += q[3] * PAGE
    return mine if mine and at == a + length else None


class ParentPages:
    """The parent image of an incremental dump, opened (with its chain) before the
    target is touched: what memory the child need not store (see PageCopier)."""

    def __init__(self, path):
        from ..image import ImageReader
        from ..image.chain import MAX_CHAIN, identity, parent_record
        from .task import TaskRecord, process_views

        self.path = os.path.abspath(path)
        reader = ImageReader(path)
        above = parent_record(reader)
        self.depth = (above.depth if above else 0) + 1
        if self.depth > MAX_CHAIN:
            raise ImageError(f"image at {path} is the end of a chain of {self.depth} images, the most "
                             f"pyckpt keeps is {MAX_CHAIN}: dump without a parent to start a new chain",
                             path=path)
        if above is not None:
            reader.chain(1)  # every image up the chain is there and is the one it names
        self.identity = identity(reader)
        self.reader = reader
        self.fds: dict[int, int] = {}  # image (as the child counts) -> its pages.img, for read()
        # {pid: {piece's grid address: [(address, image, offset, pages, digest)...]}}: the runs
        # that keep a piece of the grid (one, or those a dump against a parent cut it into:
        # PageCopier._against_parent), images as the child counts them
        self.index: dict[int, dict[int, list[tuple[int, int, int, int, int]]]] = {}
        for view in process_views(reader):
            where: dict[int, list[tuple[int, int, int, int, int]]] = {}
            for v in view.of_type(VmaRecord):
                for p in v.pages:
                    if p.zero or not p.chunks:
                        continue
                    for (a, np_), (off, _, digest) in zip(_grid(p.addr, p.npages), p.pieces()):
                        where.setdefault(a & ~(PIECE - 1), []).append((a, p.image + 1, off, np_, digest))
            found = view.of_type(TaskRecord)
            if found:
                self.index[found[0].pid] = where

    def read(self, image: int, offset: int, length: int) -> bytes:
        """`length` bytes at `offset` of the pages.img of the image `image` steps up the
        child's chain (1: the parent); ImageError when it is short."""
        fd = self.fds.get(image)
        if fd is None:
            fd = self.fds[image] = self.reader.open_pages(image - 1)
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise ImageError(f"image at {self.reader.chain(image - 1).where}: pages.img is short "
                             f"(changed since the dump against it began?)", path=self.path)
        return data

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def record(self, image_dir) -> "object":
        from ..image.chain import ParentRecord, relative_path

        return ParentRecord(relative_path(self.path, image_dir), *self.identity, self.depth)


# PAGEMAP_SCAN (Linux 6.7): page categories, and the ioctl's number
PAGE_IS_WPALLOWED, PAGE_IS_WRITTEN, PAGE_IS_FILE, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_PFNZERO = (
    1, 2, 4, 8, 16, 32)
PAGEMAP_SCAN = (3 << 30) | (96 << 16) | (ord("f") << 8) | 16
SCAN_REGIONS = 8192


def scan_areas(pm_fd: int, areas: list[tuple[int, int, int]]):
    """For each (start, end, mode) of `areas` (sorted, not overlapping): (runs as `_scan`
    gives them, the page categories of its present and swapped pages as (start, end,
    categories) ranges) — from one PAGEMAP_SCAN walk of the page tables for every run of
    areas of one mode, instead of a walk per VMA (a Python kernel has ~400 VMAs: ~10 ms
    of its freeze).  The categories say what pre-copy asks at the freeze (precopy.py:
    written since, still tracked, the zero page).  None when the kernel has no
    PAGEMAP_SCAN (the caller scans each VMA)."""
    if not areas:
        return []
    import fcntl  # (a dump's: not in a restore's start-up)

    vec = ffi.new("uint64_t[]", 3 * SCAN_REGIONS)
    words = memoryview(ffi.buffer(vec)).cast("Q")
    where = int(ffi.cast("uintptr_t", vec))
    out: list = []
    i = 0
    while i < len(areas):
        j = i + 1  # areas i..j-1: one mode, scanned in one walk (the gaps between cost nothing)
        while j < len(areas) and areas[j][2] == areas[i][2]:
            j += 1
        mode = areas[i][2]
        ret = PAGE_IS_WPALLOWED | PAGE_IS_WRITTEN | PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO
        if mode == SCAN_PRIVATE_FILE:
            ret |= PAGE_IS_FILE  # (asks the kernel to look at each present page: only here)
        regions: list[int] = []
        pos, end = areas[i][0], areas[j - 1][1]
        while pos < end:
            arg = bytearray(struct.pack("12Q", 96, 0, pos, end, 0, where, SCAN_REGIONS, 0, 0, 0,
                                        PAGE_IS_PRESENT | PAGE_IS_SWAPPED, ret))
            try:
                n = fcntl.ioctl(pm_fd, PAGEMAP_SCAN, arg)
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in (25, 22) and not out and not regions:  # ENOTTY, EINVAL: no PAGEMAP_SCAN
                    return None
                raise PyckptError(f"reading pagemap at {pos:#x} failed: {e.strerror}") from None
            regions += words[: 3 * n].tolist()
            walk_end = struct.unpack_from("Q", arg, 32)[0]
            if walk_end <= pos:
                raise PyckptError(f"reading pagemap at {pos:#x} failed: the walk did not move")
            pos = walk_end
        k = 0
        for start, stop, _ in areas[i:j]:
            while k < len(regions) and regions[k + 1] <= start:
                k += 3
            runs: list[tuple[int, int]] = []
            categories: list[tuple[int, int, int]] = []
            m = k
            while m < len(regions) and regions[m] < stop:
                s, e, cat = max(regions[m], start), min(regions[m + 1], stop), regions[m + 2]
                categories.append((s, e, cat))
                if mode == SCAN_ANON or not cat & PAGE_IS_FILE:  # (as ck_pagemap_runs decides)
                    first, count = (s - start) // PAGE, (e - s) // PAGE
                    if runs and runs[-1][0] + runs[-1][1] == first:
                        runs[-1] = (runs[-1][0], runs[-1][1] + count)
                    else:
                        runs.append((first, count))
                m += 3
            out.append((runs, categories))
        i = j
    return out


def _scan(pm_fd: int, start: int, npages: int, mode: int) -> list[tuple[int, int]]:
    cap = 256
    stored = ffi.new("unsigned long *")
    while True:
        out = ffi.new("unsigned long[]", 2 * cap)
        n = lib.ck_pagemap_runs(pm_fd, start, npages, mode, out, cap, stored)
        if n == -28:  # ENOSPC: more runs than room
            cap *= 8
            continue
        if n < 0:
            raise PyckptError(f"reading pagemap at {start:#x} failed: {os.strerror(-n)}")
        return [(int(out[2 * i]), int(out[2 * i + 1])) for i in range(n)]


# --- restore ---------------------------------------------------------------


def own_vdso() -> tuple[dict[str, int], int, int]:
    """This process's vDSO block sizes, [vdso] text digest, and [vdso] start: found once
    per process (own_vdso_blocks; its text is the kernel's, never changed)."""
    pid = os.getpid()
    if pid not in _OWN_VDSO:
        sizes, digest, start = {}, 0, 0
        for m in own_vdso_blocks():
            if m.path in VDSO_NAMES:
                sizes[m.path] = m.size
                if m.path == "[vdso]":
                    start = m.start
                    digest = xxhash.xxh3_64_intdigest(_vdso_text(pid, m.start, m.end))
        _OWN_VDSO[pid] = (sizes, digest, start)
    sizes, digest, start = _OWN_VDSO[pid]
    return dict(sizes), digest, start


_OWN_VDSO: dict[int, tuple[dict[str, int], int, int]] = {}


def prepare(rctx: RestoreContext) -> None:
    """Before the task exists: check the kernel's vDSO and open every file to map."""
    vd = rctx.image.one(VdsoRecord)
    sizes, digest, _ = own_vdso()
    want = {b.name: b.end - b.start for b in vd.blocks}
    if want != sizes or digest != vd.vdso_xxh3:
        raise KernelMismatchError(
            f"the running kernel's vDSO ({sizes}) differs from the image's ({want}"
            f"{', same sizes but other code' if want == sizes else ''}); restore on another "
            "kernel is not supported yet"
        )
    pages = rctx.pass_fd("pages", lambda: rctx.image.open_pages())
    if (pages is not None and SOURCE not in rctx.shared and not rctx.check_only and not rctx.options.lazy
            and _UFFD["usable"] and SOURCE_BESIDE_MIN <= rctx.image.pages_size <= UFFD_MAX):
        rctx.shared[SOURCE] = _Source(pages)  # (_copied_in's: mapped meanwhile)
        rctx.at_close(rctx.shared[SOURCE].close)
    for level in sorted({p.image for v in rctx.image.of_type(VmaRecord) for p in v.pages if p.image}):
        rctx.pass_fd(("pages", level), lambda level=level: rctx.image.open_pages(level))
    # A shared mapping shows the file as it is, by definition (others may write it: a
    # JVM's hsperfdata file): only its inode is checked, and that it still covers the
    # mapping.  A private one must hold what it held (its pages not in the image are
    # read from the file again).
    private = {v.file.path for v in rctx.image.of_type(VmaRecord) if v.kind == "file" and not v.shared}
    for v in rctx.image.of_type(VmaRecord):
        if v.kind == "file":
            mode = os.O_RDWR if (v.shared and v.prot & PROT_WRITE) else os.O_RDONLY
            content = v.file.path in private and not rctx.options.allows_changed(v.file.path)
            rctx.pass_fd(("map", v.file.path, mode),
                         lambda v=v, mode=mode, content=content: _open_mapped(rctx, v, mode, content))
        elif v.kind in MAPPED_OBJECTS and MAPPED_OBJECTS[v.kind].attaches:
            MAPPED_OBJECTS[v.kind].prepare_mapping(rctx, v)
        elif v.kind in MAPPED_OBJECTS:
            rctx.pass_fd(*MAPPED_OBJECTS[v.kind].mapping_opener(rctx, v))


def _open_mapped(rctx: RestoreContext, v: VmaRecord, mode: int, content: bool) -> int:
    """The file a VMA maps, checked (see prepare): a file cut shorter than the mapped
    range it had is refused even for a shared mapping (the process would fault there)."""
    # (left non-blocking: the fd only maps the file, which O_NONBLOCK does not change)
    fd, st = open_checked_stat(v.file, mode | os.O_NONBLOCK, content=content)
    need = min(v.file.size, v.offset + v.end - v.start)
    size = st.st_size
    if size < need and not rctx.options.allows_changed(v.file.path):
        os.close(fd)
        raise needs(FileChangedError(v.file.path, f"size {size}, was {v.file.size}: memory at "
                                     f"{v.start:#x}-{v.end:#x} maps it up to offset {need}, and "
                                     "would fault (SIGBUS) past its end"), Fix("allow_changed_files"))
    return fd


def vdso_start(rctx: RestoreContext) -> int:
    blocks = rctx.image.one(VdsoRecord).blocks
    return min(b.start for b in blocks)


def target_ranges(image) -> list[tuple[int, int]]:
    """Every address range the restored task will occupy."""
    rs = [(v.start, v.end) for v in image.of_type(VmaRecord)]
    rs += [(b.start, b.end) for b in image.one(VdsoRecord).blocks]
    return rs


def restore_layout(rctx: RestoreContext) -> None:
    """Put the vDSO block back and map every VMA (writable where pages will land)."""
    inj = rctx.inj
    vd = rctx.image.one(VdsoRecord)
    start = vdso_start(rctx)
    text = next(b for b in vd.blocks if b.name == "[vdso]")
    batch = inj.batch()  # the vDSO, every mmap and madvise in one go (an attach runs on its own)
    batch.add(nr.arch_prctl, ARCH_MAP_VDSO_64, start, want=text.end - text.start,
              fail=lambda size: KernelMismatchError(
                  f"arch_prctl(ARCH_MAP_VDSO_64, {start:#x}) returned {size}; "
                  f"expected the vDSO size {text.end - text.start}"))
    for v in rctx.image.of_type(VmaRecord):
        prot = v.prot | (PROT_READ | PROT_WRITE if v.pages else 0)
        flags = MAP_FIXED | (MAP_SHARED if v.shared else MAP_PRIVATE)
        if "gd" in v.vmflags:
            flags |= MAP_GROWSDOWN
        if "nr" in v.vmflags:
            flags |= MAP_NORESERVE
        if v.kind in MAPPED_OBJECTS and MAPPED_OBJECTS[v.kind].attaches:
            batch.run()
            MAPPED_OBJECTS[v.kind].attach(rctx, v)
            fd = None
        elif v.kind == "file":
            mode = os.O_RDWR if (v.shared and v.prot & PROT_WRITE) else os.O_RDONLY
            fd, off = rctx.passed[("map", v.file.path, mode)], v.offset
        elif v.kind in MAPPED_OBJECTS:
            fd, off = rctx.passed[MAPPED_OBJECTS[v.kind].mapping_opener(rctx, v)[0]], v.offset
        else:
            flags |= MAP_ANONYMOUS
            fd, off = -1, 0
        if fd is not None:
            batch.add(nr.mmap, v.start, v.end - v.start, prot, flags, fd, off, want=v.start,
                      fail=lambda got, v=v: _mmap_failed(rctx, v, got))
        for flag in v.vmflags:
            advice = MADVISE_FOR_FLAG.get(flag)
            if advice is not None:
                batch.add(nr.madvise, v.start, v.end - v.start, advice, want=WANT_ANY)
    batch.run()


def _mmap_failed(rctx: RestoreContext, v: VmaRecord, got: int) -> Exception:
    """The error of the batched mmap of `v` that returned `got` (restore_layout)."""
    if -4096 < got < 0:
        return RemoteCallError(f"mmap of {v.name or 'anonymous memory'} at {v.start:#x}", rctx.pid, -got)
    return PyckptError(f"mmap at {v.start:#x} landed at {got:#x}")


def run_source(rctx: RestoreContext, run: PageRun) -> tuple[int, int] | None:
    """The file and offset that hold `run`: (fd in the restored task — pages.img of
    the image of the chain that keeps it, passed in PREPARE —, offset in it); None
    for a zero run (nothing to read: fresh anonymous memory is zero).  In pyckpt
    itself the same file is `rctx.image.open_pages(run.image)`."""
    if run.zero:
        return None
    return rctx.passed["pages" if not run.image else ("pages", run.image)], run.offset


def _coalesced(pages: list[PageRun]) -> list[tuple[int, int, int, int]]:
    """(addr, length, offset, image) of the runs to read, with runs that touch in memory
    and in the same file merged; zero runs left out."""
    out: list[list[int]] = []
    for p in pages:
        if p.zero:
            continue
        length = p.npages * PAGE
        if (out and out[-1][0] + out[-1][1] == p.addr and out[-1][2] + out[-1][1] == p.offset
                and out[-1][3] == p.image):
            out[-1][1] += length
        else:
            out.append([p.addr, length, p.offset, p.image])
    return [tuple(x) for x in out]


def restore_pages(rctx: RestoreContext) -> None:
    """The task preads its own pages from pages.img, then protections are set
    (with `lazy`, its private anonymous pages come on first touch instead: lazy.py).

    Each piece of a run (READ_CHUNK) is populated first (MADV_POPULATE_WRITE):
    the kernel allocates the pages in one pass instead of taking a page fault
    for each 4 KiB the pread touches — in this VM that roughly halves the cost
    of filling fresh memory.  Only stored pages are populated, so sparse areas
    stay sparse, and zero runs are not touched at all.  A run an incremental
    image keeps in its parent is read from the parent's pages.img (`run_source`).
    The calls run in batches (inject.Batch) of up to READ_CHUNK bytes: a small
    process's many small runs cost one stop of the task, not two per run.
    A restore's private anonymous memory (up to UFFD_MAX) is copied in by pyckpt instead
    (_copied_in: UFFDIO_COPY, no zeroing of each page before it is written).
    """
    inj = rctx.inj
    vmas = rctx.image.of_type(VmaRecord)
    lazily: set[int] = set()
    batch, queued = inj.batch(), 0
    if rctx.options.lazy:  # private anonymous pages come when touched (pyckpt/lazy.py)
        from .. import lazy

        lazily = lazy.restore_pages(rctx, vmas)
    total = sum(p.npages for v in vmas if id(v) not in lazily for p in v.pages if not p.zero) * PAGE
    with rctx.progress.bar(total, "restore memory") as bar:
        if not rctx.options.lazy and _UFFD["usable"]:  # (those it copies in are left out below)
            lazily = _copied_in(rctx, vmas, batch, bar.update)
        for v in vmas:
            for addr, length, offset, image in _coalesced([] if id(v) in lazily else v.pages):
                pages_fd = rctx.passed["pages" if not image else ("pages", image)]
                for start in range(0, length, READ_CHUNK):
                    end = min(start + READ_CHUNK, length)
                    if queued and queued + end - start > READ_CHUNK:  # a batch reads at most READ_CHUNK
                        batch.run()
                        bar.update(queued)
                        queued = 0
                    # a hint: errors are harmless
                    batch.add(nr.madvise, addr + start, end - start, MADV_POPULATE_WRITE, want=WANT_ANY)
                    batch.add(nr.pread64, pages_fd, addr + start, end - start, offset + start,
                              want=end - start, fail=lambda n, at=addr + start, size=end - start: RemoteCallError(
                                  f"pread of {size} bytes of pages into {at:#x}"
                                  + (f" (read {n}: the image file is short)" if n >= 0 else ""),
                                  rctx.pid, -n if n < 0 else 5))  # EIO
                    queued += end - start
                    if queued >= READ_CHUNK:
                        batch.run()
                        bar.update(queued)
                        queued = 0
            if v.pages and v.prot != v.prot | PROT_READ | PROT_WRITE:
                batch.add(nr.mprotect, v.start, v.end - v.start, v.prot, what=f"mprotect of {v.start:#x}")
        batch.run()
        bar.update(queued)


# Private anonymous memory copied in by UFFDIO_COPY, at most (see _copied_in): a quarter of
# the machine's memory, as pyckpt maps pages.img whole (populated) to copy from.  It was
# 64 MiB; a 1 GiB image then read by the task (MADV_POPULATE_WRITE and pread: each page
# zeroed, then written) took PAGES 463 ms, copied in 279 ms (median of 5 each, alternating).
UFFD_MAX = max(64 << 20, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4)
_UFFD = {"usable": True}  # False once the task could not make a userfaultfd (then not asked again)


def _copied_in(rctx: RestoreContext, vmas: list[VmaRecord], batch, update=lambda n: None) -> set[int]:
    """The task's private anonymous memory filled from pyckpt (ck_uffd_fill: UFFDIO_COPY
    from pyckpt's mapping of pages.img, through a userfaultfd the task makes, every VMA
    registered only while it is filled), instead of preads by the task into memory it
    populated first: the kernel then allocates and copies each page without zeroing it
    first.  Returns the id()s of the VMAs filled so (restore_pages reads the others).

    Up to UFFD_MAX bytes so (a larger restore reads them all), for VMAs whose pages
    are all in this image, and not for VMAs marked MADV_HUGEPAGE ("hg": populated memory gets
    huge pages, UFFDIO_COPY 4 KiB ones).  Where the task cannot make a userfaultfd (a
    kernel without it, a policy that refuses it), or the copy fails, the preads fill
    everything, over whatever was copied.  Nor where memory is in place before PAGES
    (PREFILLED: a fast-copy template's huge pages, fastcopy._collapse), which
    UFFDIO_COPY refuses (EEXIST).  It copies up to READ_CHUNK bytes a call (the VMAs
    registered for each), and `update(bytes)` moves the progress bar after each: the
    bar moves, and a pending interrupt is taken, as the preads' batches do."""
    if rctx.shared.get(PREFILLED):
        return set()
    chosen, ranges, runs = [], [], []
    total = 0
    huge = _thp_always()  # (then every VMA not marked "nh" gets huge pages populated)
    for v in vmas:
        if v.kind != "anon" or v.shared or not v.pages or "hg" in v.vmflags or any(p.image for p in v.pages):
            continue
        if huge and "nh" not in v.vmflags:
            continue
        mine = _coalesced(v.pages)
        if mine:
            chosen.append(v)
            ranges += (v.start, v.end - v.start)
            for addr, length, offset, _ in mine:
                runs += (addr, length, offset)
                total += length
    if not chosen or total > UFFD_MAX or (total > 64 << 20 and total > _memory_limit() // 4):
        return set()
    fd = rctx.inj.call(nr.userfaultfd, os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        _UFFD["usable"] = False
        return set()
    batch.add(nr.close, fd, what="close of the task's userfaultfd")  # (with the reads' batch)
    from .files import take_fd

    uffd = take_fd(rctx.pid, fd)
    done = 0
    try:
        src = rctx.shared[SOURCE].get() if SOURCE in rctx.shared else None
        c_ranges = ffi.new("unsigned long[]", ranges)
        if src is not None and hasattr(lib, "ck_uffd_copy_runs"):
            r = lib.ck_uffd_register(uffd, c_ranges, len(chosen))  # (all, or none and -errno)
            registered = r == 0
            try:
                for part in _cut_runs(runs, READ_CHUNK) if registered else ():
                    r = lib.ck_uffd_copy_runs(uffd, src, ffi.new("unsigned long[]", part), len(part) // 3)
                    if r < 0:
                        break
                    done += sum(part[1::3])
                    update(sum(part[1::3]))
            finally:
                if registered:
                    undone = lib.ck_uffd_unregister(uffd, c_ranges, len(chosen))
                    r = r or undone
        elif src is not None:  # (a helper built before ck_uffd_copy_runs: all in one call)
            r = lib.ck_uffd_fill(uffd, c_ranges, len(chosen), src, ffi.new("unsigned long[]", runs),
                                 len(runs) // 3)
        else:  # read through a buffer (see ck_uffd_fill_read): a small image's
            buf = _FILL_BUFFERS.pop() if _FILL_BUFFERS else ffi.new("char[]", FILL_BUFFER)
            try:
                r = lib.ck_uffd_fill_read(uffd, c_ranges, len(chosen), rctx.passed["pages"],
                                          ffi.new("unsigned long[]", runs),
                                          len(runs) // 3, buf, FILL_BUFFER)
            finally:
                _FILL_BUFFERS.append(buf)
        if r == 0 and not done:
            done = total
            update(total)
    finally:
        os.close(uffd)  # (the last reference: the kernel unregisters whatever is left)
    if r < 0:
        update(-done)  # (the preads read it all again)
        if -r in _UFFD_MISSING:  # (not a page in place, a lack of memory...: this restore's)
            _UFFD["usable"] = False
        return set()
    return {id(v) for v in chosen}


def _cut_runs(runs: list[int], most: int):
    """The flat (address, length, offset) triples of `runs`, as lists of at most `most`
    bytes each (a longer run cut)."""
    part, size = [], 0
    for i in range(0, len(runs), 3):
        addr, length, offset = runs[i:i + 3]
        at = 0
        while at < length:
            n = min(length - at, most - size)
            part += (addr + at, n, offset + at)
            size += n
            at += n
            if size == most:
                yield part
                part, size = [], 0
    if part:
        yield part


# ck_uffd_fill's errors that say the kernel or its policy does not give what the copy-in
# needs (then not asked again in this process)
_UFFD_MISSING = {errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTTY, errno.EOPNOTSUPP}


def _thp_always() -> bool:
    """Whether transparent huge pages are on for every VMA (not only MADV_HUGEPAGE ones):
    populated memory then gets huge pages where UFFDIO_COPY puts 4 KiB ones, so the
    copy-in would give the restored process less than a fresh one would have."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


def _memory_limit() -> int:
    """The memory pyckpt's cgroup may use, or the machine's where it has no limit: the
    copy-in maps pages.img whole, which that cgroup is charged for beside the restored
    memory."""
    from ..proc.misc import read_memory_limit

    cgroup = read_memory_limit()
    return UFFD_MAX * 4 if cgroup is None else min(UFFD_MAX * 4, cgroup)


# RestoreContext.shared key: some private anonymous memory is in place before PAGES (a
# fast-copy template's huge pages): no copy-in (_copied_in)
PREFILLED = "memory: anonymous memory in place before its pages are read"


# The buffer a small restore's copy-in reads pages.img through (ck_uffd_fill_read); kept
# for the next restore (one per restore running at once).
FILL_BUFFER = 256 << 10
_FILL_BUFFERS: list = []


SOURCE = "memory: pages.img mapped for the copy-in"  # RestoreContext.shared key: a _Source
# From this size of pages.img its mapping is made beside (_Source); a smaller one is mapped
# when it is needed: the threads would cost more than the ~60 us a MiB they save.
SOURCE_BESIDE_MIN = 16 << 20


def source_beside(rctx: RestoreContext) -> "_Source | None":
    """The copy-in's mapping of pages.img (_Source), started at the end of VALIDATE when
    the restore will copy in from it, so that the page check beside (image.PageCheck)
    hashes the same mapping instead of faulting in one of its own: the kernel image's
    35 MiB, checked inline, 8 ms through faults, ~2 ms once mapped.  None otherwise
    (prepare makes it, where it is made, for a restore without that check)."""
    if SOURCE in rctx.shared:
        return rctx.shared[SOURCE]
    if rctx.check_only or rctx.options.lazy or not _UFFD["usable"] \
            or not SOURCE_BESIDE_MIN <= rctx.image.pages_size <= UFFD_MAX:
        return None
    fd = rctx.image.open_pages()
    try:
        source = rctx.shared[SOURCE] = _Source(fd)
    finally:
        os.close(fd)
    rctx.at_close(source.close)
    return source


class _Source:
    """pyckpt's mapping of pages.img that _copied_in copies from (MAP_POPULATE: ~2 ms for
    35 MiB here), made in a thread from PREPARE on, while the task is made and laid out
    (ck_map_populated: Python's mmap would hold Python's lock meanwhile); `close()` (at
    the restore's end: RestoreContext.at_close) waits for it and unmaps it in a thread
    too (~1 ms).  Bare `_thread`: a restore does without `threading`."""

    def __init__(self, fd: int):
        import _thread

        self.addr, self.size = 0, os.fstat(fd).st_size
        self._done = _thread.allocate_lock()
        self._done.acquire()
        fd = os.dup(fd)  # (its own: the passed fds may be closed before it maps)
        try:
            _thread.start_new_thread(self._map, (fd,))
        except RuntimeError:
            self._map(fd)

    def _map(self, fd: int) -> None:
        try:
            addr = lib.ck_map_populated(fd, self.size)
            self.addr = addr if addr > 0 else 0
        finally:
            os.close(fd)
            self._done.release()

    def get(self):
        """The mapping (a char * of its size), or None when it could not be made."""
        with self._done:
            pass
        return ffi.cast("const char *", self.addr) if self.addr else None

    def close(self) -> None:
        import _thread

        with self._done:
            pass
        addr, self.addr = self.addr, 0
        if addr:
            try:
                _thread.start_new_thread(lib.ck_unmap, (addr, self.size))
            except RuntimeError:
                lib.ck_unmap(addr, self.size)


TASK_END_4LEVEL = 0x7FFFFFFFF000


def validate(image) -> None:
    """VMAs page-aligned, in user space, not overlapping; runs inside their VMA."""
    from ..errors import ImageError

    def bad(what: str):
        raise ImageError(f"image at {image.path}: {what}")

    image.one(VdsoRecord)
    from ..image.chain import ParentRecord

    parents = image.of_type(ParentRecord)
    depth = parents[0].depth if len(parents) == 1 else 0
    areas = [(v.start, v.end, v.name) for v in image.of_type(VmaRecord)]
    areas += [(b.start, b.end, b.name) for b in image.one(VdsoRecord).blocks]
    prev_end, prev_name = 0, ""
    for start, end, name in sorted(areas):
        if start % PAGE or end % PAGE or not 0 < start < end <= TASK_END_4LEVEL:
            bad(f"memory area {start:#x}-{end:#x} ({name}) is not a valid user-space range")
        if start < prev_end:
            bad(f"memory areas overlap at {start:#x} ({prev_name} and {name})")
        prev_end, prev_name = end, name
    kinds = {"anon", "shared_anon", "file", *MAPPED_OBJECTS}
    for v in image.of_type(VmaRecord):
        if v.kind not in kinds or (v.kind == "file" and v.file is None):
            bad(f"memory area {v.start:#x} has a bad kind or file ({v.kind})")
        start, end = v.start, v.end
        for p in v.pages:
            addr, n, offset = p.addr, p.npages, p.offset
            if n <= 0 or offset < 0 or offset % PAGE or addr % PAGE or addr < start or addr + n * PAGE > end:
                bad(f"a page run at {addr:#x} lies outside its memory area {start:#x}-{end:#x}")
            if p.zero and (p.image or p.chunks or v.kind != "anon"):
                bad(f"a zero run at {addr:#x} of memory area {start:#x} ({v.kind}) is not one "
                    "pyckpt writes")
            # (the pieces of the PIECE grid it covers: _grid's count, without the list)
            if p.chunks and len(p.chunks) != (addr + n * PAGE - 1) // PIECE - addr // PIECE + 1:
                bad(f"a page run at {addr:#x} has {len(p.chunks)} piece digests for "
                    f"{len(_grid(addr, n))} pieces")
            if p.image and (depth == 0 or not 0 < p.image <= depth):
                bad(f"a page run at {addr:#x} is kept {p.image} images up a chain of {depth}")
