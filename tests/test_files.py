"""Files reopened by path: a file modified since the dump is refused unless the
user accepts changed files; a directory fd comes back at its position."""

import os
import subprocess
import sys

import pytest

import pyckpt
from conftest import check

TARGET = r"""
import os, signal, sys
work = sys.argv[1]
data = os.open(os.path.join(work, "data.txt"), os.O_RDWR)
os.lseek(data, 3, os.SEEK_SET)
d = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
import selfcheck
def check():
    ok = os.lseek(data, 0, os.SEEK_CUR) == 3 and os.read(data, 2) == b"de"
    os.lseek(data, 3, os.SEEK_SET)
    ok = ok and sorted(os.listdir(d)) == ["data.txt"] and os.path.samestat(os.fstat(d), os.stat(work))
    return [] if ok else ["data offset or directory"]
selfcheck.listen()
print("READY", flush=True)
selfcheck.serve(check)
"""


def _dumped(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.txt").write_bytes(b"abcdefgh")
    t = spawn([python_exe, "-c", TARGET, str(work)])
    t.wait_for("^READY")
    before = check(t)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    t.reap()
    return t, work, img, before


def test_directory_and_file_fds_come_back(spawn, python_exe, tmp_path):
    t, work, img, before = _dumped(spawn, python_exe, tmp_path)
    kinds = {f["fd"]: f["what"] for f in pyckpt.open_image(img).summary()["fds"]}
    assert any(w.startswith("directory ") for w in kinds.values())
    spawn.track(pyckpt.restore(img).pid)
    assert check(t) > before


def test_modified_file_is_refused_unless_accepted(spawn, python_exe, tmp_path):
    t, work, img, before = _dumped(spawn, python_exe, tmp_path)
    (work / "data.txt").write_bytes(b"abcdefgh-longer")
    with pytest.raises(pyckpt.FileChangedError, match=r"data\.txt.*size 15, was 8"):
        pyckpt.restore(img)
    assert not os.path.exists(f"/proc/{t.pid}")
    r = subprocess.run([sys.executable, "-m", "pyckpt", "restore", str(img)], capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == pyckpt.FileChangedError.exit_code
    assert len(r.stderr.strip().splitlines()) == 1 and "data.txt" in r.stderr
    assert not os.path.exists(f"/proc/{t.pid}")
    spawn.track(pyckpt.restore(img, allow_changed_files=True).pid)
    assert check(t) > before


def test_path_that_became_a_fifo_is_refused_not_waited_on(spawn, python_exe, tmp_path):
    t, work, img, before = _dumped(spawn, python_exe, tmp_path)
    (work / "data.txt").unlink()
    os.mkfifo(work / "data.txt")  # opening it for reading would block forever
    with pytest.raises(pyckpt.FileChangedError, match="it is a FIFO now, was a regular file"):
        pyckpt.restore(img)
    assert not os.path.exists(f"/proc/{t.pid}")


def test_descriptions_of_one_inode_are_told_apart_in_kcmp_order():
    """files._described: among many fds of one anonymous inode (eventfds, some dup'ed),
    each fd is found to share the description it shares and no other, as kcmp says."""
    import random

    from pyckpt.kinds import files

    pid = os.getpid()
    made = [os.eventfd(0) for _ in range(12)]
    dups = [os.dup(fd) for fd in made[::3]]
    try:
        fds = made + dups
        random.Random(7).shuffle(fds)
        entries: list = []
        ids: dict[int, int] = {}
        for i, fd in enumerate(fds):
            at, found = files._described(entries, pid, fd)
            if found is None:
                entries.insert(at, (pid, fd, i))
                ids[fd] = i
            else:
                ids[fd] = found
        assert len(entries) == len(made)
        for a in fds:
            for b in fds:
                assert (ids[a] == ids[b]) == files.same_description(pid, a, pid, b)
    finally:
        for fd in made + dups:
            os.close(fd)
