"""inotify: watches come back on their paths with their masks and watch descriptors."""

import json
import os
import shutil
import subprocess
import sys

import psutil
import pytest

import pyckpt
from conftest import TARGETS, check, dump_kill_restore, reap_dumped
from pyckpt.kinds.inotify import parse_watches

FDINFO = """pos:\t0
flags:\t04000
mnt_id:\t17
ino:\t1038
inotify wd:3 ino:20c13f sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:3fc12000934da4f2
inotify wd:12 ino:2 sdev:800011 mask:4000200 ignored_mask:0 fhandle-bytes:c fhandle-type:81 f_handle:0200000000000000a1b2c3d4
"""


def test_parse_inotify_fdinfo():
    w = parse_watches(FDINFO)
    assert [(x.wd, x.ino, x.mask, x.handle_type, len(x.handle)) for x in w] == [
        (3, 0x20C13F, 0x100, 1, 8), (12, 2, 0x4000200, 0x81, 12)]
    assert (os.major(w[0].dev), os.minor(w[0].dev)) == (254, 0)
    assert (os.major(w[1].dev), os.minor(w[1].dev)) == (8, 17)
    assert parse_watches("pos:\t0\nflags:\t04000\n") == []


def start(spawn, python_exe, work):
    work.mkdir()
    t = spawn([python_exe, str(TARGETS / "del_inotify.py"), str(work)], name="del-inotify")
    t.wait_for(r"^READY")
    check(t)
    return t


def pending(t, after: int) -> int:
    return int(t.wait_for(r"^PENDING (\d+)$", after=after).group(1))


def test_inotify_watches_keep_their_wds_and_paths(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    t = start(spawn, python_exe, work)
    img = tmp_path / "img"
    dump_kill_restore(spawn, t, img)
    n = len(t.lines())
    check(t)
    assert pending(t, n) == 0, "the restore left events in the queue"
    check(t)

    show = json.loads(subprocess.run([sys.executable, "-m", "pyckpt", "show", "--json", str(img)],
                                     check=True, capture_output=True, text=True).stdout)
    (ino,) = [f for f in show["fds"] if f["kind"] == "inotify"]
    assert f"wd 1 {work}/d1 " in ino["what"] and f"wd 3 {work}/d2 " in ino["what"]
    assert f"wd 6 {work}/watched.txt " in ino["what"]


def test_removed_watched_dir_refuses_restore_and_leaves_nothing(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    t = start(spawn, python_exe, work)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    shutil.rmtree(work / "d2")
    with pytest.raises(pyckpt.FileChangedError) as ei:
        pyckpt.restore(img)
    assert f"{work}/d2" in str(ei.value) and "wd 3" in str(ei.value)
    assert not psutil.pid_exists(t.pid)

    # Re-created under the same name it is another directory: refused too,
    # unless the caller accepts changed files.
    (work / "d2").mkdir()
    with pytest.raises(pyckpt.FileChangedError, match="another file"):
        pyckpt.restore(img)
    assert not psutil.pid_exists(t.pid)
    proc = pyckpt.restore(img, allow_changed_files=True)
    spawn.track(proc.pid)
    t.popen = None
    check(t)


def test_queued_events_refuse_the_dump_and_stay_queued(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    t = start(spawn, python_exe, work)
    (work / "d1" / "unread").touch()
    with pytest.raises(pyckpt.UnsupportedError, match=r"fd \d+ \(inotify\) has \d+ bytes of events"):
        pyckpt.dump(t.pid, tmp_path / "img")
    n = len(t.lines())
    check(t)
    assert pending(t, n) == 1  # the dump took nothing from the queue
