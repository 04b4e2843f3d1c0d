"""Batches of injected calls (inject.Batch): a restore runs its many small calls from a
table in the new task's scratch area, with one stop of the task per table.

- A process whose memory is 600 separate page runs restores from tables longer than
  one batch area holds (split into several), in a few stops, and checks every page.
- A call that fails in the middle of a batch stops it there: the restore fails
  naming that call, leaves no process behind, and the image restores afterwards.
- The scratch area goes elsewhere when the new task has memory where the image has none.
"""

from __future__ import annotations

import pytest

import pyckpt
from conftest import check, dump_kill_restore, reap_dumped
from pyckpt import inject, restorer
from pyckpt.errors import RestoreError
from pyckpt.inject import nr
from pyckpt.restorer import RestoreStats

RUNS = 600  # pages written, each with an untouched page after it: 600 runs

TARGET = f"""
import mmap, selfcheck
RUNS = {RUNS}
m = mmap.mmap(-1, 2 * RUNS * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_NOHUGEPAGE)  # a page written is one page present, not 2 MiB
for i in range(RUNS):  # every other page: each a run of its own
    m[2 * i * 4096:(2 * i + 1) * 4096] = bytes([i % 251 + 1]) * 4096
def check():  # (the pages between are never read: a read would map the zero page there)
    bad = [i for i in range(RUNS) if m[2 * i * 4096:(2 * i + 1) * 4096] != bytes([i % 251 + 1]) * 4096]
    return [f"pages of runs {{bad[:5]}} differ"] if bad else []
selfcheck.listen()
print("READY", flush=True)
selfcheck.serve(check)
"""


def start(spawn, python_exe):
    t = spawn([python_exe, "-c", TARGET], name="runs")
    t.wait_for(r"^READY")
    check(t)
    return t


def test_many_small_runs_restore_in_a_few_stops(spawn, python_exe, tmp_path):
    t = start(spawn, python_exe)
    img = pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    reap_dumped(t)
    stats = RestoreStats()
    proc = restorer.restore(tmp_path / "img", stats=stats)
    spawn.track(proc.pid)
    t.popen = None
    check(t)
    runs = sum(len(v.pages) for v in img.records if type(v).__name__ == "VmaRecord")
    assert runs >= RUNS
    # Two calls a run (populate, pread) would be 1200 stops; a table holds fewer than
    # 500 rows, so the pages take at least 3 stops, and the whole restore a few dozen.
    assert stats.injected_calls < 60, stats.injected_calls


def _dumped_and_killed(spawn, python_exe, tmp_path):
    """The target, dumped with kill and reaped; (it, its image)."""
    t = start(spawn, python_exe)
    image = tmp_path / "img"
    pyckpt.dump(t.pid, image, kill=True)
    reap_dumped(t)
    return t, image


def test_a_failing_call_stops_its_batch_and_undoes_the_restore(spawn, python_exe, tmp_path, monkeypatch):
    t, image = _dumped_and_killed(spawn, python_exe, tmp_path)
    real_run = inject.Batch.run
    planted = []

    def run(self):
        # In the first batch that reads pages: a close of a bad fd in the middle.
        if any(row[0] == nr.pread64 for row in self.rows) and not planted:
            middle = len(self.rows) // 2
            rows = self.rows
            self.rows = rows[:middle]
            planted.append(self.add(nr.close, 1 << 30, what="the planted close"))
            self.rows += rows[middle:]
        return real_run(self)

    monkeypatch.setattr(inject.Batch, "run", run)
    with pytest.raises(RestoreError, match="the planted close.*EBADF|the planted close.*Bad file") as e:
        pyckpt.restore(image)
    assert planted and "undone" in str(e.value)
    assert not _exists(t.pid)
    monkeypatch.setattr(inject.Batch, "run", real_run)
    proc = pyckpt.restore(image)
    spawn.track(proc.pid)
    t.popen = None
    check(t)


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def test_dump_kill_restore_of_the_same_process_twice(spawn, python_exe, tmp_path):
    """A restored process (its scratch area gone, its layout as before) dumps and
    restores again."""
    t = start(spawn, python_exe)
    dump_kill_restore(spawn, t, tmp_path / "one")
    check(t)
    dump_kill_restore(spawn, t, tmp_path / "two")
    check(t)


def test_scratch_area_where_the_new_task_has_memory(spawn, python_exe, tmp_path, monkeypatch):
    """The scratch area goes where the image has nothing; when the new task (a copy of
    pyckpt) has memory there, its maps are read and the area goes elsewhere.  (A task
    born of pyckpt's stub holds only the stub's page, its stack and vDSO, where the
    kernel put them: the copy of pyckpt is asked for, test_birth.py tests both.)"""
    import ctypes

    from pyckpt import proc

    monkeypatch.setitem(restorer.STUB, "usable", False)
    t = start(spawn, python_exe)
    image = tmp_path / "img"
    img = pyckpt.dump(t.pid, image, kill=True)
    reap_dumped(t)
    first = restorer._free_page(memory_ranges(img), restorer.SCRATCH_SIZE)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    # this process's memory there (MAP_FIXED_NOREPLACE: nothing of its own is replaced)
    got = libc.mmap(first, restorer.SCRATCH_SIZE, 3, 0x22 | 0x100000, -1, 0)
    assert got == first, f"could not map {first:#x} here (errno {ctypes.get_errno()})"
    read = []
    real = proc.read_maps
    monkeypatch.setattr(proc, "read_maps", lambda pid: read.append(pid) or real(pid))
    try:
        p = pyckpt.restore(image)
    finally:
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.munmap(first, restorer.SCRATCH_SIZE)
    spawn.track(p.pid)
    t.popen = None
    check(t)
    assert p.pid in read  # the new task's maps were read for another place


def memory_ranges(img) -> list[tuple[int, int]]:
    """Every address range of the image's process (as restorer places its scratch area)."""
    from pyckpt.kinds.memory import VdsoRecord, VmaRecord

    rs = [(r.start, r.end) for r in img.records if isinstance(r, VmaRecord)]
    return rs + [(b.start, b.end) for r in img.records if isinstance(r, VdsoRecord) for b in r.blocks]


def test_a_row_holds_its_arguments_as_signed_longs():
    b = inject.Batch(None)
    b.add(nr.mmap, 1 << 12, (1 << 64) - 1, 3)
    b.add(nr.close, -1)
    assert b.rows[0][:7] == (nr.mmap, 1 << 12, -1, 3, 0, 0, 0)
    assert b.rows[1][:7] == (nr.close, -1, 0, 0, 0, 0, 0)


def test_a_failing_mmap_of_the_layout_names_its_memory_area(spawn, python_exe, tmp_path, monkeypatch):
    """The layout's batched mmap of a file that fails (here: its fd made bad) is named by
    the file and address of the memory area (made only when it fails)."""
    t, image = _dumped_and_killed(spawn, python_exe, tmp_path)
    real_run = inject.Batch.run
    spoiled = []

    def run(self):
        for i, row in enumerate(self.rows):
            if row[0] == nr.mmap and row[5] >= 0 and not spoiled:  # a file's mapping
                spoiled.append(row)
                self.rows[i] = row[:5] + (1 << 30,) + row[6:]
        return real_run(self)

    monkeypatch.setattr(inject.Batch, "run", run)
    with pytest.raises(RestoreError) as e:
        pyckpt.restore(image)
    assert spoiled, "no file was mapped: the test tests nothing"
    assert f"at {spoiled[0][1]:#x}" in str(e.value) and "mmap of /" in str(e.value), str(e.value)
    assert not _exists(t.pid)
