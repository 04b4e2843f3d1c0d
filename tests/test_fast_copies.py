"""Fast copies of a template (fastcopy.py): each copy checks its own state, copies are
independent of each other, share their memory, and never outlive the template's owner."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import time
import weakref
from pathlib import Path

import psutil
import pytest

import pyckpt
from pyckpt.kinds import cpu

TARGET = Path(__file__).parent / "targets" / "fastcopy_target.py"


def make_image(spawn, tmp_path: Path, *extra: str, name: str = "img") -> tuple[Path, int]:
    datafile = tmp_path / "data.bin"
    datafile.write_bytes(bytes(range(256)) * 16)
    t = spawn([sys.executable, str(TARGET), str(datafile), *extra])
    t.wait_for(r"^READY")
    pyckpt.dump(t.pid, tmp_path / name, kill=True, progress=False)
    t.reap()
    return tmp_path / name, t.pid


class Copy:
    """A copy whose stdout and stderr are a pipe of the test's own."""

    def __init__(self, template: pyckpt.Template, **options):
        r, w = os.pipe()
        try:
            self.proc = template.copy(fds={1: w, 2: w}, **options)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        self.pid = self.proc.pid
        self.out = r
        self._close_out = weakref.finalize(self, os.close, r)  # run once: by close() or when dropped
        self.buffer = b""
        self.template = template

    def line(self, prefix: bytes, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.buffer.split(b"\n")
            for i, line in enumerate(lines[:-1]):
                if line.startswith(prefix):
                    self.buffer = b"\n".join(lines[i + 1:])
                    return line.decode()
            left = deadline - time.monotonic()
            assert left > 0, f"copy {self.pid} printed no {prefix!r} line: {self.buffer[-300:]!r}"
            if select.select([self.out], [], [], left)[0]:
                chunk = os.read(self.out, 4096)
                assert chunk, f"copy {self.pid} closed its output: {self.buffer[-300:]!r}"
                self.buffer += chunk

    def state(self) -> dict[str, str]:
        os.kill(self.pid, signal.SIGUSR1)
        line = self.line(b"STATE ")
        assert line.startswith("STATE ok "), f"copy {self.pid}: {line}"
        return dict(kv.split("=", 1) for kv in line.split()[2:])

    def change(self) -> None:
        os.kill(self.pid, signal.SIGUSR2)
        self.line(b"CHANGED")

    def close(self) -> None:
        self.template.kill(self.proc)
        self._close_out()


PRISTINE = {"marker": "0", "offset": "16", "pipe": "4", "eventfd": "5", "memory": "pristine"}


def pristine(state: dict, image_pid: int) -> bool:
    return state["pid"] == str(image_pid) and all(state[k] == v for k, v in PRISTINE.items())


def test_copies_are_their_own(spawn, tmp_path):
    """Fast copies of a single-threaded target (a regular file, its own pipe, an eventfd in
    an epoll set): each sees the image's state with the image's PID; a change in one (memory,
    file offset, pipe content) is not seen by another, nor by a copy made after it."""
    img, pid = make_image(spawn, tmp_path)
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        assert "fast" in repr(t)
        a, b = Copy(t), Copy(t)
        assert a.pid != b.pid and t.init_of(a.proc) != t.init_of(b.proc)
        assert psutil.Process(t.init_of(a.proc)).ppid() == os.getpid()
        assert os.readlink(f"/proc/{t.init_of(a.proc)}/cwd") == "/"
        assert os.readlink(f"/proc/{a.pid}/cwd") == os.getcwd()  # the image's (spawn's)
        assert pristine(a.state(), pid) and pristine(b.state(), pid)
        a.change()
        changed = a.state()
        assert (changed["marker"], changed["offset"], changed["pipe"], changed["memory"]) == \
            ("1", "116", "3", "changed"), changed
        assert pristine(b.state(), pid)
        c = Copy(t)
        assert pristine(c.state(), pid)
        assert set(t.last_copy.phases) >= {"prepare", "clone init", "clone root", "files", "registers", "release"}
        assert callable(pyckpt.template)  # the module (templates.py) does not shadow the function
        for x in (a, b, c):
            x.close()


def test_threaded_copies(spawn, tmp_path):
    """A target with 3 worker threads: every copy has them all, running."""
    img, pid = make_image(spawn, tmp_path, "--threads", "3")
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        copies = [Copy(t) for _ in range(3)]
        for c in copies:
            assert pristine(c.state(), pid)
            assert len(psutil.Process(c.pid).threads()) == 4
        copies[0].change()
        assert all(pristine(c.state(), pid) for c in copies[1:])


def test_listening_socket_in_each_copys_netns(spawn, tmp_path):
    """new_netns=True: each copy listens on the image's port in a network namespace of its
    own and answers from its own state."""
    img, pid = make_image(spawn, tmp_path, "--listen", "47331")

    def ask(c: Copy) -> str:
        with pyckpt.network_namespace(c.pid):
            s = socket.create_connection(("127.0.0.1", 47331), timeout=10)
        with s:
            return s.makefile().readline().strip()

    with pyckpt.template(img, new_netns=True) as t:
        assert t.fast, t.reason
        copies = [Copy(t) for _ in range(3)]
        nets = {os.readlink(f"/proc/{c.pid}/ns/net") for c in copies}
        assert len(nets) == 3 and os.readlink("/proc/self/ns/net") not in nets
        for c in copies:
            assert pristine(c.state(), pid)
            assert ask(c) == f"{pid} 0"
        copies[1].change()
        assert [ask(c) for c in copies] == [f"{pid} 0", f"{pid} 1", f"{pid} 0"]


def test_many_side_by_side_share_memory(spawn, tmp_path):
    """8 copies at once, each its own; their memory is shared with the template until
    written (summed Pss of 8 copies far below 8 times one copy's Rss); copies made after
    two were killed are as the others."""
    img, pid = make_image(spawn, tmp_path, "--mib", "64")
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        copies = [Copy(t) for _ in range(8)]
        for c in copies:
            assert pristine(c.state(), pid)
        rss = psutil.Process(copies[0].pid).memory_info().rss
        pss = sum(psutil.Process(c.pid).memory_full_info().pss for c in copies)
        assert rss > 64 << 20
        assert pss < 2 * rss, f"8 copies: Pss {pss >> 20} MiB in all, one copy's Rss {rss >> 20} MiB"
        inits = [t.init_of(c.proc) for c in copies[:2]]
        for c in copies[:2]:
            c.close()
        assert not any(psutil.pid_exists(p) for p in inits + [copies[0].pid, copies[1].pid])
        more = [Copy(t) for _ in range(2)]
        for c in copies[2:] + more:
            assert pristine(c.state(), pid)


def _kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def test_template_memory_in_huge_pages_where_whole(spawn, tmp_path):
    """The template's memory is collapsed into huge pages where the image had every page
    of a 2 MiB block (the copies' page tables are then small), never where it had holes
    (that would make the template bigger than the original): 64 MiB written, 256 MiB with
    one page in 512 written."""
    datafile = tmp_path / "data.bin"
    datafile.write_bytes(bytes(4096))
    t0 = spawn([sys.executable, str(TARGET), str(datafile), "--mib", "64", "--sparse", "256"])
    t0.wait_for(r"^READY")
    rss = _kib(t0.pid, "Rss")
    pyckpt.dump(t0.pid, tmp_path / "img", kill=True, progress=False)
    t0.reap()
    with pyckpt.template(tmp_path / "img") as t:
        assert t.fast, t.reason
        assert _kib(t.pid, "AnonHugePages") >= 48 << 10
        assert _kib(t.pid, "Rss") < rss + (16 << 10), (rss, _kib(t.pid, "Rss"))
        c = Copy(t)
        assert pristine(c.state(), t0.pid)
        assert _kib(c.pid, "AnonHugePages") >= 48 << 10  # mapped whole, shared with the template
        c.change()  # a byte in each MiB: the copy's own 4 KiB pages, the others still shared
        assert c.state()["memory"] == "changed" and pristine(Copy(t).state(), t0.pid)


def test_the_template_is_read_not_copied_in_and_later_restores_copy_in(spawn, tmp_path, monkeypatch):
    """The template's memory, collapsed into huge pages before its pages are read, is
    read by the task: the copy-in (UFFDIO_COPY, which refuses memory in place: EEXIST)
    is not tried, and stays on for the restores that follow in this process."""
    from pyckpt.kinds import memory
    from test_birth import UffdSpy

    spy = UffdSpy(memory.lib)
    monkeypatch.setattr(memory, "lib", spy)
    monkeypatch.setitem(memory._UFFD, "usable", True)
    img, image_pid = make_image(spawn, tmp_path, "--mib", "24")
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        assert spy.results == [] and spy.reads == [] and memory._UFFD["usable"]
        c = Copy(t)
        assert pristine(c.state(), image_pid)
    proc = pyckpt.restore(img)  # (the template and its copies are gone)
    spawn.track(proc.pid)
    assert spy.results + spy.reads == [0]


def test_failed_copy_leaves_nothing_and_the_template_works(spawn, tmp_path, monkeypatch):
    """A copy that fails once its processes exist (registers refused) is killed and reaped
    whole; the template makes good copies afterwards."""
    img, pid = make_image(spawn, tmp_path)
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        before = {p.pid for p in psutil.Process().children(recursive=True)}

        def refuse(rctx):
            raise OSError(5, "injected failure")

        monkeypatch.setattr(cpu, "restore", refuse)
        with pytest.raises(pyckpt.RestoreError, match="undone"):
            Copy(t)
        monkeypatch.undo()
        assert {p.pid for p in psutil.Process().children(recursive=True)} == before
        assert psutil.Process(t.pid).status() == psutil.STATUS_TRACING_STOP
        c = Copy(t)
        assert pristine(c.state(), pid)


def test_copy_from_another_thread_is_a_full_restore(spawn, tmp_path):
    """ptrace serves the thread that made the template: copy() from another thread makes
    a full restore, says why, and the copy is as good."""
    import threading

    img, pid = make_image(spawn, tmp_path)
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        made = []
        th = threading.Thread(target=lambda: made.append(Copy(t)))
        th.start()
        th.join()
        assert made and "thread" in t.copy_reason
        assert pristine(made[0].state(), pid)
        c = Copy(t)
        assert t.copy_reason is None and pristine(c.state(), pid)


def test_failed_tree_copy_leaves_none_of_its_processes(spawn, tmp_path, monkeypatch):
    """A tree's copy failing in a process below the root (its mm refused): the root, the
    children made and the init are all killed and reaped; the next copy is whole."""
    from pyckpt.kinds import mm

    img, pid = make_image(spawn, tmp_path, "--children", "2")
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        before = {p.pid for p in psutil.Process().children(recursive=True)}

        def refuse(rctx):
            raise OSError(5, "injected failure")

        monkeypatch.setattr(mm, "restore", refuse)
        with pytest.raises(pyckpt.RestoreError, match="undone"):
            Copy(t)
        monkeypatch.undo()
        assert {p.pid for p in psutil.Process().children(recursive=True)} == before
        c = Copy(t)
        assert pristine(c.state(), pid) and len(psutil.Process(c.pid).children()) == 2


def test_template_killed_from_outside(spawn, tmp_path):
    """The template process SIGKILLed by someone: the next copies are full restores, saying why."""
    img, pid = make_image(spawn, tmp_path)
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        os.kill(t.pid, signal.SIGKILL)  # the template: a child of this test process
        c = Copy(t)
        assert not t.fast and "ended" in t.reason and t.pid is None
        assert pristine(c.state(), pid)


def test_tree_copies(spawn, tmp_path):
    """A root with two children: the root is forked from the template, the children are
    restored below it in each copy (their image PIDs, the root their parent, running);
    the copies are independent."""
    img, pid = make_image(spawn, tmp_path, "--children", "2")
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        copies = [Copy(t) for _ in range(2)]
        for c in copies:
            state = c.state()
            assert pristine(state, pid)
            kids = [int(k) for k in state["children"].split(",")]
            assert len(set(kids)) == 2 and pid not in kids
            assert len(psutil.Process(c.pid).children()) == 2
        copies[0].change()
        assert pristine(copies[1].state(), pid)
        init = t.init_of(copies[0].proc)
        below = [p.pid for p in psutil.Process(copies[0].pid).children()]
        copies[0].close()
        assert not any(psutil.pid_exists(p) for p in [init, copies[0].pid, *below])


def test_tree_sharing_anonymous_memory(spawn, tmp_path):
    """tests/targets/tree.py (root -> A -> B sharing a MAP_SHARED|MAP_ANONYMOUS page, a pipe
    from B to the root, A's own process group, B's parent-death signal): each copy checks
    itself — its three processes share a page of their own, not the template's nor
    another copy's."""
    t0 = spawn([sys.executable, str(Path(__file__).parent / "targets" / "tree.py")], name="tree")
    m = t0.wait_for(r"^READY root=(\d+) a=(\d+) b=(\d+)$", timeout=30)
    pyckpt.dump(t0.pid, tmp_path / "img", kill=True, progress=False)
    t0.reap()
    with pyckpt.template(tmp_path / "img") as t:
        assert t.fast, t.reason
        copies = [Copy(t) for _ in range(2)]
        for _ in range(2):
            for c in copies:
                os.kill(c.pid, signal.SIGUSR1)
                line = c.line(b"CHECK ")
                assert line.startswith("CHECK ok"), f"copy {c.pid}: {line}"
        for c in copies:
            a = psutil.Process(c.pid).children()
            assert len(a) == 1 and len(a[0].children()) == 1
        assert int(m.group(1)) == t0.pid


MEMFD = """
import mmap, os, signal, time
fd = os.memfd_create("state")
os.ftruncate(fd, 4096)
shared = mmap.mmap(fd, 4096)
shared[:6] = b"image!"
os.lseek(fd, 0, os.SEEK_SET)
def report(*_):
    print("SEEN", shared[:6].decode(), os.pread(fd, 6, 0).decode(), flush=True)
def change(*_):
    shared[:6] = b"copy's"
    print("CHANGED", flush=True)
signal.signal(signal.SIGUSR1, report)
signal.signal(signal.SIGUSR2, change)
print("READY", flush=True)
while True:
    time.sleep(1)
"""


def test_memfd_mapped_shared_is_each_copys_own(spawn, tmp_path):
    """A memfd held as an fd and mapped shared: in each copy the fd and the mapping are
    one object of its own — a write through the mapping is seen through its fd, never
    in another copy."""
    t0 = spawn([sys.executable, "-c", MEMFD])
    t0.wait_for(r"^READY")
    pyckpt.dump(t0.pid, tmp_path / "img", kill=True, progress=False)
    t0.reap()
    with pyckpt.template(tmp_path / "img") as t:
        assert t.fast, t.reason
        a, b = Copy(t), Copy(t)
        a.change()
        seen = []
        for c in (a, b):
            os.kill(c.pid, signal.SIGUSR1)
            seen.append(c.line(b"SEEN "))
        assert seen == ["SEEN copy's copy's", "SEEN image! image!"], seen


def test_full_restores_say_why(spawn, tmp_path):
    """An image the fast path does not take (a memfd mapped private): the template says
    why, copies are full restores, and they work."""
    t0 = spawn([sys.executable, "-c", "import mmap, os, time\nfd = os.memfd_create('m')\n"
                "os.ftruncate(fd, 4096)\nm = mmap.mmap(fd, 4096, flags=mmap.MAP_PRIVATE)\nm[:5] = b'hello'\n"
                "print('READY', flush=True)\ntime.sleep(600)"])
    t0.wait_for(r"^READY")
    pyckpt.dump(t0.pid, tmp_path / "img", kill=True, progress=False)
    t0.reap()
    with pyckpt.template(tmp_path / "img", fds={1: os.devnull}) as t:
        assert not t.fast and "is memfd" in t.reason and "full restores" in repr(t)
        p = t.copy()
        assert p.status() != psutil.STATUS_ZOMBIE and t.last_copy is None


def test_template_and_copies_die_with_their_owner(spawn, tmp_path):
    """SIGKILL of the process that made the template: the template, the copies and their
    inits die too."""
    img, _ = make_image(spawn, tmp_path)
    owner = spawn([sys.executable, "-c", f"""
import os, time, pyckpt
t = pyckpt.template({str(img)!r}, fds={{1: os.devnull, 2: os.devnull}})
assert t.fast, t.reason
copies = [t.copy() for _ in range(2)]
print("PIDS", t.pid, *[p.pid for p in copies], *[t.init_of(p) for p in copies], flush=True)
time.sleep(600)
"""], name="owner", env=dict(os.environ))
    pids = [int(p) for p in owner.wait_for(r"^PIDS (.*)", timeout=60).group(1).split()]
    assert len(pids) == 5 and all(psutil.pid_exists(p) for p in pids)
    os.kill(owner.pid, signal.SIGKILL)
    owner.reap()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [p for p in pids if _alive(p)]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_copy_dumps_and_restores_like_the_original(spawn, tmp_path):
    """A fast copy is an ordinary process: dumped (changed state) and restored in a
    namespace of its own, it has its state, as it had it."""
    img, pid = make_image(spawn, tmp_path)
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        c = Copy(t)
        c.change()
        r, w = os.pipe()
        pyckpt.dump(c.pid, tmp_path / "of-copy", progress=False)
        try:
            again = pyckpt.restore(tmp_path / "of-copy", new_pidns=True, fds={1: w, 2: w}, progress=False)
        finally:
            os.close(w)
        spawn.track(again.ppid())
        back = Copy.__new__(Copy)
        back.pid, back.out, back.buffer = again.pid, r, b""
        state = back.state()
        # (not its PID: a dump records the PIDs pyckpt sees, here the copy's outer one)
        assert (state["marker"], state["offset"], state["pipe"], state["memory"]) == \
            ("1", "116", "3", "changed"), state
        assert c.state()["marker"] == "1"  # the copy runs on as it was
        os.close(r)


# the steps of a copy (fastcopy.FastTemplate.copy and _make mark the end of each); "finish"
# comes after the copy is complete and released
COPY_STEPS = ["setup", "prepare", "clone init", "clone root", "init", "take fds", "files", "threads",
              "deferred", "registers", "release"]
TREE_STEPS = COPY_STEPS[:6] + ["processes below the root"] + COPY_STEPS[6:]


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _own_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("tree", [False, True], ids=["one", "tree"])
def test_a_fault_at_each_step_of_a_copy_leaves_nothing(spawn, tmp_path, monkeypatch, tree):
    """A copy failing at the end of each of its steps (threads, a timer, a file, a pipe, an
    epoll set; with children for a tree) raises the restore's typed error, leaves no
    process of it (init, root, children) and no fd in pyckpt, and the template stopped
    as it was: the next copy is pristine."""
    from pyckpt import fastcopy

    img, pid = make_image(spawn, tmp_path, "--threads", "2", *(["--children", "2"] if tree else []))
    real_mark = fastcopy._Phases.mark
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        before, fds = _descendants(), _own_fds()
        for step in TREE_STEPS if tree else COPY_STEPS:
            def mark(self, name, step=step):
                real_mark(self, name)
                if name == step:
                    raise OSError(5, f"injected failure after {name}")

            monkeypatch.setattr(fastcopy._Phases, "mark", mark)
            with pytest.raises((pyckpt.RestoreError, OSError), match="injected failure") as info:
                Copy(t)
            monkeypatch.undo()
            assert isinstance(info.value, pyckpt.PyckptError) or step in ("setup", "prepare"), (step, info.value)
            assert _descendants() == before, step
            assert _own_fds() == fds, step
            assert psutil.Process(t.pid).status() == psutil.STATUS_TRACING_STOP, step
        c = Copy(t)
        state = c.state()
        assert pristine(state, pid)
        if tree:
            assert len(psutil.Process(c.pid).children()) == 2
        c.close()
        assert _own_fds() == fds  # (each good copy left two /proc/PID/mem fds open in pyckpt)


OWNER = """
import os, signal, sys, psutil, pyckpt
from pyckpt import fastcopy
img, step = sys.argv[1], sys.argv[2]
t = pyckpt.template(img, fds={1: os.devnull, 2: os.devnull})
assert t.fast, t.reason
real = fastcopy._Phases.mark

def mark(self, name):
    real(self, name)
    if name == step:  # everything made so far, then the owner dies
        pids = {p.pid for p in psutil.Process().children(recursive=True)}
        tids = {int(x) for p in pids for x in os.listdir(f"/proc/{p}/task")}
        print("PIDS", *sorted(pids | tids), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

fastcopy._Phases.mark = mark
t.copy()
print("NOT KILLED", flush=True)
"""
OWNER_OF_TEMPLATE = """
import contextlib, os, signal, sys, psutil, pyckpt
from pyckpt import restorer
img, stage = sys.argv[1], sys.argv[2]
real = restorer._timed

@contextlib.contextmanager
def timed(stats, s):
    with real(stats, s):
        yield
    if s.name == stage:  # everything made so far, then the owner dies
        pids = {p.pid for p in psutil.Process().children(recursive=True)}
        print("PIDS", *sorted(pids), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

restorer._timed = timed
pyckpt.template(img, fds={1: os.devnull, 2: os.devnull})
print("NOT KILLED", flush=True)
"""
# the restore's stages a template runs (FastTemplate._fill_template)
TEMPLATE_STAGES = ["CLEAR", "LAYOUT", "PAGES", "TASK", "MM", "SIGNALS"]


@pytest.mark.parametrize("step", TREE_STEPS)
def test_owner_killed_at_each_step_of_a_copy_leaves_nothing_running(spawn, tmp_path, step):
    """The process making a copy SIGKILLed at the end of each step (a tree with threads):
    the template, the copy's init, root, children and threads all end."""
    img, _ = make_image(spawn, tmp_path, "--threads", "2", "--children", "2")
    owner = spawn([sys.executable, "-c", OWNER, str(img), step], name="owner", env=dict(os.environ))
    pids = [int(p) for p in owner.wait_for(r"^PIDS (.*)", timeout=60).group(1).split()]
    owner.reap()
    assert len(pids) >= {"setup": 1, "prepare": 1, "clone init": 2}.get(step, 3), pids  # (the template first)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [p for p in pids if _alive(p)]
    for p in pids:  # orphans come to this test process (a subreaper): reap them
        with contextlib.suppress(ChildProcessError):
            os.waitpid(p, os.WNOHANG)


def test_an_option_the_fast_path_refuses_given_for_one_copy(spawn, tmp_path):
    """copy(tcp_established=True) from a fast template: that copy is a full restore (the
    fast path does not take the option, as for a template made with it), saying why; the
    next copy without it is fast again."""
    img, pid = make_image(spawn, tmp_path)
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        c = Copy(t, tcp_established=True)
        assert t.copy_reason and "tcp_established" in t.copy_reason, t.copy_reason
        assert pristine(c.state(), pid)
        d = Copy(t)
        assert t.copy_reason is None and t.fast and pristine(d.state(), pid)


def _report(pid: int, r: int) -> dict:
    import json

    os.kill(pid, signal.SIGUSR1)
    buf, deadline = b"", time.monotonic() + 15
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        assert left > 0 and select.select([r], [], [], left)[0], f"no report from {pid}: {buf[-300:]!r}"
        chunk = os.read(r, 1 << 20)
        assert chunk, f"{pid} closed its output: {buf[-300:]!r}"
        buf += chunk
    line = buf.split(b"\n")[0].decode()
    assert line.startswith("REPORT "), line
    report = json.loads(line[len("REPORT "):])
    # each restore has namespaces of its own: whether each is the caller's is what must agree
    report["ns"] = {n: v == os.readlink(f"/proc/self/ns/{n}") for n, v in report["ns"].items()}
    report["timers"] = report["timers"].replace(f"pid.{pid}", "pid.ROOT")  # (PID as /proc shows it)
    # the fd table's size: a fast copy's grew to 1024 slots in the template (pyckpt's pidfd
    # at fd 1023); not something a process sees but in /proc
    report["status"].pop("FDSize")
    return report


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    return [] if a == b else [f"{path}: full restore {a!r}, fast copy {b!r}"]


def test_a_fast_copy_is_what_a_full_restore_makes(spawn, tmp_path):
    """tests/targets/copy_report.py (dispositions, an alternate signal stack, interval and
    POSIX timers, a pending signal, limits, umask, personality, nice, a worker thread)
    restored twice from one image, by restore(new_pidns=True) and as a fast copy: what
    each sees of itself (ids, sigaction of every signal, sigaltstack, robust list, rseq,
    fs base of each thread, timers, prctl values, masks) and its /proc files (status, stat
    with the mm's fields, limits, maps with VmFlags, timers, fdinfo, namespaces) are the same."""
    work = tmp_path / "work"
    work.mkdir()
    t0 = spawn([sys.executable, str(Path(__file__).parent / "targets" / "copy_report.py"), str(work)])
    t0.wait_for(r"^READY")
    pyckpt.dump(t0.pid, tmp_path / "img", kill=True, progress=False)
    t0.reap()
    r, w = os.pipe()
    try:
        full = pyckpt.restore(tmp_path / "img", new_pidns=True, fds={1: w, 2: w}, progress=False)
    finally:
        os.close(w)
    spawn.track(full.ppid())
    with pyckpt.template(tmp_path / "img") as t:
        assert t.fast, t.reason
        c = Copy(t)
        a, b = _report(full.pid, r), _report(c.pid, c.out)
        assert a["ids"][:2] == [t0.pid, 1] and a["main"]["rseq"] and a["worker"]["tid"] != a["ids"][0]
        assert a["itimers"][0][0] > 0 and a["pending"] and a["main"]["sigaltstack"][3]
        assert "0" not in a["stat_mm"], a["stat_mm"]
        assert not _diff(a, b), "\n".join(_diff(a, b))
        c.close()
    os.close(r)


@pytest.mark.parametrize("stage", TEMPLATE_STAGES)
def test_owner_killed_while_making_the_template_leaves_nothing_running(spawn, tmp_path, stage):
    """The process making a template SIGKILLed at the end of each stage: the template ends."""
    img, _ = make_image(spawn, tmp_path)
    owner = spawn([sys.executable, "-c", OWNER_OF_TEMPLATE, str(img), stage], name="owner", env=dict(os.environ))
    pids = [int(p) for p in owner.wait_for(r"^PIDS (.*)", timeout=60).group(1).split()]
    owner.reap()
    assert pids
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [p for p in pids if _alive(p)]
    for p in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(p, os.WNOHANG)


@pytest.mark.parametrize("stage", TEMPLATE_STAGES)
def test_a_fault_while_making_the_template_leaves_nothing(spawn, tmp_path, monkeypatch, stage):
    """A template failing at the end of each stage leaves no process and no fd; the
    Template says why and makes full restores, which work."""
    from pyckpt import restorer

    img, pid = make_image(spawn, tmp_path)
    real = restorer._timed

    @contextlib.contextmanager
    def timed(stats, s):
        with real(stats, s):
            yield
        if s.name == stage:
            raise OSError(5, f"injected failure after {s.name}")

    before, fds = _descendants(), _own_fds()
    monkeypatch.setattr(restorer, "_timed", timed)
    t = pyckpt.template(img)
    monkeypatch.undo()
    try:
        assert not t.fast and "injected failure" in t.reason, t.reason
        assert _descendants() == before and _own_fds() == fds
        c = Copy(t)
        assert pristine(c.state(), pid)
    finally:
        t.close()


def _same_description(pid1: int, fd1: int, pid2: int, fd2: int) -> bool:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    r = libc.syscall(312, pid1, pid2, 0, fd1, fd2)  # kcmp(KCMP_FILE)
    assert r >= 0, (pid1, fd1, pid2, fd2, os.strerror(ctypes.get_errno()))
    return r == 0


def test_copies_share_no_file_description(spawn, tmp_path):
    """tests/targets/many_fds.py (a file, a pipe, a socketpair, an eventfd, a signalfd, a
    timerfd, inotify, epoll, a memfd, a pidfd, TCP, UDP and unix sockets, /dev/null):
    two fast copies have no file description in common (kcmp), a copy none with pyckpt,
    and the template holds no fd but pyckpt's pidfd."""
    work = tmp_path / "work"
    work.mkdir()
    t0 = spawn([sys.executable, str(Path(__file__).parent / "targets" / "many_fds.py"), str(work)])
    fds = [int(x) for x in t0.wait_for(r"^READY (.*)").group(1).split()]
    pyckpt.dump(t0.pid, tmp_path / "img", kill=True, progress=False)
    t0.reap()
    with pyckpt.template(tmp_path / "img", new_netns=True) as t:
        assert t.fast, t.reason
        a, b = Copy(t), Copy(t)
        held = sorted(int(n) for n in os.listdir(f"/proc/{a.pid}/fd"))
        assert set(fds) | {1, 2} <= set(held), held
        assert len(os.listdir(f"/proc/{t.pid}/fd")) == 1  # pyckpt's pidfd
        assert _same_description(a.pid, 1, a.pid, 2)  # (one pipe end given as both: kcmp sees it)
        for fa in held:
            for fb in held:
                assert not _same_description(a.pid, fa, b.pid, fb), (fa, fb)
            for own in os.listdir("/proc/self/fd"):
                if os.path.exists(f"/proc/self/fd/{own}"):
                    assert not _same_description(a.pid, fa, os.getpid(), int(own)), (fa, own)
        a.close()
        b.close()


def test_copies_outlive_the_thread_that_made_the_template(spawn, tmp_path):
    """A template and a copy made in a worker thread: once that thread has ended (its
    task gone), the copy runs on, pristine, and is ended by kill() (its init watched
    pyckpt's process, not the thread: a parent-death signal killed it with the thread)."""
    import threading

    img, pid = make_image(spawn, tmp_path)
    made = {}

    def make():
        made["tid"] = threading.get_native_id()
        t = pyckpt.template(img)
        made["t"], made["copy"] = t, Copy(t)

    th = threading.Thread(target=make)
    th.start()
    th.join()
    t, c = made["t"], made["copy"]
    try:
        assert t.fast, t.reason
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/self/task/{made['tid']}") and time.monotonic() < deadline:
            time.sleep(0.01)
        init = t.init_of(c.proc)
        assert _alive(init) and _alive(c.pid)
        assert pristine(c.state(), pid)
        c.close()
        assert not psutil.pid_exists(init)
    finally:
        t.close()


def test_init_ends_when_the_copys_root_exits(spawn, tmp_path):
    """The copy's root killed by itself: its init (pyckpt's child) exits and waits to be
    reaped; kill() reaps it."""
    img, _ = make_image(spawn, tmp_path)
    with pyckpt.template(img) as t:
        c = Copy(t)
        init = t.init_of(c.proc)
        os.kill(c.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(init) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(init)
        c.close()
        assert not psutil.pid_exists(init)


def test_kill_never_signals_a_pid_the_copy_gave_up(spawn, tmp_path, monkeypatch):
    """SIGCHLD ignored by the owner (the kernel reaps its children): a copy whose root
    exited has its init reaped at once, and that PID is free for any process to take;
    kill() of that copy sends no signal by PID (it signals and waits through a pidfd of
    the init, which names that process only).  A live copy is still ended by kill()."""
    img, _ = make_image(spawn, tmp_path)
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        with pyckpt.template(img) as t:
            assert t.fast, t.reason
            a, b = Copy(t), Copy(t)
            gone, live = t.init_of(a.proc), t.init_of(b.proc)
            os.kill(a.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while psutil.pid_exists(gone) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not psutil.pid_exists(gone)  # reaped by the kernel: its PID is anyone's now
            sent = []
            real_kill = os.kill
            monkeypatch.setattr(os, "kill", lambda pid, sig: (sent.append(pid), real_kill(pid, sig))[1])
            a.close()
            b.close()
            monkeypatch.undo()
            assert gone not in sent, sent
            assert not _alive(live) and not _alive(b.pid)
    finally:
        signal.signal(signal.SIGCHLD, old)


def test_a_refused_clone_in_the_copys_init_leaves_nothing(spawn, tmp_path, monkeypatch):
    """The init's clone3 with the image's PID refused by the kernel (a PID above pid_max):
    one typed error naming the PID and why, the init killed and reaped, no fd left; the
    template makes good copies afterwards."""
    img, pid = make_image(spawn, tmp_path)
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        before, fds = _descendants(), _own_fds()
        monkeypatch.setattr(t._fast, "image_pid", 1 << 30)
        with pytest.raises(pyckpt.RestoreError, match=f"clone3 with PID {1 << 30} .*Invalid argument"):
            Copy(t)
        monkeypatch.undo()
        assert _descendants() == before and _own_fds() == fds
        c = Copy(t)
        assert pristine(c.state(), pid)


def test_a_file_mapped_private_and_changed_since_is_refused_per_copy(spawn, tmp_path):
    """A copy's memory is forked from the template, and the pages of a privately mapped
    file not read yet come from the file as it is then: each copy checks the file as a full
    restore does (changed: FileChangedError naming it; allow_changed_files accepts it)."""
    mapfile = tmp_path / "mapped.bin"
    mapfile.write_bytes(b"m" * 3 * 4096)
    img, pid = make_image(spawn, tmp_path, "--mapfile", str(mapfile))
    with pyckpt.template(img) as t:
        assert t.fast, t.reason
        first = Copy(t)
        assert pristine(first.state(), pid)
        with open(mapfile, "ab") as f:
            f.write(b"n" * 4096)
        fds = set(os.listdir("/proc/self/fd"))
        with pytest.raises(pyckpt.FileChangedError, match="mapped.bin"):
            Copy(t)
        assert set(os.listdir("/proc/self/fd")) == fds
        assert pristine(first.state(), pid)  # the running copy is untouched
        accepted = Copy(t, allow_changed_files=["mapped.bin"])
        assert pristine(accepted.state(), pid)
