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
