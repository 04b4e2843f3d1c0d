"""proc.SmapsFlags, which a dump starts before the freeze: smaps read in a thread,
read again when the layout is not the one it found.  On pyckpt's own process
(read only; a mapping of its own made and removed)."""

import ctypes
import mmap
import os
import types

import pytest

from pyckpt import proc

MADV_DONTDUMP = 16


def _own_mapping_without_dump() -> tuple[mmap.mmap, int]:
    m = mmap.mmap(-1, 3 * mmap.PAGESIZE)
    start = ctypes.addressof(ctypes.c_char.from_buffer(m))
    m.madvise(MADV_DONTDUMP, 0, len(m))
    return m, start


def test_flags_of_a_mapping_made_after_the_read_are_read_again():
    flags = proc.SmapsFlags(os.getpid())
    flags.wait()  # the read is done: the mapping below is not in it
    m, start = _own_mapping_without_dump()
    try:
        flags.expect(proc.read_maps(os.getpid()))
        assert "dd" in flags.get(start, [])
    finally:
        m.close()


def test_flags_read_meanwhile_are_used_when_the_layout_is_the_same():
    m, start = _own_mapping_without_dump()
    try:
        flags = proc.SmapsFlags(os.getpid())
        flags.wait()
        kept = flags._flags
        flags.expect([types.SimpleNamespace(start=start) for start in kept])  # the layout it read
        assert "dd" in flags.get(start, [])
        assert flags._flags is kept  # not read again
    finally:
        m.close()


def test_a_failed_read_is_said_by_get():
    flags = proc.SmapsFlags(2**22 + 1)  # above pid_max's ceiling: no such process
    flags.expect([])
    with pytest.raises(FileNotFoundError):
        flags.get(0)


def test_the_native_read_gives_what_the_parser_gives(spawn, python_exe):
    """read_smaps_flags (searched in C, ck_smaps_flags) and parse_smaps_flags (the
    Python parser) agree on a process that sleeps: every VMA, the same words; a
    buffer too small for the lines is grown; a process that does not exist is a
    FileNotFoundError."""
    from pyckpt._native._ck import ffi, lib

    t = spawn([python_exe, "-c", "import mmap, time\n"
               "m = mmap.mmap(-1, 3 * mmap.PAGESIZE); m.madvise(16, 0, len(m))\n"
               "print('READY', flush=True)\nwhile True: time.sleep(1)"], name="smaps")
    t.wait_for("^READY")
    with open(f"/proc/{t.pid}/smaps") as f:
        want = proc.parse_smaps_flags(f.read())
    got = proc.read_smaps_flags(t.pid)
    assert got == want and len(got) > 20
    assert any("dd" in words for words in got.values())
    path = os.fsencode(f"/proc/{t.pid}/smaps")
    need = lib.ck_smaps_flags(path, ffi.NULL, 0)
    small = ffi.new("char[]", 64)
    assert lib.ck_smaps_flags(path, small, 64) == need > 64
    start, _, words = ffi.unpack(small, 64).split(b"\n")[0].partition(b" ")  # (the first VMA's line:
    assert int(start, 16) == min(want) and words.split() == [w.encode() for w in want[min(want)]]  # 0-padded)
    with pytest.raises(FileNotFoundError):
        proc.read_smaps_flags(2**22 + 1)
