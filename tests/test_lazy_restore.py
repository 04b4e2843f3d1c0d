"""Lazy restore (pyckpt/lazy.py): the process runs before its memory is filled.

The target (targets/lazy_target.c) holds a buffer whose every word it can
recompute; after a lazy restore it reads its pages in random order and checks
each (a zero page or another page's data where the image had its data fails),
after a fork (child and parent each), after MADV_DONTNEED (zeros there) and an
mremap (the moved part intact), with threads, and as a tree.  `lazy="touch"`
(no background push) keeps pages missing until touched, so the events happen
while the handler still has pages to give.  The handler killed while pages are
missing, or pages.img cut short under it, must leave no process running: the
restored process dies of SIGKILL.  The handler and guard PIDs come from what
restore returns (`lazy_handlers`, or the CLI's line on stderr): they are
processes this test caused to exist (reparented to pytest, a subreaper), and
are killed/reaped by PID only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

import pyckpt
from conftest import TARGETS, Target, check, kill_own, reap_dumped, start_ctarget
from pyckpt import restorer
from pyckpt.restorer import Stage
from test_fault_injection import _failing_at_end
from test_trees import _wait_gone

MIB = 64


@pytest.fixture(scope="session")
def lazy_bin(tmp_path_factory):
    out = tmp_path_factory.mktemp("bin") / "lazy_target"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(out), str(TARGETS / "lazy_target.c")], check=True)
    return out


@pytest.fixture
def later():
    """Children of restored processes, killed after `spawn` killed and reaped their
    parents: only then are they this test's children (a subreaper), which kill_own
    asks.  Name it before `spawn` in a test's arguments (torn down after it)."""
    pids: list[int] = []
    yield pids.append
    for pid in pids:
        kill_own(pid)


def _start(spawn, lazy_bin, mode: str = "", mib: int = MIB) -> Target:
    t = spawn([str(lazy_bin), str(mib), *([mode] if mode else [])], name="lazy")
    t.wait_for(r"^READY")
    if mode == "tree":
        t.wait_for(r"^CHILD-READY")
    return t


def _restore(spawn, t: Target, image, lazy=True, members=()):
    """Dump t (and its children `members`) with kill, restore lazily; returns
    (restored Target, handlers)."""
    pyckpt.dump(t.pid, image, kill=True)
    reap_dumped(t)
    _wait_gone(*members)
    proc = pyckpt.restore(image, lazy=lazy)
    handlers = proc.lazy_handlers
    for h in handlers:  # the finalizer goes backwards: processes, handlers, then guards
        spawn.track(h.guard)  # (a guard is ours once its handler is gone)
        spawn.track(h.handler)
    spawn.track(proc.pid)
    assert proc.pid == t.pid
    return Target(proc.pid, t.log), handlers


def _ask(t: Target, sig: int, pattern: str, pid: int | None = None) -> re.Match:
    after = len(t.lines())
    os.kill(pid or t.pid, sig)
    return t.wait_for(pattern, timeout=120, after=after)


def _wait_exit(pid: int, timeout: float = 120) -> int:
    """Reap `pid` (a child of this test process, or a process reparented to it) once it ends."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not reparented to us yet (its parent is still exiting)
            got, status = 0, 0
        if got == pid:
            return status
        assert time.monotonic() < deadline, f"process {pid} did not end"
        time.sleep(0.02)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return int(re.search(r"^Rss:\s+(\d+) kB", f.read(), re.M).group(1))


@pytest.mark.parametrize("lazy", [True, "touch"])
def test_pages_come_on_touch_in_random_order(spawn, lazy_bin, tmp_path, lazy):
    t = _start(spawn, lazy_bin)
    r, handlers = _restore(spawn, t, tmp_path / "img", lazy)
    assert len(handlers) == 1 and handlers[0].pid == r.pid
    if lazy == "touch":  # nothing touched yet: the buffer is not there
        assert _rss_kib(r.pid) < MIB * 1024 // 2, _rss_kib(r.pid)
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"
    # every page is in (pushed, or touched): the handler goes, once its guard went (it
    # reaps it), and no userfaultfd is left on the process's memory
    h = handlers[0]
    status = _wait_exit(h.handler)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert not os.path.exists(f"/proc/{h.guard}")
    with open(f"/proc/{r.pid}/smaps") as f:
        assert not re.search(r"^VmFlags:.* um\b", f.read(), re.M)
    assert _rss_kib(r.pid) >= MIB * 1024
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"


@pytest.mark.parametrize("lazy", [True, "touch"])
def test_fork_after_lazy_restore(spawn, lazy_bin, tmp_path, lazy):
    t = _start(spawn, lazy_bin)
    r, _ = _restore(spawn, t, tmp_path / "img", lazy)
    after = len(r.lines())
    os.kill(r.pid, signal.SIGUSR2)  # fork: the child checks its copy, the parent its own
    assert r.wait_for(r"^CHILD (ok|FAIL.*)$", timeout=120, after=after).group(1) == "ok"
    assert r.wait_for(r"^PARENT (ok|FAIL.*)$", timeout=120, after=after).group(1) == "ok"
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"


def test_dontneed_after_lazy_restore_reads_zeros(spawn, lazy_bin, tmp_path):
    t = _start(spawn, lazy_bin)
    r, _ = _restore(spawn, t, tmp_path / "img", "touch")
    assert _ask(r, signal.SIGHUP, r"^DONTNEED (ok|FAIL.*)$").group(1) == "ok"


def test_mremap_after_lazy_restore_moves_what_was_to_come(spawn, lazy_bin, tmp_path):
    t = _start(spawn, lazy_bin)
    r, _ = _restore(spawn, t, tmp_path / "img", "touch")
    assert _ask(r, signal.SIGURG, r"^REMAP (ok|FAIL.*)$").group(1) == "ok"


@pytest.mark.parametrize("lazy", [True, "touch"])
def test_sparse_memory_restored_lazily(spawn, lazy_bin, tmp_path, lazy):
    """Every other page written: thousands of runs, and holes that read zeros."""
    t = _start(spawn, lazy_bin, "sparse", mib=32)
    r, handlers = _restore(spawn, t, tmp_path / "img", lazy)
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"
    status = _wait_exit(handlers[0].handler)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"


def test_threads_restored_lazily(spawn, lazy_bin, tmp_path):
    t = _start(spawn, lazy_bin, "threads")
    r, _ = _restore(spawn, t, tmp_path / "img", "touch")
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"


def test_tree_restored_lazily(later, spawn, lazy_bin, tmp_path):
    t = _start(spawn, lazy_bin, "tree")
    child = int(t.wait_for(r"^CHILD-READY (\d+)").group(1))
    r, handlers = _restore(spawn, t, tmp_path / "img", "touch", members=[child])
    later(child)
    assert sorted(h.pid for h in handlers) == sorted([r.pid, child])
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"
    assert _ask(r, signal.SIGUSR1, r"^TREE-CHILD CHECK (ok|FAIL.*)$", pid=child).group(1) == "ok"


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _guards(h, n: int = 2, timeout: float = 10.0) -> set[int]:
    """The guards of handler `h` (its children named pyckpt-guard; only read from
    /proc), once there are `n` (the second is started once the restore returned)."""
    deadline = time.monotonic() + timeout
    while True:
        got = {pid for pid in _children(h.handler) if _comm(pid) == "pyckpt-guard"}
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.01)


def _new_guard(h, old: set[int], timeout: float = 10.0) -> int | None:
    """A guard of `h` not in `old` (started in place of a killed one), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = _guards(h, 1, 0) - old
        if new:
            return new.pop()
        time.sleep(0.01)
    return None


def _orphan_guards() -> set[int]:
    """This test process's children named pyckpt-guard: guards whose handler is gone
    (reparented to this test process, a subreaper)."""
    import psutil

    got = set()
    for c in psutil.Process().children():
        try:
            if c.name() == "pyckpt-guard":
                got.add(c.pid)
        except psutil.NoSuchProcess:
            pass
    return got


def _reap_guards(before: set[int], killed: set[int] = frozenset()) -> int:
    """Reap the guards left to this test process since `before`; each must have
    exited 1 (it killed the processes and saw them gone), but those of `killed` (this
    test killed them: left unreaped by a handler killed soon after); how many did."""
    guards = _orphan_guards() - before
    for pid in guards:
        st = _wait_exit(pid)
        if pid in killed and os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL:
            continue
        assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 1, (pid, st)
    return len(guards - killed)


def test_handler_killed_kills_the_process(spawn, lazy_bin, tmp_path):
    before = _orphan_guards()
    t = _start(spawn, lazy_bin)
    r, handlers = _restore(spawn, t, tmp_path / "img", "touch")
    assert _rss_kib(r.pid) < MIB * 1024 // 2  # its pages are still to come
    h = handlers[0]
    assert len(_guards(h)) == 2
    os.kill(h.handler, signal.SIGKILL)  # a process this restore made (lazy_handlers)
    status = _wait_exit(r.pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert not any(line.startswith("CHECK") for line in r.lines())
    _wait_exit(h.handler)
    assert _reap_guards(before) == 2  # each killed the process, saw it gone, and went
    assert h.wait(timeout=60) == (f"page handler {h.handler} of process {r.pid} ended before every "
                                  "page was in (killed?): the processes it served were killed")  # (once)


@pytest.mark.parametrize("wait", [False, True], ids=["at-once", "after-a-new-guard"])
def test_guard_killed_then_handler_killed_kills_the_process(spawn, lazy_bin, tmp_path, wait):
    """A guard goes first, the handler then (at once, or once it started a new guard):
    the other guard — and the new one — kill the process when the handler goes; the
    process, asked to check its memory once the handler is gone, never runs on with
    zero pages."""
    before = _orphan_guards()
    t = _start(spawn, lazy_bin)
    r, handlers = _restore(spawn, t, tmp_path / "img", "touch")
    assert _rss_kib(r.pid) < MIB * 1024 // 2  # its pages are still to come
    h = handlers[0]
    guards = _guards(h)
    assert h.guard in guards and len(guards) == 2
    os.kill(h.guard, signal.SIGKILL)  # processes this restore made (lazy_handlers)
    new = _new_guard(h, guards) if wait else None
    os.kill(h.handler, signal.SIGKILL)
    os.kill(r.pid, signal.SIGUSR1)  # touch every page now that the handler is gone
    status = _wait_exit(r.pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert not any(line.startswith("CHECK") for line in r.lines())
    _wait_exit(h.handler)
    n = _reap_guards(before, killed={h.guard})  # the other, the new one (if it was started)
    assert n == 2 if wait else n in (1, 2), n
    if wait:
        assert new is not None and not os.path.exists(f"/proc/{new}")  # it went, reaped
        assert not os.path.exists(f"/proc/{h.guard}")  # the handler reaped the one killed


def test_guard_killed_then_handler_killed_kills_what_was_forked_while_lazy(later, spawn, lazy_bin, tmp_path):
    """A child forked while lazy (its pidfd sent to the guards): the new guard has it
    too, and kills it with its parent once the handler and the other guard are gone."""
    before = _orphan_guards()
    t = _start(spawn, lazy_bin)
    r, handlers = _restore(spawn, t, tmp_path / "img", "touch")
    child = int(_ask(r, signal.SIGWINCH, r"^FORKED (\d+)$").group(1))
    later(child)
    h = handlers[0]
    guards = _guards(h)
    spare = (guards - {h.guard}).pop()
    os.kill(h.guard, signal.SIGKILL)
    new = _new_guard(h, guards)
    assert new is not None
    os.kill(spare, signal.SIGKILL)  # the handler's own (read from /proc above)
    os.kill(h.handler, signal.SIGKILL)
    for pid in (r.pid, child):  # the child is ours once its parent is gone (a subreaper)
        os.kill(pid, signal.SIGUSR1)  # check (touch) every page
        status = _wait_exit(pid)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (pid, status)
    assert not any("CHECK" in line for line in r.lines())
    _wait_exit(h.handler)
    assert _reap_guards(before, killed={h.guard, spare}) >= 1  # the new one (and another?)
    assert not os.path.exists(f"/proc/{new}")


@pytest.mark.parametrize("lazy", [True, "touch"])
def test_guard_killed_alone_changes_nothing(spawn, lazy_bin, tmp_path, lazy):
    """A guard killed while pages are still to come: the handler starts another and
    serves on; every page comes right, and the handler and its guards exit 0 at the end."""
    t = _start(spawn, lazy_bin)
    r, handlers = _restore(spawn, t, tmp_path / "img", lazy)
    h = handlers[0]
    guards = _guards(h, timeout=0.5 if lazy is True else 10.0)
    os.kill(h.guard, signal.SIGKILL)
    new = _new_guard(h, guards, timeout=0.5 if lazy is True else 10.0)
    if lazy == "touch":  # nothing is pushed: it must have started one
        assert len(guards) == 2 and new is not None, (guards, new)
    # (lazy=True: it may be done, and gone, before a new guard is seen)
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"
    status = _wait_exit(h.handler)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    for pid in guards | {new} - {None}:  # told it was done, each went (reaped by the handler)
        assert not os.path.exists(f"/proc/{pid}"), pid
    with open(f"/proc/{r.pid}/smaps") as f:
        assert not re.search(r"^VmFlags:.* um\b", f.read(), re.M)
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"


def test_guard_killed_and_no_new_one_pushes_every_page_then_exits(spawn, lazy_bin, tmp_path):
    """The guard killed and the handler unable to start another (no two fds left for a
    new socket pair: the handler's RLIMIT_NOFILE lowered to its lowest free fd number, so
    only the old socket's number comes free): it pushes every remaining page at once
    ("touch" pushes none otherwise) and only then exits."""
    import resource

    t = _start(spawn, lazy_bin)
    r, handlers = _restore(spawn, t, tmp_path / "img", "touch")
    assert _rss_kib(r.pid) < MIB * 1024 // 2
    h = handlers[0]
    held = {int(fd) for fd in os.listdir(f"/proc/{h.handler}/fd")}
    low = min(set(range(len(held) + 1)) - held)
    resource.prlimit(h.handler, resource.RLIMIT_NOFILE, (low, low))  # our handler (lazy_handlers)
    os.kill(h.guard, signal.SIGKILL)
    status = _wait_exit(h.handler)  # done: every page pushed
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert _rss_kib(r.pid) >= MIB * 1024
    with open(f"/proc/{r.pid}/smaps") as f:
        assert not re.search(r"^VmFlags:.* um\b", f.read(), re.M)
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"


def test_handler_killed_kills_what_was_forked_while_lazy(later, spawn, lazy_bin, tmp_path):
    before = _orphan_guards()
    t = _start(spawn, lazy_bin)
    r, handlers = _restore(spawn, t, tmp_path / "img", "touch")
    assert len(_guards(handlers[0])) == 2
    child = int(_ask(r, signal.SIGWINCH, r"^FORKED (\d+)$").group(1))
    later(child)
    os.kill(handlers[0].handler, signal.SIGKILL)
    for pid in (r.pid, child):  # the child is ours once its parent is gone (a subreaper)
        status = _wait_exit(pid)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (pid, status)
    _wait_exit(handlers[0].handler)
    assert _reap_guards(before) == 2


def test_child_forked_while_lazy_keeps_its_pages(later, spawn, lazy_bin, tmp_path):
    t = _start(spawn, lazy_bin)
    r, handlers = _restore(spawn, t, tmp_path / "img", "touch")
    child = int(_ask(r, signal.SIGWINCH, r"^FORKED (\d+)$").group(1))
    later(child)
    assert _ask(r, signal.SIGUSR1, r"^FORKED CHECK (ok|FAIL.*)$", pid=child).group(1) == "ok"
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"
    status = _wait_exit(handlers[0].handler)  # both touched every page: it is done
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_dump_while_lazy_is_refused_and_harms_nothing(spawn, lazy_bin, tmp_path):
    t = _start(spawn, lazy_bin)
    r, handlers = _restore(spawn, t, tmp_path / "img", "touch")
    with pytest.raises(pyckpt.UnsupportedError, match="userfaultfd"):  # missing pages would be lost
        pyckpt.dump(r.pid, tmp_path / "img2", kill=True)
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"
    _wait_exit(handlers[0].handler)  # every page touched: the handler went, and so did the
    pyckpt.dump(r.pid, tmp_path / "img3", kill=True)  # userfaultfd: a dump is whole again
    _wait_exit(r.pid)
    proc = pyckpt.restore(tmp_path / "img3")
    spawn.track(proc.pid)
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"


@pytest.mark.parametrize("lazy", [True, "touch"])
def test_handler_ends_when_the_process_exits_before_its_pages_are_in(spawn, lazy_bin, tmp_path, lazy):
    t = _start(spawn, lazy_bin, mib=256)
    r, handlers = _restore(spawn, t, tmp_path / "img", lazy)
    os.kill(r.pid, signal.SIGKILL)  # ours (restored by this test)
    _wait_exit(r.pid)
    status = _wait_exit(handlers[0].handler)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_handler_ends_when_the_process_execs(spawn, lazy_bin, tmp_path):
    t = _start(spawn, lazy_bin)
    r, handlers = _restore(spawn, t, tmp_path / "img", "touch")
    _ask(r, signal.SIGTTIN, r"^EXEC")
    status = _wait_exit(handlers[0].handler)  # its next push finds the memory gone (ESRCH)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert r.alive()  # the new program runs on: nothing was killed
    with open(f"/proc/{r.pid}/comm") as f:
        assert f.read().strip() == "sleep"


def test_image_removed_while_lazy_changes_nothing(spawn, lazy_bin, tmp_path):
    import shutil

    t = _start(spawn, lazy_bin)
    r, _ = _restore(spawn, t, tmp_path / "img", "touch")
    shutil.rmtree(tmp_path / "img")  # the handler holds pages.img open
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"


def test_pages_img_cut_short_while_lazy_kills_the_process(spawn, lazy_bin, tmp_path):
    before = _orphan_guards()
    t = _start(spawn, lazy_bin)
    r, handlers = _restore(spawn, t, tmp_path / "img", "touch")
    assert len(_guards(handlers[0])) == 2
    os.truncate(tmp_path / "img" / "pages.img", 0)  # a read error for the handler
    os.kill(r.pid, signal.SIGUSR1)
    status = _wait_exit(r.pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert not any(line.startswith("CHECK") for line in r.lines())
    status = _wait_exit(handlers[0].handler)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3, status  # it gave up: a read error
    assert _reap_guards(before) == 2
    said = handlers[0].wait(timeout=60)
    assert said.startswith(f"page handler {handlers[0].handler} of process {r.pid}: ") and "pages.img" in said, said


def _flip(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_damaged_records_are_refused_before_any_process(spawn, lazy_bin, tmp_path):
    """Everything but the contents of lazily served pages is checked before any process
    exists, as in a copying restore."""
    t = _start(spawn, lazy_bin, mib=8)
    pid = t.pid
    pyckpt.dump(pid, tmp_path / "img", kill=True)
    reap_dumped(t)
    _flip(tmp_path / "img" / "records.img", os.path.getsize(tmp_path / "img" / "records.img") // 2)
    with pytest.raises(pyckpt.ImageError):
        pyckpt.restore(tmp_path / "img", lazy=True)
    assert not os.path.exists(f"/proc/{pid}")


def _corrupt(image, addr: int) -> tuple[int, str]:
    """Flip a byte in the middle of the page at `addr` in the image's pages.img; the
    offset of the checksummed piece that holds it, and the file's path."""
    from pyckpt.image import ImageReader
    from pyckpt.kinds.memory import VmaRecord

    for v in ImageReader(image).of_type(VmaRecord):
        for p in v.pages:
            if not p.zero and not p.image and p.addr <= addr < p.addr + p.npages * 4096:
                at = p.offset + (addr & ~4095) - p.addr + 2048
                piece = next(off for off, n, _ in p.pieces() if off <= at < off + n)
                _flip(image / "pages.img", at)
                return piece, str(image / "pages.img")
    raise AssertionError(f"no stored page at {addr:#x}")


def _dump_and_corrupt(t: Target, image, where: float = 0.75, mib: int = MIB) -> tuple[int, str]:
    """Dump t (of `mib` MiB) with kill; corrupt the page `where` through its buffer (the
    target checks it after the first half with SIGALRM, or with the rest on SIGUSR1)."""
    buf = int(t.wait_for(r"^READY \d+ ([0-9a-f]+)").group(1), 16)
    pyckpt.dump(t.pid, image, kill=True)
    reap_dumped(t)
    return _corrupt(image, buf + int(mib * 1024 * 1024 * where) // 4096 * 4096)


def _assert_killed_for(pid: int, r: Target, h, piece: int, pages: str, before: set[int]) -> None:
    """The process was SIGKILLed without ever reading the corrupted page (it would have
    said CHECK FAIL), the handler exited 6, and what it said names the piece."""
    status = _wait_exit(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert not any("CHECK" in line for line in r.lines()), r.lines()
    said = h.wait(timeout=60)
    assert said is not None and said.startswith(f"pages at offset {piece} of {pages} fail their "
                                                "checksum (the image is corrupted)"), said
    assert f"process {r.pid}" in said and f"page handler {h.handler}" in said, said
    status = _wait_exit(h.handler)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 6, status
    assert _reap_guards(before) == 2  # each saw the handler go, killed (no one left), exited 1
    assert h.wait() == said  # (kept)


def test_corrupted_page_kills_the_process_when_it_touches_it(spawn, lazy_bin, tmp_path):
    """A byte flipped in a page the target reads late: the restore returns (the page's
    checksum is checked when it is first served, not before), the process runs on the
    good pages (HALF ok), and when it touches the bad one it is killed before it can read
    it; the handler says why (Handler.wait) and exits 6."""
    before = _orphan_guards()
    t = _start(spawn, lazy_bin)
    piece, pages = _dump_and_corrupt(t, tmp_path / "img")
    proc = pyckpt.restore(tmp_path / "img", lazy="touch")
    h = proc.lazy_handlers[0]
    for pid in (h.guard, h.handler, proc.pid):
        spawn.track(pid)
    r = Target(proc.pid, t.log)
    assert _ask(r, signal.SIGALRM, r"^HALF (ok|FAIL.*)$").group(1) == "ok"
    with pytest.raises(TimeoutError):  # still serving: nothing to say yet
        h.wait(timeout=0.05)
    os.kill(r.pid, signal.SIGUSR1)  # every page, in random order: the bad one among them
    _assert_killed_for(r.pid, r, h, piece, pages, before)


def test_corrupted_page_kills_what_was_forked_while_lazy(later, spawn, lazy_bin, tmp_path):
    """The child forked while lazy touches the bad page: it and its parent are killed."""
    before = _orphan_guards()
    t = _start(spawn, lazy_bin)
    piece, pages = _dump_and_corrupt(t, tmp_path / "img")
    proc = pyckpt.restore(tmp_path / "img", lazy="touch")
    h = proc.lazy_handlers[0]
    for pid in (h.guard, h.handler, proc.pid):
        spawn.track(pid)
    r = Target(proc.pid, t.log)
    child = int(_ask(r, signal.SIGWINCH, r"^FORKED (\d+)$").group(1))
    later(child)
    os.kill(child, signal.SIGUSR1)  # the child checks its copy: the bad page among them
    _assert_killed_for(r.pid, r, h, piece, pages, before)
    status = _wait_exit(child)  # ours once its parent is gone (a subreaper)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def test_corrupted_page_pushed_in_the_background_kills_the_process(spawn, lazy_bin, tmp_path):
    """lazy=True: the bad piece is found by the background push (or by a touch), the
    process killed before it reads it.  (If the push got there before the restore
    returned, the restore fails, undone, with the same reason as an ImageError.)"""
    before = _orphan_guards()
    t = _start(spawn, lazy_bin, mib=256)  # (the bad piece far from the first pushed)
    piece, pages = _dump_and_corrupt(t, tmp_path / "img", 0.95, mib=256)
    try:
        proc = pyckpt.restore(tmp_path / "img", lazy=True)
    except pyckpt.ImageError as e:
        assert f"pages at offset {piece} of {pages} fail their checksum" in str(e), e
        assert not os.path.exists(f"/proc/{t.pid}")
        return
    h = proc.lazy_handlers[0]
    for pid in (h.guard, h.handler, proc.pid):
        spawn.track(pid)
    r = Target(proc.pid, t.log)
    os.kill(r.pid, signal.SIGUSR1)
    _assert_killed_for(r.pid, r, h, piece, pages, before)


def test_corrupted_page_met_while_restoring_fails_the_restore(spawn, lazy_bin, tmp_path, monkeypatch):
    """The handler kills the process while pyckpt is still restoring it (the bad piece is
    among the first pushed; the restore is held until then): the restore fails with an
    ImageError naming the piece, nothing is left, and pyckpt keeps no fd."""
    t = _start(spawn, lazy_bin)
    pid = t.pid
    piece, pages = _dump_and_corrupt(t, tmp_path / "img", where=0)
    fds = _own_fds()
    real = restorer._timed

    def held(stats, stage):
        timer = real(stats, stage)
        if stage != Stage.THREAD:
            return timer

        class Held:
            def __enter__(self):
                return timer.__enter__()

            def __exit__(self, *exc):
                deadline = time.monotonic() + 60
                while _state(pid) not in ("Z", "X", ""):  # killed by the handler (pyckpt reaps it)
                    assert time.monotonic() < deadline, "the handler did not kill the process"
                    time.sleep(0.01)
                return timer.__exit__(*exc)

        return Held()

    monkeypatch.setattr(restorer, "_timed", held)
    with pytest.raises(pyckpt.ImageError, match=f"pages at offset {piece} of {re.escape(pages)} fail their checksum"):
        pyckpt.restore(tmp_path / "img", lazy=True)
    monkeypatch.undo()
    assert not os.path.exists(f"/proc/{pid}")
    assert _own_fds() == fds, "pyckpt left fds open"


def _own_fds() -> set[str]:
    """This process's fds but the report sockets of lazy handlers still running (earlier
    tests'; pyckpt closes them once read, at any later lazy restore)."""
    from pyckpt import lazy

    return set(os.listdir("/proc/self/fd")) - {str(s.fileno()) for s in lazy._REPORTS.values()}


def test_without_a_checksum_function_for_the_handler_every_page_is_checked_up_front(spawn, lazy_bin,
                                                                                      tmp_path, monkeypatch):
    """If python-xxhash's own function cannot be found for the handler, a lazy restore
    checks every page before any process exists, as a copying restore: refused."""
    from pyckpt.kinds import memory

    t = _start(spawn, lazy_bin, mib=8)
    pid = t.pid
    piece, pages = _dump_and_corrupt(t, tmp_path / "img", mib=8)
    monkeypatch.setitem(memory._HASH, "fn", 0)  # (the dump in _restore then hashes in Python)
    with pytest.raises(pyckpt.ImageError, match=f"pages at offset {piece} of pages.img fail their checksum"):
        pyckpt.restore(tmp_path / "img", lazy=True)
    assert not os.path.exists(f"/proc/{pid}")
    r, _ = _restore(spawn, _start(spawn, lazy_bin, mib=8), tmp_path / "good", True)  # (the handler checks none)
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"
    monkeypatch.undo()
    assert memory.hash_fn()  # (found here: the other tests check as served)


def test_no_first_guard_fails_the_restore_before_the_process_runs(spawn, lazy_bin, tmp_path, monkeypatch):
    """The first guard is forked while the restore goes on; if it does not start (here:
    its PID read as an error), the restore fails before the release, undone: the
    process never ran, pyckpt keeps no fd, and the handler sees it gone and exits 0."""
    import errno

    import psutil

    from pyckpt import lazy

    t = _start(spawn, lazy_bin, mib=8)
    pid = t.pid
    pyckpt.dump(pid, tmp_path / "img", kill=True)
    reap_dumped(t)
    ours = {c.pid for c in psutil.Process().children()}
    fds = _own_fds()

    class Lib:
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def ck_lazy_guard(fd):
            real.ck_lazy_guard(fd)  # (read and closed: the guard runs; said not to)
            return -errno.EAGAIN

    real = lazy.lib
    monkeypatch.setattr(lazy, "lib", Lib())
    with pytest.raises(pyckpt.RestoreError, match="did not start: Resource temporarily unavailable"):
        pyckpt.restore(tmp_path / "img", lazy="touch")
    monkeypatch.undo()
    assert not os.path.exists(f"/proc/{pid}")
    assert _own_fds() == fds, "pyckpt left fds open"
    deadline = time.monotonic() + 60
    while True:  # the handler (reparented to this test, a subreaper) ends by itself
        new = [c for c in psutil.Process().children() if c.pid not in ours and _comm(c.pid) == "pyckpt-lazy"]
        for c in new:
            spawn.track(c.pid)
        if new:
            status = _wait_exit(new[0].pid)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
            break
        assert time.monotonic() < deadline, "no handler"
        time.sleep(0.02)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_lazy_takes_true_false_or_touch(tmp_path):
    with pytest.raises(ValueError, match="lazy must be"):
        pyckpt.restore(tmp_path / "no-image", lazy="yes")


def test_cli_restore_lazy(spawn, lazy_bin, tmp_path):
    t = _start(spawn, lazy_bin)
    pid = t.pid
    pyckpt.dump(pid, tmp_path / "img", kill=True)
    reap_dumped(t)
    out = subprocess.run([sys.executable, "-m", "pyckpt", "restore", "--lazy", str(tmp_path / "img")],
                         capture_output=True, text=True, timeout=120)  # returns: the handler is detached
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(pid)
    m = re.search(r"lazy: the pages of process (\d+) come from handler (\d+) \(guard (\d+)\)", out.stderr)
    assert m and int(m.group(1)) == pid, out.stderr
    handler, guard = int(m.group(2)), int(m.group(3))
    spawn.track(guard)
    spawn.track(handler)
    spawn.track(pid)  # reparented to this test (a subreaper) when the command exited
    r = Target(pid, t.log)
    assert _ask(r, signal.SIGUSR1, r"^CHECK (ok|FAIL.*)$").group(1) == "ok"
    assert os.WIFEXITED(_wait_exit(handler))


def test_cli_restore_lazy_says_a_corrupted_page_on_its_stderr(spawn, lazy_bin, tmp_path):
    """`pyckpt restore --lazy` returns at once; its stderr a file (or a terminal), the
    handler keeps it and says there why it killed the process, later."""
    t = _start(spawn, lazy_bin, mib=256)  # (the bad piece far from the first pushed)
    pid = t.pid
    piece, pages = _dump_and_corrupt(t, tmp_path / "img", 0.95, mib=256)
    err = tmp_path / "stderr"
    with open(err, "w") as f:
        out = subprocess.run([sys.executable, "-m", "pyckpt", "restore", "--lazy", str(tmp_path / "img")],
                             stdout=subprocess.PIPE, stderr=f, text=True, timeout=120)
    assert out.returncode == 0, err.read_text()
    m = re.search(r"lazy: the pages of process (\d+) come from handler (\d+) \(guard (\d+)\)", err.read_text())
    assert m and int(m.group(1)) == pid, err.read_text()
    handler = int(m.group(2))
    spawn.track(int(m.group(3)))
    spawn.track(handler)
    spawn.track(pid)
    os.kill(pid, signal.SIGUSR1)  # (the command set no "touch": the push may find it first)
    status = _wait_exit(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    status = _wait_exit(handler)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 6, status
    lines = [x for x in err.read_text().splitlines() if "fail their checksum" in x]
    assert lines == [f"pyckpt lazy restore: pages at offset {piece} of {pages} fail their checksum (the "
                     f"image is corrupted): the lazily restored process {pid}, and what it forked, were "
                     f"killed before reading them (page handler {handler})"], err.read_text()
    assert not any("CHECK" in line for line in Target(pid, t.log).lines())


@pytest.mark.parametrize("lazy", [True, "touch"])
def test_cpython_and_c_targets_restored_lazily(spawn, ctarget, python_exe, tmp_path, lazy):
    """Real programs: CPython (a dict and a bytearray; its heap, arenas, stacks lazy) and
    the C target (private file mapping pages read as in a copying restore, AVX state,
    signal handlers): each checks itself after a lazy restore, and again later."""
    py = spawn([python_exe, str(TARGETS / "pytarget.py")], name="pytarget")
    py.wait_for(r"^READY", timeout=30)
    c = start_ctarget(spawn, ctarget, tmp_path)
    for t, name in ((py, "py"), (c, "c")):
        before = check(t)
        r, handlers = _restore(spawn, t, tmp_path / f"img-{name}", lazy)
        assert len(handlers) == 1
        assert check(r) > before
        assert check(r) > before


@pytest.mark.parametrize("stage", [Stage.PAGES, Stage.THREAD, Stage.REGISTERS], ids=lambda s: s.name)
@pytest.mark.parametrize("lazy", [True, "touch"])
def test_lazy_restore_failing_after_its_handler_started_leaves_nothing(spawn, lazy_bin, tmp_path, stage,
                                                                       lazy, monkeypatch):
    """A restore that fails once the handler runs: the process is killed and reaped as in
    any failed restore, its handler sees it gone and exits (0) by itself, its guard too,
    and pyckpt keeps no fd."""
    import psutil

    t = _start(spawn, lazy_bin, mib=16)
    pid = t.pid
    pyckpt.dump(pid, tmp_path / "img", kill=True)
    reap_dumped(t)
    ours = {c.pid for c in psutil.Process().children()}
    fds = _own_fds()
    monkeypatch.setattr(restorer, "_timed", _failing_at_end(restorer._timed, stage, 1, pyckpt.RestoreError))
    with pytest.raises(pyckpt.RestoreError, match=f"injected fault at the end of {stage.name}"):
        pyckpt.restore(tmp_path / "img", lazy=lazy)
    monkeypatch.undo()
    assert not os.path.exists(f"/proc/{pid}")
    assert _own_fds() == fds, "pyckpt left fds open"
    # the handler was reparented to this test (a subreaper): it ends by itself
    deadline, handlers = time.monotonic() + 60, 0
    while True:
        new = [c for c in psutil.Process().children() if c.pid not in ours]
        left = []
        for c in new:
            spawn.track(c.pid)
            try:
                name = c.name()
                if name not in ("pyckpt-lazy", "pyckpt-guard"):
                    continue
                if c.status() == psutil.STATUS_ZOMBIE:
                    _, status = os.waitpid(c.pid, 0)
                    handlers += name == "pyckpt-lazy"
                    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (name, status)
                else:
                    left.append(c.name())
            except psutil.NoSuchProcess:
                pass
        if not left and handlers:
            break
        assert time.monotonic() < deadline, (f"{left or 'no handler'} after the failed restore",
                                             [(c.pid, _comm(c.pid)) for c in new])
        time.sleep(0.02)
