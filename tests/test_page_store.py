"""The page store's writer and the memory copy behind it (issue 14, item 4).

A dump that kills its target (`writeback`) writes the memory copy's whole, page-aligned
pieces straight to the disk (O_DIRECT through a second fd of pages.img), the rest through
the page cache; a filesystem that refuses O_DIRECT gets every write through the page cache.
The bytes read back are the bytes written either way.  The copy's writer thread does not
stay pinned to the CPU the dump pins pyckpt to."""

import errno
import mmap
import os
import signal

import pyckpt
from conftest import TARGETS, check, dump_kill_restore
from pyckpt.arch import PAGE
from pyckpt.image import PageStoreWriter
from pyckpt.kinds import memory
from pyckpt.seize import pinned_to_cpu, unpinned_cpus


def _killed_then_restored(t, spawn, img) -> None:
    """Kill and reap the target (ours), restore `img` and let the copy check itself."""
    os.kill(t.pid, signal.SIGKILL)
    t.reap()
    p = pyckpt.restore(img)
    spawn.track(p.pid)
    t.popen = None
    check(t)


def _direct_supported(d) -> bool:
    probe = os.path.join(d, "probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError as e:
        assert e.errno == errno.EINVAL, e
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def _pages(n: int, seed: int) -> mmap.mmap:
    """n pages at a page-aligned address, each a different pattern."""
    m = mmap.mmap(-1, n * PAGE)
    for i in range(n):
        m[i * PAGE:(i + 1) * PAGE] = bytes([(seed + i) % 251 + 1]) * PAGE
    return m


def _mixed_writes(w: PageStoreWriter) -> bytes:
    """Buffered appends, aligned page writes and an unaligned one between them; what
    pages.img must then hold."""
    want = b""
    blob = b"record queue" * 100  # not a whole page: the next aligned write is not aligned
    for data, aligned in [(b"a" * PAGE, False), (_pages(3, 1), True), (blob, False), (_pages(2, 7), True),
                          (b"\0" * (PAGE - len(blob) % PAGE), False), (_pages(5, 30), True)]:
        off = w.write(memoryview(data), aligned=aligned)
        assert off == len(want)
        want += bytes(data)
    return want


def test_durable_writes_go_straight_to_the_disk_and_read_back(tmp_path):
    w = PageStoreWriter(tmp_path / "pages.img")
    w.writeback = True
    want = _mixed_writes(w)
    os.fsync(w.fd)
    w.close()
    assert (tmp_path / "pages.img").read_bytes() == want
    # 3 pages (at an aligned offset), 2 pages after the unaligned blob (buffered), 5 pages
    assert w.direct_bytes == (8 * PAGE if _direct_supported(tmp_path) else 0)


def test_without_writeback_nothing_goes_direct(tmp_path):
    w = PageStoreWriter(tmp_path / "pages.img")
    want = _mixed_writes(w)
    w.close()
    assert w.direct_bytes == 0
    assert (tmp_path / "pages.img").read_bytes() == want


def test_allocated_blocks_keep_the_size_and_are_written_in_place(tmp_path):
    """allocate(): disk blocks for what is reserved and about to be written, the size left
    to the writes; nothing for a small write, nor with writeback (direct writes)."""
    w = PageStoreWriter(tmp_path / "pages.img")
    off = w.reserve(64 * PAGE)
    w.allocate(off, 64 * PAGE)
    st = os.fstat(w.fd)
    assert st.st_size == 0 and st.st_blocks * 512 >= 64 * PAGE  # (a filesystem without fallocate fails here)
    data = _pages(64, 3)
    w.write_at(memoryview(data), off, aligned=True)
    w.allocate(w.reserve(PAGE), PAGE)  # below ALLOCATE_MIN: left to the filesystem
    assert os.fstat(w.fd).st_blocks * 512 < 65 * PAGE
    w.close()
    assert (tmp_path / "pages.img").read_bytes() == bytes(data)
    d = PageStoreWriter(tmp_path / "direct.img")
    d.writeback = True
    d.allocate(d.reserve(64 * PAGE), 64 * PAGE)
    assert os.fstat(d.fd).st_blocks == 0
    d.close()


def test_a_dump_allocates_exactly_what_its_memory_copy_writes(spawn, python_exe, tmp_path, monkeypatch):
    """Each buffer of the memory copy allocates the blocks of the stretches it writes, end
    to end; pages.img holds no block past its end (nothing allocated is left unwritten),
    and the image restores."""
    calls = []
    real = PageStoreWriter.allocate

    def allocate(self, off, nbytes):
        calls.append((off, nbytes))
        real(self, off, nbytes)

    monkeypatch.setattr(PageStoreWriter, "allocate", allocate)
    t = spawn([python_exe, str(TARGETS / "chain_target.py")], name="data")
    t.wait_for(r"^READY data=")
    img = pyckpt.dump(t.pid, tmp_path / "img")
    size = img.dump_stats.pages_bytes
    assert sum(n for _, n in calls) >= 32 << 20  # the data buffer, at least
    assert all(a + n <= b for (a, n), (b, _) in zip(calls, calls[1:])), calls
    assert calls[-1][0] + calls[-1][1] <= size
    st = os.stat(tmp_path / "img" / "pages.img")
    assert st.st_size == size and st.st_blocks * 512 <= size + (1 << 20), (st.st_blocks, size)
    _killed_then_restored(t, spawn, tmp_path / "img")


def test_warmed_ahead_the_writes_land_in_place_and_the_rest_is_cut(tmp_path):
    """warm(): zeros written ahead of the end (pre-copy's, before its freeze); the writes
    after it land at their offsets, and cut() leaves the file as long as what was written.
    With writeback (a killed dump's direct writes) nothing is warmed."""
    w = PageStoreWriter(tmp_path / "pages.img")
    w.warm(32 * PAGE)
    assert os.fstat(w.fd).st_size == 32 * PAGE
    want = _mixed_writes(w)
    assert w.offset == len(want) < 32 * PAGE
    w.cut()
    w.close()
    assert (tmp_path / "pages.img").read_bytes() == want
    d = PageStoreWriter(tmp_path / "direct.img")
    d.writeback = True
    d.warm(8 * PAGE)
    assert os.fstat(d.fd).st_size == 0
    d.close()


def test_a_filesystem_that_refuses_o_direct_gets_buffered_writes(tmp_path, monkeypatch):
    real_open = os.open

    def no_direct(path, flags, *a, **k):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", no_direct)
    w = PageStoreWriter(tmp_path / "pages.img")
    w.writeback = True
    want = _mixed_writes(w)
    w.close()
    monkeypatch.undo()
    assert w.direct_bytes == 0
    assert (tmp_path / "pages.img").read_bytes() == want


def test_a_direct_write_refused_later_is_written_buffered(tmp_path, monkeypatch):
    """EINVAL from a direct write (the filesystem opened O_DIRECT but refuses the write):
    that write and the later ones go through the page cache."""
    w = PageStoreWriter(tmp_path / "pages.img")
    w.writeback = True
    w.write(_pages(1, 3), aligned=True)  # opens the direct fd (when the filesystem allows it)
    real_pwrite = os.pwrite
    refused = []

    def pwrite(fd, data, off):
        if fd == w._direct_fd:
            refused.append(off)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, off)

    monkeypatch.setattr(os, "pwrite", pwrite)
    second, third = _pages(4, 9), _pages(2, 50)
    w.write(second, aligned=True)
    w.write(third, aligned=True)
    monkeypatch.undo()
    w.close()
    assert (tmp_path / "pages.img").read_bytes() == bytes(_pages(1, 3)) + bytes(second) + bytes(third)
    assert len(refused) == (1 if _direct_supported(tmp_path) else 0)  # not tried again


def test_a_killed_dump_writes_its_memory_direct_and_restores(spawn, python_exe, tmp_path, monkeypatch):
    """dump(kill=True) of 32 MiB of data (and 32 MiB of zeros, not stored): the memory copy
    goes to the disk directly; the restored target finds every byte as it was."""
    seen = []
    real_close = PageStoreWriter.close

    def close(self):
        seen.append(self.direct_bytes)
        real_close(self)

    monkeypatch.setattr(PageStoreWriter, "close", close)
    t = spawn([python_exe, str(TARGETS / "chain_target.py")], name="data")
    t.wait_for(r"^READY data=")
    dump_kill_restore(spawn, t, tmp_path / "img")
    check(t)
    assert seen, "the page store was never closed"
    if _direct_supported(tmp_path):
        assert seen[-1] >= 32 << 20  # the data buffer, at least
    else:
        assert seen[-1] == 0
    # a dump that leaves its target running writes through the page cache
    seen.clear()
    pyckpt.dump(t.pid, tmp_path / "again")
    check(t)
    assert seen == [0]


class _Store:
    """A page store that keeps what is written, by offset (PageCopier's side of it)."""

    def __init__(self):
        self.offset, self.data = 0, {}

    def reserve(self, nbytes):
        off, self.offset = self.offset, self.offset + nbytes
        return off

    def allocate(self, off, nbytes):
        pass

    def write_at(self, data, off, aligned=False):
        self.data[off] = bytes(data)

    def drain(self, raising=True):
        pass

    def read(self, off, n):
        for start, b in self.data.items():
            if start <= off and off + n <= start + len(b):
                return b[off - start : off - start + n]
        raise AssertionError(f"nothing written at {off}")


def test_the_writer_thread_is_not_pinned_to_the_reading_cpu(spawn, python_exe, tmp_path):
    """A dump pins pyckpt to the target's CPU; the copy's writer thread takes pyckpt's CPUs
    from before that back (both CPUs of a 2-CPU machine), the reading thread keeps the pin."""
    t = spawn([python_exe, str(TARGETS / "chain_target.py")], name="data")
    m = t.wait_for(r"^READY data=(0x[0-9a-f]+)")
    data = int(m.group(1), 16)
    before = os.sched_getaffinity(0)

    class Pages(_Store):  # where the writer thread runs, and nothing stored
        cpus: list = []

        def write_at(self, data, off, aligned=False):
            self.cpus.append((os.sched_getaffinity(0), os.sched_getaffinity(0) == before))

    cpu = min(before)
    pages = Pages()
    copier = memory.PageCopier(t.pid, pages)
    copier.threaded = True
    assert unpinned_cpus() is None
    with pinned_to_cpu(cpu):
        assert unpinned_cpus() == before
        assert os.sched_getaffinity(0) == {cpu}
        runs = copier.copy([(data, (8 << 20) // PAGE, True, True)])
        assert os.sched_getaffinity(0) == {cpu}  # the reading thread is still pinned
    assert unpinned_cpus() is None
    assert os.sched_getaffinity(0) == before
    assert sum(r.npages for r in runs[0]) * PAGE == 8 << 20
    assert pages.cpus and all(same for _, same in pages.cpus), pages.cpus


def test_a_big_restore_checks_its_digests_beside_the_pages(spawn, python_exe, tmp_path):
    """From CHECK_BESIDE_MIN bytes of pages on, restore checks the digests in a thread while
    the new task reads its pages, and waits for it before the process runs."""
    from pyckpt import restorer
    from pyckpt.kinds.context import RestoreOptions

    t = spawn([python_exe, str(TARGETS / "chain_target.py")], name="data")
    t.wait_for(r"^READY data=")
    image = pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    assert image.dump_stats.pages_bytes >= restorer.CHECK_BESIDE_MIN
    from conftest import reap_dumped

    reap_dumped(t)
    stats = restorer.RestoreStats()
    proc = restorer.restore(tmp_path / "img", stats=stats, options=RestoreOptions())
    spawn.track(proc.pid)
    t.popen = None
    assert "page check (wait)" in stats.phases
    check(t)


def test_a_bad_digest_found_beside_the_pages_kills_the_half_made_process(spawn, python_exe, tmp_path):
    """A byte changed in pages.img of a big image: the digest check beside PAGES finds it,
    the restore raises ImageError naming the offset, and no process is left (the image's
    PID stays free)."""
    import psutil
    from pyckpt import restorer
    from pyckpt.errors import ImageError
    from pyckpt.kinds.memory import VmaRecord

    t = spawn([python_exe, str(TARGETS / "chain_target.py")], name="data")
    m = t.wait_for(r"^READY data=(0x[0-9a-f]+)")
    data = int(m.group(1), 16)
    pid = t.pid
    image = pyckpt.dump(pid, tmp_path / "img", kill=True)
    from conftest import reap_dumped

    reap_dumped(t)
    vma = next(r for r in image.records if isinstance(r, VmaRecord) and r.start <= data < r.end)
    run = next(p for p in vma.pages if not p.zero and p.addr <= data + (20 << 20) < p.addr + p.npages * PAGE)
    at = run.offset + (data + (20 << 20) - run.addr) + 123  # a byte of the data buffer, 20 MiB in
    with open(tmp_path / "img" / "pages.img", "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x40]))
    before = {c.pid for c in psutil.Process().children()}
    stats = restorer.RestoreStats()
    try:
        restorer.restore(tmp_path / "img", stats=stats)
    except ImageError as e:
        assert "fail their checksum" in str(e), e
    else:
        raise AssertionError("a restore of a corrupted image succeeded")
    assert stats.phases.get("PAGES", 0) > 0  # the process was made and filled first...
    assert not psutil.pid_exists(pid)  # ... and is gone
    assert {c.pid for c in psutil.Process().children()} <= before


def _writes_after_release(monkeypatch, spawn, python_exe, in_writer):
    """tests/targets/chain_target.py running (32 MiB of data), with a dump's memory copy
    deferring its writes (memory._COPIES: not its process's first copy) and
    `in_writer(released, pages)` called at each write of the writer thread, before it
    is made (released: an Event set once the target is released); returns the target."""
    import threading

    from pyckpt import seize

    released = threading.Event()
    real_exit, real_write_at = seize.Seized.__exit__, PageStoreWriter.write_at

    def exit_(self, *a):
        released.set()
        return real_exit(self, *a)

    def write_at(self, data, off, aligned=False):
        if threading.current_thread() is not threading.main_thread():
            in_writer(released, self)
        return real_write_at(self, data, off, aligned)

    monkeypatch.setattr(seize.Seized, "__exit__", exit_)
    monkeypatch.setattr(PageStoreWriter, "write_at", write_at)
    monkeypatch.setattr(memory, "_COPIES", [1])
    t = spawn([python_exe, str(TARGETS / "chain_target.py")], name="data")
    t.wait_for(r"^READY data=")
    return t


def test_a_running_targets_memory_is_written_after_it_runs_again(spawn, python_exe, tmp_path, monkeypatch):
    """dump() without kill of 32 MiB of data: the copy reads it all into buffers while the
    target is frozen without waiting for its writer thread, which may write them to
    pages.img after the target runs again (before the image is finished).  Here the
    writer waits for the target's release at its first write: a copy that waited for
    a write would wait those 10 s out (then the writes find it still frozen).  The
    image restores every byte."""
    waited = []  # at each write of the writer thread: was the target released (waited for)?
    t = _writes_after_release(monkeypatch, spawn, python_exe,
                              lambda released, pages: waited.append(released.wait(10 if all(waited) else 0)))
    check(t)
    img = pyckpt.dump(t.pid, tmp_path / "img")
    assert len(waited) >= 8 and all(waited), waited  # the 32 MiB of data, in 4 MiB buffers
    assert img.dump_stats.pages_bytes >= 32 << 20
    assert t.state() in ("S", "R")  # it runs on (not checked here: its log would grow)
    _killed_then_restored(t, spawn, tmp_path / "img")


def test_a_write_failing_after_the_freeze_fails_the_dump_and_harms_nothing(spawn, python_exe, tmp_path,
                                                                          monkeypatch):
    """A page write that fails once the target runs again (the disk full): dump() raises
    ImageWriteError, the image is left incomplete, the writer thread is gone and the
    target carries on."""
    import threading

    from pyckpt.errors import ImageWriteError

    waited = []

    def fail(released, pages):
        waited.append(released.wait(10))  # (so that it fails after the release)
        raise ImageWriteError(f"cannot write image pages to {pages.where}: No space left on device")

    t = _writes_after_release(monkeypatch, spawn, python_exe, fail)
    try:
        pyckpt.dump(t.pid, tmp_path / "img")
    except ImageWriteError as e:
        assert "No space left" in str(e)
    else:
        raise AssertionError("the dump did not fail")
    assert waited == [True]  # the first write of the writer failed, after the release
    assert sorted(os.listdir(tmp_path / "img")) == ["INCOMPLETE"]
    assert not [th for th in threading.enumerate() if th.name == "pyckpt page writer"]
    check(t)


_AREAS_TARGET = r"""
import ctypes, mmap, time
PAGE = mmap.PAGESIZE
raw = mmap.mmap(-1, 192 * PAGE)
base = (ctypes.addressof(ctypes.c_char.from_buffer(raw)) + (256 << 10) - 1) & ~((256 << 10) - 1)
# pages from base (on the 256 KiB grid): 0-7 a pattern, 8-15 zero, 16-17 PROT_NONE,
# 18-19 unmapped, 20-95 a pattern
for i in list(range(8)) + list(range(20, 96)):
    ctypes.memmove(base + i * PAGE, bytes([(i * 7 + k) % 251 + 1 for k in range(256)]) * (PAGE // 256), PAGE)
libc = ctypes.CDLL(None, use_errno=True)
assert libc.mprotect(ctypes.c_void_p(base + 16 * PAGE), ctypes.c_size_t(2 * PAGE), 0) == 0
assert libc.munmap(ctypes.c_void_p(base + 18 * PAGE), ctypes.c_size_t(2 * PAGE)) == 0
print(f"READY base={base:#x}", flush=True)
while True:
    time.sleep(1)
"""


def _areas_target(spawn, python_exe):
    t = spawn([python_exe, "-c", _AREAS_TARGET], name="areas")
    return t, int(t.wait_for(r"^READY base=(0x[0-9a-f]+)").group(1), 16)


def _memory(pid, addr, n) -> bytes:
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as f:
        return os.pread(f.fileno(), n, addr)


def _check_runs(pid, runs, store):
    """Each stored run holds the target's bytes and their digest; a zero run is zero."""
    import xxhash

    for run in runs:
        want = _memory(pid, run.addr, run.npages * PAGE)
        if run.zero:
            assert want == bytes(len(want)), hex(run.addr)
        else:
            assert store.read(run.offset, len(want)) == want, hex(run.addr)
            assert run.chunks == [xxhash.xxh3_64_intdigest(want)] and run.xxh3 == run.chunks[0]


def test_the_copy_reads_a_buffers_runs_at_once_and_sorts_out_their_pieces(spawn, python_exe, monkeypatch):
    """Runs of a page or two, a zero stretch and memory that cannot be read (PROT_NONE,
    read through /proc/PID/mem) land in one buffer: each stored piece holds the target's
    bytes with their digest, the zero pieces of anonymous memory are not stored; and the
    same with the digests taken in Python (no xxh3 function for C)."""
    t, base = _areas_target(spawn, python_exe)
    jobs = [(base, 1, True, True), (base + 2 * PAGE, 2, True, True), (base + 5 * PAGE, 11, True, True),
            (base + 8 * PAGE, 8, True, True), (base + 16 * PAGE, 2, False, True),
            (base + 20 * PAGE, 36, True, False), (base + 60 * PAGE, 8, True, True), (base + 76 * PAGE, 20, True, True)]
    results = []
    for fn in (None, 0):
        if fn is not None:
            monkeypatch.setitem(memory._HASH, "fn", fn)
        store = _Store()
        copier = memory.PageCopier(t.pid, store)
        copier.threaded = False
        got = copier.copy(jobs)
        for (addr, npages, _, _), runs in zip(jobs, got):
            assert runs[0].addr == addr and sum(r.npages for r in runs) == npages
            _check_runs(t.pid, runs, store)
        assert [r.zero for r in got[2]] == [False]  # pages 5-15: one piece, part zero
        assert [r.zero for r in got[3]] == [True]  # pages 8-15
        assert [r.zero for r in got[4]] == [True]  # pages 16-17, never written (read through /proc/PID/mem)
        assert copier.zero == 10 * PAGE
        assert [r.npages for r in got[6]] == [4, 4]  # pages 60-67: cut on the grid at 64
        results.append([[(r.addr, r.npages, r.zero, r.xxh3) for r in runs] for runs in got])
    assert results[0] == results[1]


def test_a_run_that_cannot_be_read_is_an_error_or_with_lenient_left_out(spawn, python_exe):
    """A run over unmapped memory between readable ones in the same buffer: an error naming
    the address, or (lenient, a pre-copy of a running target) left out while the runs
    before and after it are stored."""
    t, base = _areas_target(spawn, python_exe)
    jobs = [(base, 4, True, True), (base + 17 * PAGE, 3, True, True), (base + 20 * PAGE, 4, True, True)]
    copier = memory.PageCopier(t.pid, _Store())
    copier.threaded = False
    import pytest

    with pytest.raises(pyckpt.PyckptError, match=f"process {t.pid}: cannot read memory at {base + 17 * PAGE:#x}"):
        copier.copy(jobs)
    store = _Store()
    copier = memory.PageCopier(t.pid, store)
    copier.threaded = False
    got = copier.copy(jobs, lenient=True)
    assert got[1] == [] and got[0] and got[2]
    _check_runs(t.pid, got[0] + got[2], store)
