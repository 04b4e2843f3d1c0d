"""POSIX shared memory and semaphores in /dev/shm, in a process tree, saved and restored.

- a multiprocessing.shared_memory segment mapped by name (a shared file mapping);
- the same, its name removed (shm_unlink) while parent and child still map it: its
  content travels in the image once, and both map the one re-created file;
- a multiprocessing Semaphore of the spawn and forkserver methods: glibc's sem_open
  maps the file under a temporary name it unlinks, the semaphore lives on under
  its own name (/dev/shm/sem.mp-...), and the restored worker still wakes up when
  the restored parent releases it.
The targets (targets/posix_shm.py) check themselves after restore.
"""

import os
import re
import signal

import psutil
import pytest

import pyckpt
from conftest import TARGETS, Target, kill_own, reap_dumped
from test_sysvipc import mailbox  # the same self-check protocol


def tree_of(pid: int) -> list[int]:
    return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]


@pytest.fixture
def trees():
    """Process trees a test restored: killed top-down at the end (each orphan is then
    pytest's, a subreaper, and kill_own may end it), and the /dev/shm files their
    semaphores lived in removed."""
    made: list[list[int]] = []
    shm_files: set[tuple[int, int]] = set()
    yield made, shm_files
    for pids in made:
        for pid in pids:
            kill_own(pid)
    for entry in os.scandir("/dev/shm"):
        st = entry.stat(follow_symlinks=False)
        if (st.st_dev, st.st_ino) in shm_files:
            os.unlink(entry.path)


def sem_files(pid: int) -> set[tuple[int, int]]:
    """(dev, ino) of every /dev/shm file process `pid` maps."""
    out = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            if "/dev/shm/" in line:
                st = os.stat(f"/proc/{pid}/map_files/{line.split()[0]}")
                out.add((st.st_dev, st.st_ino))
    return out


def dump_kill_reap(t: Target, img) -> list[int]:
    """Dump the target's tree with kill; reap every process of it (the orphans are ours,
    pytest is a subreaper); return their PIDs."""
    pids = tree_of(t.pid)
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    for pid in pids[1:]:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # reaped by its own parent before it died
    return pids


@pytest.mark.parametrize("mode", ["named", "unlinked"])
def test_shared_memory_of_a_tree(spawn, python_exe, tmp_path, trees, mode):
    t = spawn([python_exe, str(TARGETS / "posix_shm.py"), mode], name="shm")
    path = t.wait_for(r"^READY parent \d+ (\S+)").group(1)
    child = int(t.wait_for(r"^READY child (\d+)").group(1))
    trees[0].append(tree_of(t.pid))  # (with its resource tracker) until the dump kills them
    trees[1].update(sem_files(t.pid))
    mailbox(t, t.pid, "parent")
    assert os.path.exists(path) == (mode == "named")
    img = tmp_path / "img"
    pids = dump_kill_reap(t, img)
    p = pyckpt.restore(img)
    trees[0].append(pids)
    t.popen = None
    assert sorted(tree_of(p.pid)) == sorted(pids)
    first = mailbox(t, child, "child")  # the parent's mark, written before the dump
    assert first // 1000 == t.pid, first
    assert mailbox(t, t.pid, "parent") // 1000 == child
    assert mailbox(t, child, "child") == first + 1  # written by the restored parent
    if mode == "unlinked":
        assert not os.path.exists(path)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_semaphore(spawn, python_exe, tmp_path, trees, method):
    t = spawn([python_exe, str(TARGETS / "posix_shm.py"), "sem", method], name="sem")
    t.wait_for(r"^READY parent")
    after = len(t.lines())
    os.kill(t.pid, signal.SIGUSR1)
    t.wait_for(r"^CHECK ok", after=after)
    t.wait_for(r"^GOT 1$", after=after)
    with open(f"/proc/{t.pid}/maps") as f:
        sems = {line.split(None, 5)[5].strip() for line in f if "/dev/shm/sem." in line}
    assert sems and all(re.fullmatch(r"/dev/shm/sem\.\S+ \(deleted\)", s) for s in sems), sems
    trees[1].update(sem_files(t.pid))
    img = tmp_path / "img"
    trees[0].append(tree_of(t.pid))  # until the dump kills them
    pids = dump_kill_reap(t, img)
    p = pyckpt.restore(img)
    trees[0].append(pids)
    t.popen = None
    for n in (2, 3):
        after = len(t.lines())
        os.kill(p.pid, signal.SIGUSR1)
        t.wait_for(r"^CHECK ok", after=after)
        t.wait_for(rf"^GOT {n}$", after=after)  # the restored worker woke on the restored semaphore


LINKED = r"""
import mmap, os, sys, selfcheck
d1, d2 = sys.argv[1], sys.argv[2]
first = os.path.join(d1, "first")
with open(first, "wb") as f:
    f.write(b"linked!" * 1000)
f = open(first, "r+b")
m = mmap.mmap(f.fileno(), 0)
f.close()
os.link(first, os.path.join(d2, "second"))
os.unlink(first)  # the mapping now shows "first (deleted)", the file lives on as d2/second
def check():
    return [] if m[:7000] == b"linked!" * 1000 else ["content differs"]
print("READY", flush=True)
selfcheck.serve(check)
"""


def test_mapping_of_a_name_removed_while_linked_elsewhere(spawn, python_exe, tmp_path):
    """Its other name in the same directory is found and mapped; in another directory
    it is not looked for, and the refusal says so (the target runs on)."""
    from conftest import check, dump_kill_restore

    same = tmp_path / "same"
    same.mkdir()
    t = spawn([python_exe, "-c", LINKED, str(same), str(same)])
    t.wait_for("^READY")
    dump_kill_restore(spawn, t, tmp_path / "img")
    check(t)
    with open(f"/proc/{t.pid}/maps") as f:  # mapped by its remaining name now
        assert any(line.rstrip().endswith(str(same / "second")) for line in f)

    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    t2 = spawn([python_exe, "-c", LINKED, str(d1), str(d2)])
    t2.wait_for("^READY")
    with pytest.raises(pyckpt.errors.UnsupportedError) as e:
        pyckpt.dump(t2.pid, tmp_path / "img2")
    assert f"{d1}/first (deleted)" in str(e.value) and "1 link(s) under another name" in str(e.value)
    check(t2)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_pool(spawn, python_exe, tmp_path, trees, method):
    from conftest import check

    t = spawn([python_exe, str(TARGETS / "posix_shm.py"), "pool", method], name="pool")
    t.wait_for(r"^READY pool")
    check(t)
    trees[1].update(sem_files(t.pid))
    for pid in tree_of(t.pid):
        trees[1].update(sem_files(pid))
    trees[0].append(tree_of(t.pid))
    pids = dump_kill_reap(t, tmp_path / "img")
    p = pyckpt.restore(tmp_path / "img")
    trees[0].append(pids)
    t.popen = None
    assert p.pid == t.pid
    check(t)
    check(t)
