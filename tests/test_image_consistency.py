"""Images whose bytes are intact (every checksum right) but whose records do not
make one process are refused with ImageError before anything is created."""

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest

import pyckpt
from pyckpt.image import ImageReader, ImageWriter
from pyckpt.kinds import files, load_all, memory, thread


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small real image (its process killed and reaped: the PID is free)."""
    d = tmp_path_factory.mktemp("good") / "img"
    p = subprocess.Popen([sys.executable, "-c", "import time\nprint('READY', flush=True)\n"
                          "while True: time.sleep(0.05)"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True)
    try:
        p.stdout.readline()  # started up: dump a process at rest, not one still loading
        pyckpt.dump(p.pid, d, kill=True)
    finally:
        p.kill()
        p.wait()
    return d, p.pid


def rewrite(good: str, dest, mutate) -> None:
    """Copy an image, changing its records with `mutate(records)`, checksums made anew."""
    load_all()
    reader = ImageReader(good)
    records = mutate([dataclasses.replace(r) for r in reader.records])
    w = ImageWriter(dest)
    w.write_header(reader.header)
    for r in records:
        w.write_record(r)
    with open(os.path.join(good, "pages.img"), "rb") as src:
        shutil.copyfileobj(src, open(w.pages.fd, "wb", closefd=False))
    w.pages.offset = os.path.getsize(os.path.join(good, "pages.img"))
    w.finish(sync=False)


def _vmas(recs):
    return [r for r in recs if isinstance(r, memory.VmaRecord)]


def overlap(recs):
    a, b = _vmas(recs)[:2]
    a.end = b.start + 4096
    return recs


def run_outside(recs):
    v = next(v for v in _vmas(recs) if v.pages)
    v.pages[0].addr = v.end
    return recs


def dangling_fd(recs):
    next(r for r in recs if isinstance(r, files.FdRecord)).file_id = 999
    return recs


def duplicate_fd(recs):
    fd = next(r for r in recs if isinstance(r, files.FdRecord))
    return recs + [dataclasses.replace(fd)]


def thread_without_registers(recs):
    t = next(r for r in recs if isinstance(r, thread.ThreadRecord))
    return recs + [dataclasses.replace(t, tid=t.tid + 100000)]


@pytest.mark.parametrize("mutate", [overlap, run_outside, dangling_fd, duplicate_fd,
                                    thread_without_registers])
def test_inconsistent_image_is_refused(good, tmp_path, mutate):
    img, pid = good
    bad = tmp_path / "bad"
    rewrite(str(img), bad, mutate)
    with pytest.raises(pyckpt.ImageError):
        pyckpt.restore(bad)
    assert not os.path.exists(f"/proc/{pid}")
    r = subprocess.run([sys.executable, "-m", "pyckpt", "check", str(bad)], capture_output=True, text=True)
    assert r.returncode == pyckpt.ImageError.exit_code and len(r.stderr.strip().splitlines()) == 1


def test_the_untouched_copy_is_fine(good, tmp_path):
    img, pid = good
    copy = tmp_path / "copy"
    rewrite(str(img), copy, lambda recs: recs)
    pyckpt.open_image(copy).verify()
