"""Process trees: a root, its child A (in its own process group) and grandchild B,
made with fork, sharing an anonymous MAP_SHARED page and a pipe from B to the
root with unread data in it, are dumped together and restored with their PIDs,
links, sessions and groups; each restored tree checks itself (tree.py).

Only processes a test started are signalled: the tree's members are killed by
PID only after /proc shows that their parents lead, through the tree, to this
test process; zombies and orphans reparented to pytest (a subreaper) are reaped.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest

import pyckpt
from conftest import TARGETS, Target, assert_running, check, kill_own, reap_dumped

TREE = str(TARGETS / "tree.py")


# --- /proc helpers -------------------------------------------------------------------------------

def _stat(pid: int) -> dict | None:
    """state, ppid, pgrp and session of `pid` (as this test's PID namespace sees them)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return {"state": fields[0], "ppid": int(fields[1]), "pgrp": int(fields[2]), "session": int(fields[3])}


def _ppid(pid: int) -> int | None:
    st = _stat(pid)
    return None if st is None else st["ppid"]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(c) for c in f.read().split()]
    return sorted(out)


def _ns_ids(pid: int, key: str) -> list[int]:
    """A line of /proc/PID/status such as NSpid: the ID in each namespace, outermost first."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def _assert_tree(root: int, a: int, b: int) -> None:
    """From the outside: root -> A -> B, A leads its own group (B is in it), one session."""
    st = {name: _stat(pid) for name, pid in (("root", root), ("A", a), ("B", b))}
    assert all(st.values()), st
    for name, s in st.items():
        assert s["state"] in "RS", f"{name} is in state {s['state']}"
        assert s["session"] == root, f"{name} is in session {s['session']}, not {root}"
    assert st["root"]["pgrp"] == root
    assert st["A"]["ppid"] == root and st["A"]["pgrp"] == a, st["A"]
    assert st["B"]["ppid"] == a and st["B"]["pgrp"] == a, st["B"]
    assert _children(root) == [a]
    assert _children(a) == [b]
    assert _children(b) == []


def _leads_to_us(pid: int, via: set[int]) -> bool:
    """The parents of `pid` are members of `via` up to this test process."""
    for _ in range(len(via) + 1):
        ppid = _ppid(pid)
        if ppid == os.getpid():
            return True
        if ppid not in via:
            return False
        pid = ppid
    return False


def _end_tree(pids: list[int]) -> None:
    """Kill the members (root first in `pids`) leaves first, each only when its ancestry
    leads through the tree to this test process; reap those that end up our children."""
    via = set(pids)
    for pid in reversed(pids):
        if _leads_to_us(pid, via):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    left = list(pids)
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:
        for pid in list(left):
            ppid = _ppid(pid)
            if ppid is None:  # gone
                left.remove(pid)
            elif ppid == os.getpid():
                kill_own(pid)
                left.remove(pid)
            elif ppid not in via:  # not ours (any more): leave it alone
                left.remove(pid)
        time.sleep(0.01)


def _wait_gone(*pids: int, timeout: float = 10.0) -> None:
    """Members killed with their root: once the root is reaped they are reparented to us
    (a subreaper) and reaped here — unless the dumper's ptrace wait reaped them already."""
    left = set(pids)
    deadline = time.monotonic() + timeout
    while left:
        for pid in list(left):
            st = _stat(pid)
            if st is None:
                left.discard(pid)
            elif st["ppid"] == os.getpid() and st["state"] in "ZX":
                try:
                    got, status = os.waitpid(pid, 0)
                except ChildProcessError:  # reaped meanwhile by someone else
                    left.discard(pid)
                    continue
                assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
                    f"tree member {pid} ended with status {status:#x}, not SIGKILL"
                left.discard(pid)
        if left and time.monotonic() > deadline:
            raise AssertionError(f"tree members {sorted(left)} still there {timeout}s after the dump: "
                                 f"{ {p: _stat(p) for p in left} }")
        time.sleep(0.01)


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture
def trees(spawn, python_exe):
    """trees(log=None) -> (Target of the root, A, B); trees.adopt(root, ...) registers
    other groups of processes.  Every member is killed and reaped at the end."""
    groups: list[list[int]] = []

    def start(log=None):
        t = spawn([python_exe, TREE] + ([str(log)] if log else []), name="tree")
        if log:
            t.log = log
        m = t.wait_for(r"^READY root=(\d+) a=(\d+) b=(\d+)$", timeout=30)
        root, a, b = map(int, m.groups())
        groups.append([root, a, b])
        assert root == t.pid
        _assert_tree(root, a, b)
        return t, a, b

    start.adopt = lambda *pids: groups.append(list(pids))
    yield start
    for g in groups:
        _end_tree(g)


def dump_kill_restore_tree(spawn, t: Target, members: list[int], image):
    """Dump a tree with kill, see root and `members` gone (reaped), restore it; returns the Image."""
    img = pyckpt.dump(t.pid, image, kill=True)
    assert [p["pid"] for p in img.summary()["processes"]] == [t.pid, *members]
    reap_dumped(t)
    _wait_gone(*members)
    p = pyckpt.restore(image)
    for pid in (p.pid, *members):
        spawn.track(pid)
    assert p.pid == t.pid
    t.popen = None  # the restored root is our child, not the Popen's
    return img


def _dump_kill_restore(spawn, t: Target, a: int, b: int, image) -> None:
    """Dump the tree with kill, see all three die, restore it with the same PIDs."""
    img = pyckpt.dump(t.pid, image, kill=True)
    assert img.pid == t.pid
    reap_dumped(t)
    _wait_gone(a, b)
    for pid in (t.pid, a, b):
        assert not psutil.pid_exists(pid), f"{pid} still exists after dump(kill=True)"
    p = pyckpt.restore(image)
    for pid in (p.pid, a, b):
        spawn.track(pid)
    assert p.pid == t.pid
    t.popen = None  # the restored root is our child, not the Popen's
    assert_running(t.pid)
    _assert_tree(t.pid, a, b)


# --- tests --------------------------------------------------------------------------------------

def test_tree_carries_on_after_restore(trees, spawn, tmp_path):
    t, a, b = trees()
    before = check(t)
    _dump_kill_restore(spawn, t, a, b, tmp_path / "img")
    after = check(t)
    assert after > before
    assert check(t) > after  # the counters, the shared page and the pipe keep moving
    _assert_tree(t.pid, a, b)


def test_dump_without_kill_leaves_the_tree_running(trees, tmp_path):
    t, a, b = trees()
    before = check(t)
    pyckpt.dump(t.pid, tmp_path / "img")
    assert (tmp_path / "img" / "COMPLETE").exists()
    _assert_tree(t.pid, a, b)  # all three resumed, none stopped or traced
    for pid in (t.pid, a, b):
        assert _ns_ids(pid, "TracerPid") == [0]
    after = check(t)
    assert after > before
    assert check(t) > after


def test_restored_tree_dumps_again(trees, spawn, tmp_path):
    t, a, b = trees()
    check(t)
    _dump_kill_restore(spawn, t, a, b, tmp_path / "img")
    n = check(t)
    _dump_kill_restore(spawn, t, a, b, tmp_path / "img2")
    assert check(t) > n
    _assert_tree(t.pid, a, b)


def _copy(outer_root: int, root: int, a: int, b: int, log) -> Target:
    """A copy of the tree in its own PID namespace, seen from outside; returns its root."""
    assert _ns_ids(outer_root, "NSpid") == [outer_root, root]
    (outer_a,) = _children(outer_root)
    (outer_b,) = _children(outer_a)
    assert _children(outer_b) == []
    assert _ns_ids(outer_a, "NSpid") == [outer_a, a]
    assert _ns_ids(outer_b, "NSpid") == [outer_b, b]
    for pid in (outer_root, outer_a, outer_b):
        assert _ns_ids(pid, "NSsid") == [outer_root, root], pid
        assert _stat(pid)["state"] in "RS", pid
    assert _ns_ids(outer_root, "NSpgid") == [outer_root, root]
    assert _ns_ids(outer_a, "NSpgid") == [outer_a, a]
    assert _ns_ids(outer_b, "NSpgid") == [outer_a, a]
    return Target(outer_root, log)


def test_two_copies_in_new_pid_namespaces(trees, spawn, tmp_path):
    log = tmp_path / "copies.log"  # opened O_APPEND by the tree: the copies add their lines
    log.touch()
    t, a, b = trees(log)
    check(t)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    _wait_gone(a, b)

    copies, inits = [], []
    for _ in range(2):
        p = pyckpt.restore(img, new_pidns=True, allow_changed_files=True)
        init = p.ppid()
        spawn.track(init)  # our child; killing it ends the namespace and the copy
        inits.append(init)
        assert psutil.Process(init).ppid() == os.getpid()
        assert _ns_ids(init, "NSpid")[-1] == 1
        copies.append(_copy(p.pid, t.pid, a, b, log))
    assert copies[0].pid != copies[1].pid

    counters = [check(c) for c in copies]  # one at a time: only the asked root writes a line
    counters = [check(c) for c in copies]
    assert all(n > 0 for n in counters)

    # ending one copy (its init) leaves the other untouched
    gone = [copies[0].pid] + _children(copies[0].pid)
    gone += _children(gone[1])
    kill_own(inits[0])
    for pid in gone:
        assert not psutil.pid_exists(pid), f"{pid} of the ended copy still exists"
    assert check(copies[1]) > counters[1]
    _copy(copies[1].pid, t.pid, a, b, log)


ZOMBIE_TREE = r"""
import os, sys, time, selfcheck
selfcheck.listen()
depth = int(sys.argv[1])
r, w = os.pipe()

def make_zombie():  # a child that exits at once (status 7) and is never waited for
    z = os.fork()
    if z == 0:
        os._exit(7)
    os.write(w, f"{os.getpid()} {z}\n".encode())

if depth == 1:
    make_zombie()
else:
    me = os.getpid()
    if os.fork() == 0:
        make_zombie()
        while os.getppid() == me:
            time.sleep(0.02)
        os._exit(0)
parent, z = map(int, os.read(r, 100).split())
print(f"READY parent={parent} zombie={z}", flush=True)

def check():
    if parent != os.getpid():
        return []
    info = os.waitid(os.P_PID, z, os.WEXITED | os.WNOWAIT)  # still there, not reaped
    return [] if (info.si_code, info.si_status) == (os.CLD_EXITED, 7) else [f"zombie {info}"]

selfcheck.serve(check)
"""


@pytest.mark.parametrize("depth", [1, 2], ids=["zombie-child", "zombie-grandchild"])
def test_zombies_come_back_as_zombies(trees, spawn, python_exe, tmp_path, depth):
    t = spawn([python_exe, "-c", ZOMBIE_TREE, str(depth)], name="zombies")
    m = t.wait_for(r"^READY parent=(\d+) zombie=(\d+)$")
    parent, zombie = int(m.group(1)), int(m.group(2))
    trees.adopt(*dict.fromkeys([t.pid, parent, zombie]))
    assert (parent == t.pid) == (depth == 1)
    deadline = time.monotonic() + 10
    while _stat(zombie)["state"] != "Z":
        assert time.monotonic() < deadline, "the child did not become a zombie"
        time.sleep(0.01)
    before = check(t)

    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    procs = {p["pid"]: p for p in pyckpt.open_image(img).summary()["processes"]}
    assert zombie not in procs or procs[zombie]["threads"] == []  # saved, not frozen
    t.reap()
    _wait_gone(*[p for p in (parent,) if p != t.pid])
    deadline = time.monotonic() + 10  # the zombie comes to us (subreaper) with its parent gone
    while _stat(zombie) is not None and _stat(zombie)["ppid"] != os.getpid():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    if _stat(zombie) is not None:
        assert os.waitpid(zombie, 0)[1] == 7 << 8
    restored = pyckpt.restore(img)
    spawn.track(restored.pid)
    t.popen = None
    assert restored.pid == t.pid
    st = _stat(zombie)
    assert (st["state"], st["ppid"]) == ("Z", parent)
    with open(f"/proc/{zombie}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[49]) == 7 << 8  # its wait status
    assert check(t) > before


# --- bad input for trees ----------------------------------------------------------------------------

TRACER = str(Path(__file__).parent / "targets" / "refusal_tracer.py")


def test_tree_member_traced_by_someone_else_is_refused(trees, spawn, python_exe, tmp_path):
    t, a, b = trees()
    helper = spawn([python_exe, TRACER, str(b)], name="tracer")  # our helper seizes our B
    assert helper.wait_for(r"^(seized|seize failed)", timeout=10).group(1) == "seized"
    with pytest.raises(pyckpt.AlreadyTracedError, match=rf"\b{b}\b"):
        pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    assert not (tmp_path / "img" / "COMPLETE").exists()
    for pid in (t.pid, a):  # the rest of the tree was let go, running
        assert _stat(pid)["state"] in "RS"
        with open(f"/proc/{pid}/status") as f:
            assert "TracerPid:\t0\n" in f.read()
    os.kill(helper.pid, signal.SIGKILL)  # ours; B is released when its tracer dies
    helper.reap()
    check(t)


LOCKED_TREE = r"""
import fcntl, os, sys, time, selfcheck
selfcheck.listen()
path = sys.argv[1]
parent = os.getpid()
child = os.fork()
if child == 0:
    f = open(path, "w")
    fcntl.flock(f, fcntl.LOCK_EX)  # held by the child only
    print("LOCKED", flush=True)
    while os.getppid() == parent:  # ends when its parent is gone
        time.sleep(0.02)
    os._exit(0)
print(f"READY child={child}", flush=True)
selfcheck.serve(lambda: [])
"""


def test_failed_tree_restore_leaves_no_member_behind(trees, spawn, python_exe, tmp_path):
    """The child's lock is taken by someone else before restore: the restore fails in
    the child's last steps, after both processes were made — and removes both."""
    lock = tmp_path / "lock"
    lock.touch()
    t = spawn([python_exe, "-c", LOCKED_TREE, str(lock)], name="locked")
    child = int(t.wait_for(r"^READY child=(\d+)$").group(1))
    trees.adopt(t.pid, child)
    t.wait_for("^LOCKED")
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    t.reap()
    _wait_gone(child)
    holder = spawn([python_exe, "-c", "import fcntl, sys, time\nf = open(sys.argv[1])\n"
                    "fcntl.flock(f, fcntl.LOCK_EX)\nprint('HOLDING', flush=True)\ntime.sleep(60)\n",
                    str(lock)], name="holder")
    holder.wait_for("^HOLDING")
    with pytest.raises(pyckpt.LockConflictError, match=str(holder.pid)):
        pyckpt.restore(img)
    for pid in (t.pid, child):
        st = _stat(pid)
        # Gone — or, killed, a zombie handed to us as this process is a subreaper
        # (elsewhere init reaps it): nothing of the tree runs.
        assert st is None or (st["state"] == "Z" and st["ppid"] == os.getpid()), f"{pid}: {st}"
        if st is not None:
            os.waitpid(pid, 0)


FORKER = r"""
import os, time, selfcheck
selfcheck.listen()
print("READY", flush=True)
born = 0
def check():
    return [] if born > 0 else ["no child was born"]
import threading
def forker():
    global born
    while True:
        c = os.fork()
        if c == 0:
            time.sleep(0.03)
            os._exit(3)
        born += 1
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.002)
threading.Thread(target=forker, daemon=True).start()
selfcheck.serve(check)
"""


def test_tree_that_keeps_forking_is_dumped_whole(trees, spawn, python_exe, tmp_path):
    """Children come and go while the tree is frozen: the member list is read again
    until it is stable, so the image holds the whole tree of that instant."""
    t = spawn([python_exe, "-c", FORKER], name="forker")
    t.wait_for("^READY")
    trees.adopt(t.pid)
    seen: set[int] = set()  # the forker is at work: children come and go
    deadline = time.monotonic() + 10
    while len(seen) < 5:
        assert time.monotonic() < deadline, f"the forker made only {len(seen)} children"
        seen.update(_children(t.pid))
        time.sleep(0.005)
    for i in range(12):  # a child exiting just as it is seized is met in about 1 dump of 25
        image = pyckpt.dump(t.pid, tmp_path / f"img{i}")
        image.verify()
        procs = image.summary()["processes"]
        assert procs[0]["pid"] == t.pid
        assert all(p["ppid"] == t.pid for p in procs[1:])
        shutil.rmtree(tmp_path / f"img{i}")  # about 100 MB each
    check(t)  # and it carried on


def test_shared_anonymous_memory_split_and_offset(trees, spawn, python_exe, tmp_path):
    """One shared anonymous object mapped as three VMAs (an mprotect in the middle), and
    another that the parent maps from a non-zero offset while its child maps all of it:
    after restore, every VMA is still a window on the one object, in both processes."""
    t = spawn([python_exe, str(TARGETS / "shared_split.py")], name="split")
    child = int(t.wait_for(r"^READY (\d+)$").group(1))
    trees.adopt(t.pid, child)
    check(t)
    dump_kill_restore_tree(spawn, t, [child], tmp_path / "img")
    check(t)
    check(t)
