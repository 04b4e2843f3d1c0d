"""Zero pages are not stored: a present anonymous piece (256 KiB) that holds only
zeros is recorded as such, with no bytes in pages.img, and left untouched at
restore (fresh anonymous memory is zero).  The target checks its memory itself."""

import re

import pyckpt
from conftest import TARGETS, check, dump_kill_restore
from pyckpt.kinds.memory import PIECE, VmaRecord

TARGET = str(TARGETS / "chain_target.py")
SIZE = 32 << 20


def _vma_at(image, addr: int) -> VmaRecord:
    return next(r for r in image.records if isinstance(r, VmaRecord) and r.start <= addr < r.end)


def test_touched_zero_buffer_is_not_stored_and_reads_zero_after_restore(spawn, python_exe, tmp_path):
    t = spawn([python_exe, TARGET], name="zeros")
    m = t.wait_for(r"^READY data=(0x[0-9a-f]+) zeros=(0x[0-9a-f]+)")
    zeros = int(m.group(2), 16)
    with open(f"/proc/{t.pid}/smaps") as f:  # the zero buffer is present memory, not a hole
        smaps = f.read()
    block = re.search(rf"^{zeros:x}-[0-9a-f]+ .*?\nRss:\s+(\d+) kB", smaps, re.M | re.S)
    assert block and int(block.group(1)) * 1024 >= SIZE
    dump_kill_restore(spawn, t, tmp_path / "img")
    check(t)  # every piece of both buffers as it was, zeros included
    image = pyckpt.open_image(tmp_path / "img")
    vma = _vma_at(image, zeros)  # (the data buffer may share the VMA)
    stored = _bytes_in(vma, zeros, zeros + SIZE, zero=False)
    zero = _bytes_in(vma, zeros, zeros + SIZE, zero=True)
    assert stored <= PIECE  # the one piece with a page that is not zero
    assert zero >= SIZE - PIECE
    assert all(p.offset == 0 for p in vma.pages if p.zero)
    info = image.summary()
    v = next(v for v in info["vmas"] if v["start"] <= zeros < v["end"])
    assert v["zero_bytes"] == _bytes_in(vma, vma.start, vma.end, zero=True) >= SIZE - PIECE
    assert info["processes"][0]["zero_bytes"] >= SIZE - PIECE
    assert (tmp_path / "img" / "pages.img").stat().st_size < 2 * SIZE  # the zero buffer is not in it


def _bytes_in(vma, start: int, end: int, *, zero: bool) -> int:
    return sum(max(0, min(end, p.addr + p.npages * 4096) - max(start, p.addr))
               for p in vma.pages if p.zero == zero)


def test_zero_runs_of_a_file_mapping_are_stored(spawn, ctarget, tmp_path):
    """Only anonymous memory may leave zeros out: a private file mapping's page left out
    would read the file back.  (The C target's mapped file page is checked by it.)"""
    from conftest import start_ctarget

    t = start_ctarget(spawn, ctarget, tmp_path)
    dump_kill_restore(spawn, t, tmp_path / "img")
    check(t)
    image = pyckpt.open_image(tmp_path / "img")
    assert not any(p.zero for r in image.records if isinstance(r, VmaRecord) and r.kind != "anon"
                   for p in r.pages)
