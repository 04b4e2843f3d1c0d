"""Pre-copy: memory copied while the target runs, then at the freeze only what it
wrote since (userfaultfd write-protect in async mode + PAGEMAP_SCAN)."""

import os
import signal

import psutil
import pytest

import pyckpt
from conftest import TARGETS, check, reap_dumped
from pyckpt.precopy import PreCopy

TARGET = str(TARGETS / "precopy_target.py")


def _mutate_between_passes(t, monkeypatch) -> None:
    """Make the target change its memory after pass 1, before the freeze."""
    real = PreCopy.copy_pass

    def copy_then_mutate(self):
        real(self)
        after = len(t.lines())
        os.kill(t.pid, signal.SIGUSR2)
        t.wait_for("^MUTATED$", after=after)

    monkeypatch.setattr(PreCopy, "copy_pass", copy_then_mutate)


def test_memory_changed_during_precopy_comes_back_as_it_was_at_the_freeze(spawn, python_exe, tmp_path,
                                                                          monkeypatch):
    t = spawn([python_exe, TARGET], name="precopy")
    t.wait_for("^READY")
    _mutate_between_passes(t, monkeypatch)
    image = pyckpt.dump(t.pid, tmp_path / "img", precopy=True, kill=True)
    assert image.dump_stats.precopy_reused > 0  # pass 1 was used where nothing changed
    image.verify()
    reap_dumped(t)
    p = pyckpt.restore(tmp_path / "img")
    spawn.track(p.pid)
    t.popen = None
    check(t)  # rewritten, dropped, remapped, moved and zero pages all as at the freeze


@pytest.mark.parametrize("incremental", [False, True], ids=["full", "incremental"])
@pytest.mark.parametrize("second_pass", [False, True], ids=["one-pass", "two-passes"])
def test_memory_written_all_through_the_dump_comes_back_as_at_one_instant(spawn, python_exe, tmp_path,
                                                                          monkeypatch, incremental,
                                                                          second_pass):
    """A thread of the target writes its memory all the time: during pass 1, between pass 1
    and the freeze, and (incremental) since the parent, whose pages the child compares
    with its own; with a second pass, the chunks written during pass 1 are found,
    protected again and copied again while it writes on.  Restored, every page holds
    what it held at the freeze, which the target checks against its writer's position
    (part of the same instant)."""
    import pyckpt.precopy

    monkeypatch.setattr(pyckpt.precopy, "SECOND_PASS_MIN", 0 if second_pass else 1 << 60)
    monkeypatch.setattr(pyckpt.precopy, "SECOND_PASS_MAX_SHARE", 1.0)
    passes = []
    real = PreCopy._copy_again

    def copy_again(self):
        real(self)
        passes.append(self.again)

    monkeypatch.setattr(PreCopy, "_copy_again", copy_again)
    t = spawn([python_exe, str(TARGETS / "writer_target.py")], name="writer")
    t.wait_for("^READY")
    parent = None
    if incremental:
        parent = tmp_path / "parent"
        pyckpt.dump(t.pid, parent, precopy=True)
    image = pyckpt.dump(t.pid, tmp_path / "img", precopy=True, kill=True, parent=parent)
    assert image.dump_stats.precopy_reused > 0
    assert (passes[-1] > 0) == second_pass, passes  # (the writer always wrote during pass 1)
    reap_dumped(t)
    p = pyckpt.restore(tmp_path / "img")
    spawn.track(p.pid)
    t.popen = None
    check(t)


def test_precopy_dump_leaves_the_target_as_it_was(spawn, python_exe, tmp_path, monkeypatch):
    t = spawn([python_exe, TARGET], name="precopy")
    t.wait_for("^READY")
    _mutate_between_passes(t, monkeypatch)
    pyckpt.dump(t.pid, tmp_path / "img", precopy=True)
    # tracking removed, the userfaultfd gone with pyckpt's copy of it
    fds = [os.readlink(f"/proc/{t.pid}/fd/{n}") for n in os.listdir(f"/proc/{t.pid}/fd")]
    assert not any("userfaultfd" in f for f in fds)
    assert psutil.Process(t.pid).status() in (psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING)
    check(t)
    check(t)


def test_cli_precopy(spawn, python_exe, tmp_path):
    import subprocess
    import sys

    t = spawn([python_exe, TARGET], name="precopy")
    t.wait_for("^READY")
    os.kill(t.pid, signal.SIGUSR2)  # (changes made before the dump: nothing special)
    t.wait_for("^MUTATED$")
    r = subprocess.run([sys.executable, "-m", "pyckpt", "dump", "--precopy", "--kill", str(t.pid),
                        str(tmp_path / "img")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    reap_dumped(t)
    p = pyckpt.restore(tmp_path / "img")
    spawn.track(p.pid)
    t.popen = None
    check(t)


PINNED = r"""
import ctypes, os, signal, selfcheck
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
PAGE = 4096
buf = libc.mmap(None, 16 * PAGE, 3, 0x22, -1, 0)
ctypes.memset(buf, ord("A"), 16 * PAGE)
params = ctypes.create_string_buffer(120)
ring = libc.syscall(425, 4, params)                    # io_uring_setup
assert ring >= 0, ctypes.get_errno()
iov = (ctypes.c_uint64 * 2)(buf, 16 * PAGE)
assert libc.syscall(427, ring, 0, iov, 1) == 0, ctypes.get_errno()  # IORING_REGISTER_BUFFERS: pinned
def unpin(*_):
    ctypes.memset(buf + 5 * PAGE, ord("Z"), PAGE)
    os.close(ring)                                     # unpinned (a ring cannot be dumped)
    print("MUTATED", flush=True)
signal.signal(signal.SIGUSR2, unpin)
def check():
    ok = ctypes.string_at(buf + 5 * PAGE, 4) == b"ZZZZ" and ctypes.string_at(buf, 4) == b"AAAA"
    return [] if ok else ["pinned buffer content"]
selfcheck.listen()
print("READY", flush=True)
selfcheck.serve(check)
"""


def test_pinned_memory_turns_tracking_off(spawn, python_exe, tmp_path, monkeypatch):
    """The kernel writes pinned memory (io_uring buffers, RDMA) without a fault that
    write-protect would see: with any memory pinned, pre-copy keeps nothing of pass 1."""
    t = spawn([python_exe, "-c", PINNED], name="pinned")
    t.wait_for("^READY")
    with open(f"/proc/{t.pid}/status") as f:
        assert "VmPin:\t       0 kB" not in f.read()
    _mutate_between_passes(t, monkeypatch)
    image = pyckpt.dump(t.pid, tmp_path / "img", precopy=True, kill=True)
    assert image.dump_stats.precopy_reused == 0
    assert "pinned" in image.dump_stats.precopy_off
    reap_dumped(t)
    p = pyckpt.restore(tmp_path / "img")
    spawn.track(p.pid)
    t.popen = None
    check(t)


def test_written_chunks_are_cut_out_of_the_merged_runs_of_a_whole_vma():
    """_reusable_whole on pass 1's pieces merged (_keep_whole): a run with no written chunk
    is kept whole; one with written chunks is cut around them, each part with its own
    offset and the digests of its own pieces, and the written chunks are to be copied."""
    from pyckpt.kinds.memory import PAGE, PIECE, PageRun, merged
    from pyckpt.precopy import PAGE_IS_WPALLOWED, PAGE_IS_WRITTEN

    start = 0x7F0000000000 + 5 * PAGE  # not on the grid: the first piece is short
    first = (start & ~(PIECE - 1)) + PIECE
    pieces, off, addr = [], 0, start
    for i in range(6):  # 6 pieces, stored one after another; then 2 zero pieces
        n = (first - start if i == 0 else PIECE) // PAGE
        pieces.append(PageRun(addr, n, off, 100 + i, chunks=[100 + i]))
        addr, off = addr + n * PAGE, off + n * PAGE
    for _ in range(2):
        pieces.append(PageRun(addr, PIECE // PAGE, 0, 0, zero=True))
        addr += PIECE
    end = addr
    pc = PreCopy.__new__(PreCopy)
    pc.whole, pc.reused = {}, 0
    pc._keep_whole(start, end, 0, [(0, (end - start) // PAGE)], pieces)
    together = pc.whole[start][3]
    assert len(together) == 2  # the stored pieces, then the zeros

    clean = [(start, end, PAGE_IS_WPALLOWED)]
    kept, left = pc._reusable_whole(start, end, clean, together, pc.whole[start][4])
    assert kept == together and left == []

    # pieces 2 and 3 written (one page of each), and the first zero piece
    p2 = first + PIECE
    written = [(start, p2, PAGE_IS_WPALLOWED), (p2, p2 + 2 * PIECE, PAGE_IS_WPALLOWED | PAGE_IS_WRITTEN),
               (p2 + 2 * PIECE, first + 5 * PIECE, PAGE_IS_WPALLOWED),
               (first + 5 * PIECE, first + 6 * PIECE, PAGE_IS_WPALLOWED | PAGE_IS_WRITTEN),
               (first + 6 * PIECE, end, PAGE_IS_WPALLOWED)]
    pc.reused = 0
    kept, left = pc._reusable_whole(start, end, written, together, pc.whole[start][4])
    assert left == [((p2 - start) // PAGE, PIECE // PAGE), ((p2 + PIECE - start) // PAGE, PIECE // PAGE),
                    ((first + 5 * PIECE - start) // PAGE, PIECE // PAGE)]
    want = merged([p for p in pieces if not p2 <= p.addr < p2 + 2 * PIECE and p.addr != first + 5 * PIECE])
    assert merged(kept) == want
    assert [(k.addr, k.npages, k.offset, k.chunks) for k in kept[:2]] == [
        (start, (p2 - start) // PAGE, 0, [100, 101]),
        (p2 + 2 * PIECE, 2 * PIECE // PAGE, pieces[4].offset, [104, 105])]
    assert pc.reused == sum(k.npages for k in kept) * PAGE
