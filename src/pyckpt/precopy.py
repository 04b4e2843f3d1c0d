"""Pre-copy: copy a process's memory while it runs, then at the freeze only what
it wrote since.  The freeze shrinks from "copy all memory" to "copy what changed".

This kernel has no soft-dirty bits; the tracking is userfaultfd write-protect
in asynchronous mode (UFFD_FEATURE_WP_ASYNC, Linux 6.7): the kernel itself
resolves a write to a protected page and records it, nobody has to answer a
fault, and PAGEMAP_SCAN reports which pages were written (PAGE_IS_WRITTEN).

1. The target is frozen for a moment: a userfaultfd is made inside it (an
   injected syscall), taken over by pyckpt (pidfd_getfd) and closed there.
   The userfaultfd belongs to the target's memory, whoever holds the fd.
2. Every private anonymous VMA that is not PROT_NONE is registered for
   write-protect tracking, and its present pages are write-protected (only
   those: protecting a large sparse VMA whole would allocate page tables
   for all of it); the target runs again.
3. Pass 1 copies those pages into the page store while the target runs,
   cut at a 256 KiB grid.  When it finds that the target wrote a fair
   amount of what it copied meanwhile (1 MiB to a quarter), pass 2 finds
   those pages and protects them again in one walk (PAGEMAP_SCAN,
   PM_SCAN_WP_MATCHING), then copies their chunks again, still running.
4. At the freeze, memory.dump asks `reusable()` for each chunk of the grid:
   pass 1's copies are kept only if the same pages are present, each still
   tracked, not written, not the zero page, and the VMA maps the same
   anonymous pages there (its page offset, which mremap carries along).
   Any doubt copies the chunk again.
5. Tracking is removed (UFFDIO_UNREGISTER clears the protection) and the
   userfaultfd closed, whether the dump succeeded or not.

Writes the tracking cannot see turn it off (everything is copied at the
freeze, `DumpStats.precopy_off` says why): memory the kernel has pinned
(VmPin: io_uring fixed buffers, RDMA, VFIO — written without a fault), or a
userfaultfd of the target's own.  While pre-copy runs, the target's own
UFFDIO_REGISTER on its private memory fails (EBUSY), and a target that
re-protects pages itself through PAGEMAP_SCAN (PM_SCAN_WP_MATCHING) can hide
its writes; both are for programs that track their own memory.

The image holds only the final runs, so restore is unchanged; pass-1 copies
that were replaced stay unused in pages.img.  Pass 1 copies as the freeze does
(memory.PageCopier): zero pieces are not stored, and in an incremental dump a
piece the parent image holds unchanged is not stored either — so the
comparison with the parent happens while the target runs.  Pre-copy covers private
anonymous memory of the dumped process (not of its children, not shared
memory, which are copied at the freeze as usual).
"""

from __future__ import annotations

import bisect
import ctypes
import fcntl
import os
import struct
from ._dataclass import dataclass

from . import proc
from ._native._ck import ffi, lib
from .errors import DumpError
from .inject import Injector, injection_site_from, nr
from .kinds.files import take_fd
from .kinds.memory import PAGE, PIECE, PageCopier, PageRun, SCAN_ANON, _classify, _scan, merged
from .seize import Seized

CHUNK = PIECE  # the grid pass 1 is judged on at the freeze (256 KiB)
# pages.img warmed ahead of the freeze's writes (PageStoreWriter.warm): twice what pass 2
# copied again (the pages written during pass 1), within these bounds.  A Jupyter kernel's
# freeze writes 3-10 MiB (copy-on-write pages of its libraries' data, which pre-copy does
# not track, and what it wrote since pass 2).
WARM_MIN, WARM_MAX = 16 << 20, 64 << 20
CHUNK_PAGES = CHUNK // PAGE
UFFD_USER_MODE_ONLY = 1
UFFD_API = 0xAA
UFFD_FEATURE_WP_ASYNC = 1 << 15
UFFDIO_REGISTER_MODE_WP, UFFDIO_WRITEPROTECT_MODE_WP = 2, 1
PAGE_IS_WPALLOWED, PAGE_IS_WRITTEN, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_PFNZERO = 1, 2, 8, 16, 32
SCAN_REGIONS = 4096


def _iowr(kind: int, nr_: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | nr_


UFFDIO_API = _iowr(0xAA, 0x3F, 24)
UFFDIO_REGISTER = _iowr(0xAA, 0x00, 32)
UFFDIO_UNREGISTER = (2 << 30) | (16 << 16) | (0xAA << 8) | 0x01  # _IOR, struct uffdio_range
UFFDIO_WRITEPROTECT = _iowr(0xAA, 0x06, 24)
PAGEMAP_SCAN = _iowr(ord("f"), 16, 96)
PM_SCAN_WP_MATCHING = 1
SECOND_PASS_MIN = 1 << 20  # bytes of pass 1's copies written meanwhile from which pass 2 runs
SECOND_PASS_MAX_SHARE = 0.25  # ... and up to which share of pass 1 (more: most is being rewritten)


class _Pagemap:
    """/proc/PID/pagemap open for PAGEMAP_SCAN walks (scan)."""

    def __init__(self, pid: int):
        self.fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        self.vec = (ctypes.c_uint64 * (3 * SCAN_REGIONS))()

    def __enter__(self) -> "_Pagemap":
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)

    def scan(self, start: int, end: int, flags: int, required: int, returned: int):
        """(start, end, categories) of the page ranges of [start, end) that have every
        category of `required`, with those of `returned` reported (and, with `flags`
        PM_SCAN_WP_MATCHING, write-protected as they are found)."""
        vec = self.vec
        pos = start
        while pos < end:
            arg = bytearray(struct.pack("12Q", 96, flags, pos, end, 0, ctypes.addressof(vec),
                                        SCAN_REGIONS, 0, 0, required, 0, returned))
            try:
                n = fcntl.ioctl(self.fd, PAGEMAP_SCAN, arg)
            except InterruptedError:
                continue
            for i in range(n):
                yield vec[3 * i], vec[3 * i + 1], vec[3 * i + 2]
            walk_end = struct.unpack_from("Q", arg, 32)[0]
            if walk_end <= pos:
                break
            pos = walk_end


def _part(run: PageRun, start: int, end: int) -> PageRun:
    """The part [start, end) of `run` (its ends on the grid of its pieces): its offset
    moved along (not for zeros), its piece digests cut to match; `xxh3` is left to
    memory.merged, which computes it from them."""
    first = min(run.addr + run.npages * PAGE, (run.addr & ~(PIECE - 1)) + PIECE)  # end of the first piece

    def index(a: int) -> int:
        return 0 if a < first else (a - first) // PIECE + 1

    return PageRun(start, (end - start) // PAGE, 0 if run.zero else run.offset + (start - run.addr), 0,
                   run.image, run.zero, run.chunks[index(start) : index(end - 1) + 1] if run.chunks else [])


@dataclass
class Copied:
    run: PageRun  # pages copied in pass 1
    identity: int  # the VMA's page offset (bytes) at run.addr: the same anonymous pages


class PreCopy:
    """Pass 1 of a dump of process `pid`; see the module docstring."""

    def __init__(self, pid: int, pages, progress, parent=None):
        self.pid = pid
        self.pages = pages
        self.progress = progress
        self.parent = parent  # memory.ParentPages of an incremental dump
        self.uffd = -1
        self.ranges: list[tuple[int, int]] = []  # registered
        self.chunks: dict[int, list[Copied]] = {}  # grid address -> what pass 1 copied there
        # VMA start -> (end, page offset, runs, piece runs, their addresses) of a VMA
        # pass 1 copied whole
        self.whole: dict[int, tuple] = {}
        self.copied = 0  # bytes in pass 1 (and 2)
        self.again = 0  # bytes copied again in pass 2 (written during pass 1)
        self.reused = 0  # bytes of pass 1 (and 2) kept at the freeze
        self.off = ""  # why pass 1 is not used, when it is not

    # -- setup and pass 1 ---------------------------------------------------

    def start(self) -> None:
        """Make the userfaultfd in the target (frozen for that moment), register, protect.

        Nothing is tracked (everything is copied at the freeze) when the target
        has pinned memory (io_uring buffers, RDMA...: the kernel writes it
        without a fault, unseen by write-protect) or a userfaultfd of its own."""
        self.off = _untrackable(self.pid)
        if self.off:
            return
        with Seized(self.pid):
            vdso = [m for m in proc.read_maps(self.pid) if m.path == "[vdso]"]
            if not vdso:
                raise DumpError(f"process {self.pid} has no [vdso]; cannot run code inside it")
            site = injection_site_from(self.pid, vdso[0].start, vdso[0].size)
            with Injector(self.pid, site, held=True) as inj:
                inj.use_gadget()
                fd = inj.check(nr.userfaultfd, os.O_CLOEXEC | os.O_NONBLOCK | UFFD_USER_MODE_ONLY,
                               what="userfaultfd (pre-copy needs Linux 6.7 or later)")
                try:
                    self.uffd = take_fd(self.pid, fd)
                finally:
                    inj.call(nr.close, fd)
        api = bytearray(struct.pack("QQQ", UFFD_API, UFFD_FEATURE_WP_ASYNC, 0))
        fcntl.ioctl(self.uffd, UFFDIO_API, api)
        pm = os.open(f"/proc/{self.pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for m in proc.read_maps(self.pid):
                if m.path.startswith("[v") or m.perms[:3] == "---":
                    continue  # vDSO blocks, vsyscall; PROT_NONE reservations (often huge)
                try:
                    kind, _ = _classify(self.pid, m)
                except Exception:  # noqa: BLE001 -- anything odd is simply not pre-copied
                    continue
                if kind != "anon":
                    continue
                try:
                    fcntl.ioctl(self.uffd, UFFDIO_REGISTER,
                                bytearray(struct.pack("QQQQ", m.start, m.end - m.start, UFFDIO_REGISTER_MODE_WP, 0)))
                    # Only present pages are protected: protecting a whole (large, sparse)
                    # VMA would allocate page tables for all of it.
                    for first, count in _scan(pm, m.start, (m.end - m.start) // PAGE, SCAN_ANON):
                        fcntl.ioctl(self.uffd, UFFDIO_WRITEPROTECT, bytearray(struct.pack(
                            "QQQ", m.start + first * PAGE, count * PAGE, UFFDIO_WRITEPROTECT_MODE_WP)))
                except OSError:
                    continue  # not tracked: copied at the freeze
                self.ranges.append((m.start, m.end))
        finally:
            os.close(pm)

    def copy_pass(self) -> None:
        """Copy the present pages of every tracked VMA while the target runs."""
        maps = {m.start: m for m in proc.read_maps(self.pid)}
        pm = os.open(f"/proc/{self.pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            plans = [(start, end, _scan(pm, start, (end - start) // PAGE, SCAN_ANON))
                     for start, end in self.ranges]
        finally:
            os.close(pm)
        jobs, where, vmas = [], [], []
        for start, end, runs in plans:
            m = maps.get(start)
            if m is None or m.end != end:
                continue  # changed meanwhile: left to the freeze
            vmas.append((start, end, m.offset, runs, len(jobs)))
            for first, count in runs:
                jobs.append((start + first * PAGE, count, True, True))
                where.append(m.offset - start)  # + address: the VMA's page offset there
        total = sum(n for _, n, _, _ in jobs) * PAGE
        copier = PageCopier(self.pid, self.pages,
                            self.parent.index.get(self.pid) if self.parent is not None else None,
                            self.parent.read if self.parent is not None else None)
        with self.progress.bar(total, "pre-copy memory") as bar:
            # what cannot be read (unmapped meanwhile) is left to the freeze
            results = copier.copy(jobs, bar.update, lenient=True)
        for base, runs in zip(where, results):
            for run in runs:  # one piece each: inside one chunk of the grid
                self.chunks.setdefault(run.addr & ~(CHUNK - 1), []).append(Copied(run, base + run.addr))
                self.copied += run.npages * PAGE
        for start, end, offset, runs, first_job in vmas:
            got = results[first_job : first_job + len(runs)]
            if all(sum(r.npages for r in g) == count for g, (_, count) in zip(got, runs)):
                # all of it copied: at the freeze, the same runs need only the written chunks
                self._keep_whole(start, end, offset, runs, [r for g in got for r in g])
        self._copy_again()
        # what the freeze will write, in page cache already there (see warm)
        self.pages.warm(min(WARM_MAX, max(WARM_MIN, 2 * self.again)))

    def _copy_again(self) -> None:
        """Pass 2: the chunks written while pass 1 ran are copied again, still while the
        target runs, so that the freeze copies only what was written since (a kernel's
        threads write a few MiB of its heap during the ~0.5 s pass 1 of a GiB: that was
        copied, hashed, compared with the parent and written at the freeze).  The pages
        written are found and write-protected again in one walk (PAGEMAP_SCAN with
        PM_SCAN_WP_MATCHING), then their chunks copied: a write after the walk is seen
        at the freeze.  Skipped when little or most was written (a second copy of most
        of the memory would double pass 1 and the image).  Any failure turns pre-copy
        off (the walk may have cleared what it found: the freeze copies everything)."""
        if self.off or not self.chunks:
            return
        written = self._written(protect=False)
        dirty = {b for s, e in written for b in range(s & ~(CHUNK - 1), e, CHUNK) if b in self.chunks}
        size = sum(c.run.npages for b in dirty for c in self.chunks[b]) * PAGE
        if size < SECOND_PASS_MIN or size > self.copied * SECOND_PASS_MAX_SHARE:
            return
        try:
            written = self._written(protect=True)
        except OSError as e:
            self.off = f"the second pre-copy pass could not protect the pages written ({e.strerror})"
            return
        dirty = sorted({b for s, e in written for b in range(s & ~(CHUNK - 1), e, CHUNK) if b in self.chunks})
        jobs, owners = [], []
        for base in dirty:
            by_vma: dict[int, list[tuple[int, int]]] = {}  # the VMA's page offset - address -> runs
            for c in self.chunks[base]:
                by_vma.setdefault(c.identity - c.run.addr, []).append((c.run.addr, c.run.npages))
            for delta, runs in by_vma.items():
                for addr, n in _joined(runs):
                    jobs.append((addr, n, True, True))
                    owners.append((base, delta))
        copier = PageCopier(self.pid, self.pages,
                            self.parent.index.get(self.pid) if self.parent is not None else None,
                            self.parent.read if self.parent is not None else None)
        results = copier.copy(jobs, None, lenient=True)
        again: dict[int, list[Copied]] = {base: [] for base in dirty}
        for (base, delta), (addr, n, _, _), runs in zip(owners, jobs, results):
            if sum(r.npages for r in runs) != n:
                again[base] = None  # (unmapped meanwhile: the freeze copies the chunk)
            elif again[base] is not None:
                again[base] += [Copied(r, delta + r.addr) for r in runs]
        for base, copies in again.items():
            if copies is None:
                del self.chunks[base]
            else:
                self.chunks[base] = copies
                self.copied += sum(c.run.npages for c in copies) * PAGE
        self.again = sum(n for _, n, _, _ in jobs) * PAGE
        for start, (end, offset, runs, pieces, starts) in list(self.whole.items()):
            if not any(b < end and b + CHUNK > start for b in dirty):
                continue
            pieces = sorted((c.run for b in self.chunks if start - CHUNK < b < end
                             for c in self.chunks[b] if start <= c.run.addr < end), key=lambda p: p.addr)
            if sum(p.npages for p in pieces) != sum(n for _, n in runs):
                del self.whole[start]  # (a chunk left to the freeze)
            else:
                self._keep_whole(start, end, offset, runs, pieces)

    def _keep_whole(self, start: int, end: int, offset: int, runs: list, pieces: list[PageRun]) -> None:
        """Remember a VMA copied whole (see reusable), its pieces (sorted by address)
        merged into runs while the target runs: a GiB is 4096 pieces, which the freeze
        would otherwise sort, match and merge one by one (~8 ms); _reusable_whole cuts
        the written chunks out of the merged runs."""
        together = merged(pieces)
        self.whole[start] = (end, offset, runs, together, [r.addr for r in together])

    def _written(self, protect: bool) -> list[tuple[int, int]]:
        """(start, end) of the present pages of the tracked ranges written since they
        were protected; with `protect`, protected again in the same walk."""
        # written and present: a page never touched (no page table entry) counts as
        # written in async mode, and protecting it would fill the page tables of a
        # sparse VMA (thread stacks: 8 MiB each) with markers read as swapped pages
        want = PAGE_IS_WRITTEN | PAGE_IS_PRESENT
        with _Pagemap(self.pid) as pm:
            return [(s, e) for start, end in self.ranges
                    for s, e, _ in pm.scan(start, end, PM_SCAN_WP_MATCHING if protect else 0, want, want)]

    # -- at the freeze -------------------------------------------------------

    def reusable(self, vma_start: int, vma_end: int, vma_offset: int, runs: list[tuple[int, int]],
                 categories=None) -> tuple[list[PageRun], list[tuple[int, int]]]:
        """Split the freeze-time `runs` (first page, count) of a VMA into PageRuns kept
        from pass 1 and runs still to copy.  `categories`: the (start, end, categories)
        of the VMA's present and swapped pages when the caller's scan read them
        (memory.scan_areas, the same walk as `runs`), else they are read here."""
        if self.off or not self.chunks:
            return [], runs
        # pinned memory appeared meanwhile?  Asked once per freeze, not for every VMA: the
        # frozen target pins nothing new (it read status and every fd link: ~0.1 s a dump
        # for an ipykernel, 70 VMAs x 90 fds)
        if not getattr(self, "frozen_checked", False):
            self.frozen_checked = True
            if _untrackable(self.pid):
                self.off = "memory was pinned during pre-copy"
                return [], runs
        if categories is None:
            categories = self._categories(vma_start, vma_end)
        whole = self.whole.get(vma_start)
        if whole is not None and whole[:3] == (vma_end, vma_offset, runs):
            return self._reusable_whole(vma_start, vma_end, categories, whole[3], whole[4])
        kept: list[PageRun] = []
        left: list[tuple[int, int]] = []
        by_chunk: dict[int, list[tuple[int, int]]] = {}
        for addr, n in _split(vma_start, runs):
            by_chunk.setdefault(addr & ~(CHUNK - 1), []).append((addr, n))
        for base, now in by_chunk.items():
            # what pass 1 copied of this chunk inside this VMA (a chunk may hold two VMAs)
            before = [c for c in self.chunks.get(base, []) if vma_start <= c.run.addr < vma_end]
            ok = (_joined([(c.run.addr, c.run.npages) for c in before]) == now
                  and all(c.identity == vma_offset + (c.run.addr - vma_start) for c in before)
                  and all(_clean(categories, a, a + n * PAGE) for a, n in now))
            if ok:
                kept += [c.run for c in before]
                self.reused += sum(n for _, n in now) * PAGE
            else:
                left += [((a - vma_start) // PAGE, n) for a, n in now]
        return kept, left

    def _reusable_whole(self, vma_start: int, vma_end: int, categories, together: list[PageRun],
                        starts: list[int]) -> tuple[list[PageRun], list[tuple[int, int]]]:
        """reusable() for a VMA with the same anonymous pages and the same present runs
        as in pass 1 (so each chunk holds the pieces pass 1 copied): the decision of
        the general case, made only where the scan reports pages not clean (see
        _clean) instead of chunk by chunk.  `together`: pass 1's pieces merged
        (_keep_whole); a run without a written chunk is kept whole, the others are
        cut around their written chunks."""
        dirty: set[int] = set()  # chunk grid addresses

        def spoil(s: int, e: int) -> None:
            i = max(bisect.bisect_right(starts, s) - 1, 0)
            while i < len(together) and together[i].addr < e:
                r = together[i]
                r_end = r.addr + r.npages * PAGE
                if r_end > s:
                    dirty.update(range(max(s, r.addr) & ~(CHUNK - 1), min(e, r_end), CHUNK))
                i += 1

        covered = vma_start
        for s, e, cat in categories:
            if e <= covered:
                continue
            if s > covered:
                spoil(covered, s)  # a gap in the report: not sure
            if not cat & PAGE_IS_WPALLOWED or cat & (PAGE_IS_WRITTEN | PAGE_IS_PFNZERO):
                spoil(max(s, covered), e)
            covered = max(covered, e)
        if covered < vma_end:
            spoil(covered, vma_end)
        if not dirty:
            self.reused += sum(r.npages for r in together) * PAGE
            return list(together), []
        written = sorted(dirty)
        kept: list[PageRun] = []
        left: list[tuple[int, int]] = []
        for r in together:
            r_end = r.addr + r.npages * PAGE
            lo = bisect.bisect_left(written, r.addr & ~(CHUNK - 1))
            hi = bisect.bisect_left(written, r_end)
            if lo == hi:
                kept.append(r)
                continue
            at = r.addr  # kept from here to the next written chunk
            for base in written[lo:hi]:
                cut, cut_end = max(base, r.addr), min(base + CHUNK, r_end)
                if cut > at:
                    kept.append(_part(r, at, cut))
                left.append(((cut - vma_start) // PAGE, (cut_end - cut) // PAGE))
                at = cut_end
            if at < r_end:
                kept.append(_part(r, at, r_end))
        self.reused += sum(p.npages for p in kept) * PAGE
        return kept, left

    def _categories(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """(start, end, categories) of every page range of [start, end) (PAGEMAP_SCAN)."""
        mask = PAGE_IS_WPALLOWED | PAGE_IS_WRITTEN | PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO
        with _Pagemap(self.pid) as pm:
            return list(pm.scan(start, end, 0, 0, mask))

    # -- end -----------------------------------------------------------------

    def finish(self) -> None:
        """Tracking off (the protection goes with it) and the userfaultfd closed."""
        if self.uffd < 0:
            return
        for start, end in self.ranges:
            try:
                fcntl.ioctl(self.uffd, UFFDIO_UNREGISTER, bytearray(struct.pack("QQ", start, end - start)))
            except OSError:
                pass  # unmapped meanwhile, or the process is gone
        os.close(self.uffd)
        self.uffd = -1


def _split(start: int, runs: list[tuple[int, int]]):
    """(address, pages) pieces of `runs` (first page from `start`, count) cut at the chunk grid."""
    for first, count in runs:
        addr, end = start + first * PAGE, start + (first + count) * PAGE
        while addr < end:
            stop = min(end, (addr & ~(CHUNK - 1)) + CHUNK)
            yield addr, (stop - addr) // PAGE
            addr = stop


def _joined(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(address, pages) runs with those that touch made one: what pass 1 copied of a chunk
    (a piece an incremental dump cut into runs kept in the parent and runs stored, see
    memory.PageCopier._against_parent) as the present runs the freeze sees."""
    out: list[tuple[int, int]] = []
    for addr, n in sorted(runs):
        if out and out[-1][0] + out[-1][1] * PAGE == addr:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((addr, n))
    return out


def _untrackable(pid: int) -> str:
    """Why writes to `pid`'s memory could escape write-protect tracking, or ""."""
    status = proc.read_status(pid)
    if status.get("VmPin", "0 kB").split()[0] != "0":
        return f"{status['VmPin']} of its memory is pinned (the kernel writes it without a fault)"
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            if os.readlink(f"/proc/{pid}/fd/{name}") == "anon_inode:[userfaultfd]":
                return "it uses userfaultfd itself"
    except OSError:
        pass
    return ""


def _clean(categories: list[tuple[int, int, int]], start: int, end: int) -> bool:
    """Every page of [start, end) tracked, not written, not the zero page."""
    covered = start
    for s, e, cat in categories:
        if e <= start or s >= end:
            continue
        if s > covered:
            return False  # a gap in the report: not sure
        if not cat & PAGE_IS_WPALLOWED or cat & (PAGE_IS_WRITTEN | PAGE_IS_PFNZERO):
            return False
        covered = max(covered, e)
    return covered >= end
