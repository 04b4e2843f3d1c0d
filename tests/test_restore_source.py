"""A small restore copies its private anonymous memory in from pyckpt's own mapping of
pages.img (kinds/memory.py: _copied_in), made in a thread from the end of VALIDATE while
the process is made, and read by the page check beside too (_Source; from
SOURCE_BESIDE_MIN bytes of pages, 0 here): the copy comes back whole, and the mapping is
gone once the restore has ended — whether it returned the process or failed after
PREPARE (a PID in use)."""

from __future__ import annotations

import os
import time

import pytest

import pyckpt
from pyckpt.errors import PidInUseError
from pyckpt.kinds import memory

from test_refusals import start_ticker


def _mapped(path) -> list[str]:
    """pyckpt's mappings of `path` (by device and inode, as /proc/self/maps shows them)."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    with open("/proc/self/maps") as f:
        return [line for line in f if line.split()[3] == dev and int(line.split()[4]) == st.st_ino]


def _unmapped_soon(path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout  # (the unmap runs in a thread: ~1 ms)
    while _mapped(path):
        assert time.monotonic() < deadline, f"pyckpt still maps {path}: {_mapped(path)}"
        time.sleep(0.01)


@pytest.fixture
def sources(monkeypatch):
    """What each _Source's get() gave ("made": one was made)."""
    made, real_get, real_init = [], memory._Source.get, memory._Source.__init__

    def init(self, fd):
        made.append("made")
        real_init(self, fd)

    def get(self):
        got = real_get(self)
        made.append(got)
        return got

    monkeypatch.setattr(memory, "SOURCE_BESIDE_MIN", 0)  # (a ticker's few MiB: mapped beside too)
    monkeypatch.setitem(memory._UFFD, "usable", True)  # (another test's restore may have found none)
    monkeypatch.setattr(memory._Source, "__init__", init)
    monkeypatch.setattr(memory._Source, "get", get)
    return made


def test_a_restore_copies_from_the_mapping_made_meanwhile_and_unmaps_it(spawn, python_exe, tmp_path, sources):
    t, _ = start_ticker(spawn, python_exe)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    t.reap()
    p = pyckpt.restore(img, allow_changed_files=True)
    spawn.track(p.pid)
    assert sources[0] == "made" and sources[1] is not None, "the copy-in did not use the mapping made in PREPARE"
    _unmapped_soon(img / "pages.img")
    # the copy runs on from where the original was: it ticks on
    size = len(t.text())
    deadline = time.monotonic() + 5
    while len(t.text()) <= size:
        assert time.monotonic() < deadline, "the restored ticker does not tick"
        time.sleep(0.02)


def test_a_restore_that_fails_after_prepare_leaves_no_mapping(spawn, python_exe, tmp_path, sources):
    t, _ = start_ticker(spawn, python_exe)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)  # the original runs on: its PID is in use
    fds = set(os.listdir("/proc/self/fd"))
    with pytest.raises(PidInUseError):
        pyckpt.restore(img, allow_changed_files=True)
    assert sources[:1] == ["made"], "VALIDATE did not start the mapping: the test tests nothing"
    # no copy-in ran: the one that read the mapping is the page check
    assert len(sources) == 2 and sources[1] is not None, "the page check did not read the mapping"
    _unmapped_soon(img / "pages.img")
    assert set(os.listdir("/proc/self/fd")) <= fds, "the failed restore left an fd open"


def test_a_restore_refused_as_its_check_starts_leaves_no_mapping(spawn, python_exe, tmp_path, sources,
                                                               monkeypatch):
    """The mapping is made at the end of VALIDATE, just before the page check starts; a
    refusal there (a run kept in a damaged parent image, here planted) unmaps it."""
    from pyckpt.errors import ImageError
    from pyckpt.image import ImageReader

    t, _ = start_ticker(spawn, python_exe)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    t.reap()

    def damaged(self):
        raise ImageError(f"image at {self.where}: planted damage in a parent", path=self.where)

    monkeypatch.setattr(ImageReader, "_verify_inherited", damaged)
    fds = set(os.listdir("/proc/self/fd"))
    with pytest.raises(ImageError, match="planted damage"):
        pyckpt.restore(img, allow_changed_files=True)
    assert sources[:1] == ["made"], "VALIDATE did not start the mapping: the test tests nothing"
    _unmapped_soon(img / "pages.img")
    assert set(os.listdir("/proc/self/fd")) <= fds, "the refused restore left an fd open"
