"""The helper's copy-in through a userfaultfd (kinds/memory.py: _copied_in), tried on
pyckpt's own memory: ck_uffd_fill_read reads pages.img through a small buffer, runs that
follow each other in the file in one pread, and copies each run where it belongs; it
gives what ck_uffd_fill (the file mapped) gives; a short file is an error (-EIO) that
leaves nothing registered.  And a restore whose copy-in goes through a buffer of a few
pages gives the process back whole."""

from __future__ import annotations

import ctypes
import mmap
import os

import pytest

import pyckpt
from pyckpt._native._ck import ffi, lib
from pyckpt.arch import PAGE
from pyckpt.kinds import memory

from test_birth import UffdSpy, _dump_kill, _same_process, _spied_restore

SYS_USERFAULTFD = 323  # x86_64

# (page in the region, pages, page in the file): end to end in the file, apart, longer
# than the buffer, split across buffers, out of order
RUNS = [(0, 1, 0), (2, 2, 1), (5, 1, 3), (7, 9, 4), (20, 2, 40), (23, 1, 42), (30, 4, 13), (40, 1, 17),
        (50, 3, 20)]


def _uffd() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(SYS_USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    return fd


def _file(tmp_path, pages: int):
    path = tmp_path / "pages.img"
    path.write_bytes(b"".join(bytes([i % 250 + 1]) * PAGE for i in range(pages)))
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _registered(start: int) -> bool:
    """Whether the memory area holding `start` is registered (it may be merged with a
    neighbour of the same kind, so looked for by the range that holds it)."""
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        lo, sep, rest = line.partition("-")
        if sep and " " in rest and all(c in "0123456789abcdef" for c in lo):
            hi = rest.split(" ", 1)[0]
            if int(lo, 16) <= start < int(hi, 16):
                flags = next(x for x in lines[i + 1:] if x.startswith("VmFlags:"))
                return " um" in flags
    raise AssertionError(f"no mapping at {start:#x}")


def _fill(fd: int, runs, *, read: bool, buflen: int = 3 * PAGE) -> tuple[int, bytes, int]:
    region = mmap.mmap(-1, 64 * PAGE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = ctypes.addressof(ctypes.c_char.from_buffer(region))
    ranges = ffi.new("unsigned long[]", [start, 64 * PAGE])
    flat = ffi.new("unsigned long[]", [v for a, n, o in runs for v in (start + a * PAGE, n * PAGE, o * PAGE)])
    uffd = _uffd()
    try:
        if read:
            buf = ffi.new("char[]", buflen)
            r = lib.ck_uffd_fill_read(uffd, ranges, 1, fd, flat, len(runs), buf, buflen)
        else:
            src = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ)
            r = lib.ck_uffd_fill(uffd, ranges, 1, ffi.from_buffer(src), flat, len(runs))
            src.close()
    finally:
        os.close(uffd)
    still = _registered(start)
    data = b"" if still else bytes(region)  # (touching a registered page would wait forever)
    return r, data, still


def test_read_through_a_small_buffer_gives_what_the_mapping_gives(tmp_path):
    fd = _file(tmp_path, 48)
    try:
        want = bytearray(64 * PAGE)
        for a, n, o in RUNS:
            want[a * PAGE:(a + n) * PAGE] = b"".join(bytes([(o + k) % 250 + 1]) * PAGE for k in range(n))
        for read, buflen in ((True, 3 * PAGE), (True, PAGE), (True, 64 * PAGE), (False, 0)):
            r, data, still = _fill(fd, RUNS, read=read, buflen=buflen)
            assert (r, still) == (0, False), (read, buflen)
            assert data == bytes(want), (read, buflen)
    finally:
        os.close(fd)


def test_a_buffer_of_less_than_a_page_is_refused(tmp_path):
    fd = _file(tmp_path, 48)
    try:
        r, data, still = _fill(fd, RUNS, read=True, buflen=100)
        assert r == -22 and not still  # -EINVAL, before anything is registered
    finally:
        os.close(fd)


def test_a_short_file_is_an_error_and_leaves_nothing_registered(tmp_path):
    fd = _file(tmp_path, 30)  # RUNS read up to page 44
    try:
        r, data, still = _fill(fd, RUNS, read=True)
        assert r == -5 and not still  # -EIO
        assert data[:PAGE] == bytes([1]) * PAGE  # the runs before it are in
    finally:
        os.close(fd)


def test_a_restore_copied_in_through_a_buffer_of_three_pages(spawn, python_exe, tmp_path, monkeypatch):
    """The 32 MiB target's restore copies in through the buffer (not the mapping made
    beside, which starts at SOURCE_BESIDE_MIN): its runs are cut at every third page."""
    spy = UffdSpy(memory.lib)
    monkeypatch.setattr(memory, "lib", spy)
    monkeypatch.setitem(memory._UFFD, "usable", True)
    monkeypatch.setattr(memory, "SOURCE_BESIDE_MIN", 1 << 40)
    monkeypatch.setattr(memory, "FILL_BUFFER", 3 * PAGE)
    monkeypatch.setattr(memory, "_FILL_BUFFERS", [])
    t, before, view = _dump_kill(spawn, python_exe, tmp_path)
    proc = pyckpt.restore(tmp_path / "img")
    spawn.track(proc.pid)
    assert spy.reads == [0]
    _same_process(t, before, view, proc.pid)


def test_no_copy_in_where_every_vma_gets_huge_pages(spawn, python_exe, tmp_path, monkeypatch):
    """With transparent huge pages on for every VMA ("always"), populated memory gets huge
    pages and UFFDIO_COPY 4 KiB ones: the copy-in leaves out every VMA not marked "nh",
    which the task reads; the process checks itself."""
    monkeypatch.setattr(memory, "_thp_always", lambda: True)
    spy, t, before, view, proc = _spied_restore(spawn, python_exe, tmp_path, monkeypatch)
    assert spy.results == [] and spy.reads == []
    _same_process(t, before, view, proc.pid)


@pytest.mark.parametrize("cgroup, files, want", [
    ("0::/job\n", {"/sys/fs/cgroup/job/memory.max": "max\n"}, None),
    ("0::/job\n", {"/sys/fs/cgroup/job/memory.max": "536870912\n"}, 512 << 20),
    ("4:memory:/a/b\n0::/\n", {"/sys/fs/cgroup/memory/a/b/memory.limit_in_bytes": "1073741824\n"}, 1 << 30),
    ("4:cpu,memory:/c\n", {"/sys/fs/cgroup/memory/c/memory.limit_in_bytes": "9223372036854771712\n"}, None),
    ("4:memory:/gone\n", {}, None),
    ("9:name=systemd:/\n8:pids:/\n", {}, None),
])
def test_memory_limit_is_the_cgroups(monkeypatch, cgroup, files, want):
    """The copy-in's bound (memory._memory_limit): the cgroup's limit (v2 memory.max, v1
    memory.limit_in_bytes; proc.misc.read_memory_limit) where it is below the machine's
    memory, else the machine's."""
    import builtins
    import io

    from pyckpt.proc import misc

    def fake_open(path, *a, **kw):
        if path in files:
            return io.StringIO(files[path])
        raise FileNotFoundError(path)

    monkeypatch.setattr(misc, "read_text", lambda path: cgroup if path == "/proc/self/cgroup" else 1 / 0)
    monkeypatch.setattr(builtins, "open", fake_open)
    got = memory._memory_limit()
    monkeypatch.undo()
    assert got == (min(want, memory.UFFD_MAX * 4) if want is not None else memory.UFFD_MAX * 4)


def test_a_helper_without_the_parts_copies_in_at_once(spawn, python_exe, tmp_path, monkeypatch):
    """A native helper built before ck_uffd_copy_runs (a stale build): the copy-in is
    one ck_uffd_fill, the progress bar moving once; the process checks itself."""

    class OldLib:
        def __init__(self, lib):
            self._lib, self.results = lib, []

        def ck_uffd_fill(self, *a):
            self.results.append(self._lib.ck_uffd_fill(*a))
            return self.results[-1]

        def __getattr__(self, name):
            if name in ("ck_uffd_register", "ck_uffd_copy_runs", "ck_uffd_unregister"):
                raise AttributeError(name)
            return getattr(self._lib, name)

    spy, t, before, view, proc = _spied_restore(spawn, python_exe, tmp_path, monkeypatch, OldLib(memory.lib))
    assert spy.results == [0]
    _same_process(t, before, view, proc.pid)
