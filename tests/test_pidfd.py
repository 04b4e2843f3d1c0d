"""pidfds (issue 10, item 4): the first kind built on `opens_late`.

A pidfd of a child in the tree, of the holder itself, one inherited across fork
(one open file in two processes), one in an epoll set: after a dump --kill and
restore each process checks its pidfds itself (targets/pidfds.py), then the
parent kills its child through the pidfd, sees the epoll set report it, and
reaps it with waitid(P_PIDFD).  A pidfd of a process outside the image is
refused by name; a forged image whose pidfd names no process of it is an
ImageError before anything is made.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

import pyckpt
from conftest import TARGETS, check
from test_image_format import _parse, _seal
from test_trees import dump_kill_restore_tree, trees  # noqa: F401 -- the fixture

TARGET = str(TARGETS / "pidfds.py")


def test_pidfds_of_child_self_shared_and_in_epoll(trees, spawn, python_exe, tmp_path):
    t = spawn([python_exe, TARGET], name="pidfds")
    a, b = map(int, t.wait_for(r"^READY a=(\d+) b=(\d+)$").groups())
    trees.adopt(t.pid, a, b)
    check(t)
    image = dump_kill_restore_tree(spawn, t, [a, b], tmp_path / "img")
    fds = image.summary()["processes"][0]["fds"]
    assert [f["kind"] for f in fds].count("pidfd") == 3, fds
    check(t)
    os.kill(t.pid, signal.SIGUSR2)
    m = t.wait_for(r"^REAPED a events=(.*) status=(\d+) code=(\d+)$")
    assert m.group(1) != "[]" and int(m.group(2)) == signal.SIGTERM, m.group(0)


def test_a_pidfd_of_a_process_outside_the_image_is_refused_by_name(spawn, python_exe, tmp_path):
    outside = subprocess.Popen(["sleep", "60"], start_new_session=True)
    spawn.track(outside.pid)
    code = (f"import os, time; fd = os.pidfd_open({outside.pid}); print('READY', fd, flush=True); "
            "time.sleep(60)")
    t = spawn([python_exe, "-c", code], name="outside")
    fd = int(t.wait_for(r"^READY (\d+)$").group(1))
    with pytest.raises(pyckpt.UnsupportedFdError, match=rf"fd {fd}.*pidfd of process {outside.pid}, "
                                                        "which is not in the image") as e:
        pyckpt.dump(t.pid, tmp_path / "img")
    assert e.value.fd == fd and e.value.pid == t.pid
    os.kill(t.pid, 0)  # it runs on


def test_a_forged_pidfd_naming_no_process_of_the_image_is_an_image_error(spawn, python_exe, tmp_path):
    code = "import os, time; fd = os.pidfd_open(os.getpid()); print('READY', flush=True); time.sleep(60)"
    t = spawn([python_exe, "-c", code], name="self")
    t.wait_for(r"^READY$")
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)
    version, header, records = _parse((img / "records.img").read_bytes())
    from pyckpt.kinds.pidfd import PidfdRecord

    forged = [(ty, dict(p, pid=p["pid"] + 100000) if ty == PidfdRecord.RECORD_TYPE else p)
              for ty, p in records]
    assert forged != records
    _seal(img, version, header, forged)
    with pytest.raises(pyckpt.ImageError, match=rf"refers to process {t.pid + 100000}, which is not in "
                                                "the image"):
        pyckpt.open_image(img)
