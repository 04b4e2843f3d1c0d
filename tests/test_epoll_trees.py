"""epoll sets in process trees (issue 10): a prefork server whose master has no epoll
and whose workers have their own sets, a set inherited across fork and used by
parent and child, items that are pipes, sockets and eventfds of other processes.

Each restored process checks its own sets (targets/ev_epoll_tree.py): the items
as /proc/self/fdinfo showed them before the dump, which are ready with which
data now, a write reported through the set, a disarmed one-shot item quiet;
the workers go on serving connections through their sets.
"""

from __future__ import annotations

import os
import socket

import psutil
import pytest

import pyckpt
from conftest import TARGETS, check
from test_trees import dump_kill_restore_tree, trees  # noqa: F401 -- the fixture

TARGET = str(TARGETS / "ev_epoll_tree.py")


def _served_by(port: int) -> tuple[int, int]:
    """Connect to the prefork server; (worker PID, worker index) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(100)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
    word, pid, i = data.decode().split()
    assert word == "worker"
    return int(pid), int(i)


def test_prefork_master_without_epoll_workers_with_their_own(trees, spawn, python_exe, tmp_path):
    """The restore used to fail with 'epoll file N has no fd': the root (the master)
    tried to fill the workers' sets."""
    t = spawn([python_exe, TARGET, "prefork", "2"], name="prefork")
    m = t.wait_for(r"^READY port=(\d+) workers=(\d+),(\d+)$")
    port, workers = int(m.group(1)), [int(m.group(2)), int(m.group(3))]
    trees.adopt(t.pid, *workers)
    check(t)
    assert _served_by(port)[0] in workers
    image = dump_kill_restore_tree(spawn, t, workers, tmp_path / "img")
    kinds = [{f["kind"] for f in p["fds"]} for p in image.summary()["processes"]]
    assert "epoll" not in kinds[0] and all("epoll" in k for k in kinds[1:]), kinds  # the shape
    check(t)  # each worker checks its sets, through its own loop set
    seen = {_served_by(port)[0] for _ in range(6)}
    assert seen and seen <= set(workers), seen
    check(t)
    # and once more: the restored tree dumps and restores again
    dump_kill_restore_tree(spawn, t, workers, tmp_path / "img2")
    check(t)
    assert _served_by(port)[0] in workers


def test_epoll_set_inherited_across_fork_used_by_parent_and_child(trees, spawn, python_exe, tmp_path):
    """One set, two holders: its items (added by either, some on files only one of
    them holds) are saved and restored once.  The dump used to refuse the items whose
    file the parent (the set's saver) no longer held; the restore added the items once
    per holder ('EPOLL_CTL_ADD ... File exists', see the plain case below)."""
    t = spawn([python_exe, TARGET, "shared"], name="shared")
    child = int(t.wait_for(r"^READY child=(\d+)$").group(1))
    trees.adopt(t.pid, child)
    check(t)
    dump_kill_restore_tree(spawn, t, [child], tmp_path / "img")
    check(t)
    check(t)
    dump_kill_restore_tree(spawn, t, [child], tmp_path / "img2")
    check(t)


def _ask(port: int, line: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(line.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(100)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
    return data.decode().strip()


@pytest.mark.parametrize("child_waits", ["asyncio", "blocking"])
def test_asyncio_server_with_a_forked_multiprocessing_child(trees, spawn, python_exe, tmp_path, child_waits):
    """The child inherits the loop's epoll set (and every file in it), and runs a loop
    of its own or waits in a blocking recv.  The restore used to fail: with 'epoll
    file N has no fd' (the root tried to fill the child's own set), or, the
    inherited set filled once per holder, with 'EPOLL_CTL_ADD ... File exists'."""
    t = spawn([python_exe, str(TARGETS / "asyncio_mp.py"), child_waits], name="asyncio_mp")
    m = t.wait_for(r"^READY port=(\d+) child=(\d+)$")
    port, child = int(m.group(1)), int(m.group(2))
    trees.adopt(t.pid, child)
    check(t)
    dump_kill_restore_tree(spawn, t, [child], tmp_path / "img")
    check(t)  # a round trip through both loops, the selector's set as the loop registered it
    assert _ask(port, "after") == f"child {child} after"
    check(t)


def test_epoll_set_made_before_fork_child_waits_on_it(trees, spawn, python_exe, tmp_path):
    """The plain inherited set: both hold every file; the restore used to add its
    items in each process, the second time failing with 'EPOLL_CTL_ADD ... File
    exists'.  After the restore the child still gets the parent's events through it."""
    t = spawn([python_exe, TARGET, "inherited"], name="inherited")
    child = int(t.wait_for(r"^READY child=(\d+)$").group(1))
    trees.adopt(t.pid, child)
    check(t)
    dump_kill_restore_tree(spawn, t, [child], tmp_path / "img")
    check(t)
    check(t)


FOREIGN_TREE = r"""
import os, sys, time, selfcheck
from ev_common import EPOLLIN, epoll_add, epoll_create
selfcheck.listen()
ep = epoll_create()
foreign = int(sys.argv[1])
epoll_add(ep, foreign, EPOLLIN, 0xF0F0)  # the file only the test (outside the tree) keeps
os.close(foreign)
parent = os.getpid()
child = os.fork()
if child == 0:
    while os.getppid() == parent:
        time.sleep(0.02)
    os._exit(0)
print(f"READY child={child}", flush=True)
selfcheck.serve(lambda: [])
"""


def test_item_whose_file_no_process_of_the_tree_holds_is_refused(trees, spawn, python_exe, tmp_path):
    """Looked for in every process of the tree (the child is dumped after the set's
    holder): refused once none holds it, and the tree is left running."""
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        t = spawn([python_exe, "-c", FOREIGN_TREE, str(efd)], name="foreign", pass_fds=[efd])
        child = int(t.wait_for(r"^READY child=(\d+)$").group(1))
        trees.adopt(t.pid, child)
        with pytest.raises(pyckpt.UnsupportedError,
                           match=rf"process {t.pid}: epoll fd \d+ watches a file added as fd {efd} "
                                 "that no fd of any process of the tree holds"):
            pyckpt.dump(t.pid, tmp_path / "img", kill=True)
        assert t.alive() and psutil.pid_exists(child)
        check(t)
    finally:
        os.close(efd)


class _Records:
    """Just enough of an image for a kind's validate()."""

    path = "forged"

    def __init__(self, *records):
        self.records = list(records)


def test_forged_epoll_items_are_an_image_error():
    from pyckpt.errors import ImageError
    from pyckpt.kinds.epoll import EpollItem, EpollItemsRecord, EpollRecord, validate
    from pyckpt.kinds.files import FdRecord

    ep, efd = EpollRecord(1, 2), FdRecord(3, 1, True)
    item = EpollItem(4, 2, 1, 0)
    validate(_Records(ep, efd, FdRecord(4, 2, False), EpollItemsRecord(1, [item])))  # fine
    bad = {
        "which no process of the image holds": (ep, efd, EpollItemsRecord(1, [item])),
        "not an epoll": (ep, efd, FdRecord(4, 2, False), EpollItemsRecord(2, [])),
        "two records of items": (ep, efd, FdRecord(4, 2, False), EpollItemsRecord(1, [item]),
                                 EpollItemsRecord(1, [item])),
        "has items but no fd": (ep, FdRecord(4, 2, False), EpollItemsRecord(1, [item])),
        "loop": (ep, efd, EpollRecord(2, 2), FdRecord(4, 2, False), EpollItemsRecord(1, [item]),
                 EpollItemsRecord(2, [EpollItem(3, 1, 1, 0)])),
    }
    for what, records in bad.items():
        with pytest.raises(ImageError, match=what):
            validate(_Records(*records))
