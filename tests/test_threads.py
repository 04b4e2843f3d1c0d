"""Multi-threaded processes: C pthreads and CPython threads carry on after restore,
each checking itself (TLS, condvar ping-pong, a sleeping thread, a pending
blocked signal, a counting SIGUSR1 handler; a worker pool with a queue); 70
threads each with an altstack and a parent-death signal of its own, which the
dump reads with calls run in all the threads at once."""

import os
import subprocess

import pytest

from conftest import TARGETS, check, dump_kill_restore
from test_trees import _end_tree, dump_kill_restore_tree


def build(tmp_path_factory, name: str) -> str:
    out = tmp_path_factory.mktemp("bin") / name
    subprocess.run(["gcc", "-O1", "-pthread", "-o", str(out), str(TARGETS / f"{name}.c")], check=True)
    return str(out)


@pytest.fixture(scope="session")
def threads_bin(tmp_path_factory):
    return build(tmp_path_factory, "threads")


def test_pthreads_carry_on(spawn, threads_bin, tmp_path):
    t = spawn([threads_bin])
    t.wait_for("^READY")
    assert len(os.listdir(f"/proc/{t.pid}/task")) == 5
    tids = sorted(os.listdir(f"/proc/{t.pid}/task"))
    before = check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    assert sorted(os.listdir(f"/proc/{t.pid}/task")) == tids  # same TIDs
    after = check(t)
    assert after > before
    # the image once more: dump the restored process and restore it again
    dump_kill_restore(spawn, t, tmp_path / "img2")
    assert check(t) > after


WORKERS = r"""
import os, queue, signal, sys, threading, time
jobs, results = queue.Queue(), queue.Queue()
local = threading.local()
def worker(i):
    local.name = f"w{i}"
    while True:
        n = jobs.get()
        results.put((local.name, n * n))
workers = [threading.Thread(target=worker, args=(i,), name=f"w{i}", daemon=True) for i in range(4)]
for w in workers:
    w.start()
ask = False
def on_usr1(*a):
    global ask
    ask = True
signal.signal(signal.SIGUSR1, on_usr1)
print("READY", flush=True)
counter = 0
seen = set()
while True:
    counter += 1
    jobs.put(counter)
    name, sq = results.get(timeout=10)
    seen.add(name)
    if sq != counter * counter:
        print(f"CHECK FAIL wrong result {sq}", flush=True)
    if ask:
        ask = False
        alive = sorted(t.name for t in threading.enumerate() if t.name.startswith("w"))
        names = {int(d): open(f"/proc/self/task/{d}/comm").read().strip() for d in os.listdir("/proc/self/task")}
        ok = alive == ["w0", "w1", "w2", "w3"] and len(names) == 5
        print(f"CHECK ok counter={counter}" if ok else f"CHECK FAIL {alive} {names}", flush=True)
    time.sleep(0.005)
"""


def test_cpython_worker_pool_carries_on(spawn, python_exe, tmp_path):
    t = spawn([python_exe, "-c", WORKERS])
    t.wait_for("^READY")
    before = check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    assert check(t) > before


def test_each_thread_keeps_its_own_altstack_and_parent_death_signal(spawn, tmp_path_factory, tmp_path):
    """The dump reads each thread's clear_child_tid, altstack and parent-death signal
    with one call per thread run in every thread at once (inject.check_each), each
    into a slot of its own in the scratch page; 70 threads need two pages' worth.
    A mix-up of slots, or of the groups, gives some thread another's values."""
    t = spawn([build(tmp_path_factory, "thread_state")])
    t.wait_for("^READY")
    (child,) = (int(c) for c in open(f"/proc/{t.pid}/task/{t.pid}/children").read().split())
    try:
        tids = sorted(os.listdir(f"/proc/{child}/task"))
        assert len(tids) == 71
        before = check(t)
        dump_kill_restore_tree(spawn, t, [child], tmp_path / "img")
        assert sorted(os.listdir(f"/proc/{child}/task")) == tids
        assert check(t) > before
    finally:
        _end_tree([t.pid, child])
