"""A numpy job (a real program's library: numpy with OpenBLAS and its threads) dumped
with kill=True and restored; the job checks itself before and after (its matrix, its
running total, and that its worker goes on)."""

from __future__ import annotations

import psutil
import pytest

from conftest import TARGETS, check, dump_kill_restore

pytest.importorskip("numpy")


def test_numpy_job_goes_on_after_restore(spawn, python_exe, tmp_path):
    t = spawn([python_exe, str(TARGETS / "numpy_job.py")], name="numpy")
    t.wait_for(r"^READY \d+$", timeout=30)
    threads = psutil.Process(t.pid).num_threads()
    check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    assert psutil.Process(t.pid).num_threads() == threads  # its own and OpenBLAS's
    check(t)
    check(t)
