"""A restore killed with SIGKILL at any moment leaves nothing of the image behind.

Every task a restore makes is traced by pyckpt with PTRACE_O_EXITKILL from the
moment it is made (the first one, a copy of pyckpt, also asks for SIGKILL when
its parent dies before it stops for pyckpt; its descendants and threads inherit
the option), so a pyckpt that dies takes them with it: each half-made task ends
with SIGKILL, not with the SIGTRAP of an injection stop, nor running on from
pyckpt's code or garbage.

Two ways of killing a restore:
- `pyckpt restore` (the command) restoring a tree (tests/targets/tree.py),
  SIGKILLed at a random moment once it has made its first task (the image's
  root, or a new PID namespace's init), within the time a restore takes from
  there to its release;
- a restore that SIGKILLs itself just before its k-th ptrace operation (ptrace
  request or wait, injected call or clone, write into a task), for k spread
  from the first operation (the first task was just made) to the release, and
  right after each child or thread is made and each process's ids are set: the
  tree, the tree in a new PID namespace, and a process of user 65534 with a
  thread and a child.

After each: every PID of the image is gone or a zombie handed to this test (a
subreaper) that died of SIGKILL — with --new-pidns, the namespace's init died of
SIGKILL and no process is left in the namespace.  A kill that came after the
release leaves the whole tree running, complete: it checks itself.  In the end
the image restores and checks itself.

Only processes this test made are signalled (kill_own, _end_tree); /proc is read.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time

import pytest

import pyckpt
from conftest import TARGETS, Target, check, kill_own, reap_dumped
from test_trees import _end_tree, _wait_gone, trees  # noqa: F401 -- trees is a fixture

TRIALS = int(os.environ.get("PYCKPT_KILL_TRIALS", "10"))
SEED = int(os.environ.get("PYCKPT_KILL_SEED", random.randrange(1 << 32)))  # printed: to run again


# --- /proc -----------------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of `pid`, None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _ours(pid: int) -> bool:
    """`pid` is this test process or a descendant of it."""
    for _ in range(64):
        if pid == os.getpid():
            return True
        st = _stat(pid)
        if st is None or st[1] <= 1:
            return False
        pid = st[1]
    return False


def _pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _tracer(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("TracerPid:"))
    except (OSError, StopIteration):
        return None


def _in_ns(ns: str) -> list[int]:
    """Every process whose PID namespace is `ns`."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _pid_ns(int(p)) == ns]


def _describe(status: int | None) -> str:
    if status is None:
        return "gone"
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name + (" (core)" if os.WCOREDUMP(status) else "")
    if os.WIFEXITED(status):
        return f"exit {os.WEXITSTATUS(status)}"
    return f"status {status:#x}"


def _dying(pid: int) -> bool:
    """`pid` has a SIGKILL pending or is exiting (PF_EXITING): it is on its way out."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            flags = int(f.read().rsplit(")", 1)[1].split()[6])
        with open(f"/proc/{pid}/status") as f:
            pending = [int(line.split()[1], 16) for line in f if line.startswith(("SigPnd:", "ShdPnd:"))]
    except (OSError, ValueError, IndexError):
        return True  # gone meanwhile
    return bool(flags & 0x4) or any(p >> (signal.SIGKILL - 1) & 1 for p in pending)


def _settle(pids: list[int], timeout: float = 15.0, grace: float = 1.0
            ) -> tuple[dict[int, int | None], list[int]]:
    """Wait until every PID in `pids` that is ours is gone, or our zombie (reaped here),
    or alive and not dying for `grace` s (a cascade of parent-death signals has had
    time to reach it).  Returns the wait status of each that ended (None: gone, or
    never made; a PID that is not this test's descendant is not the image's) and the
    PIDs still alive.  One still dying at `timeout` counts as alive."""
    ended: dict[int, int | None] = {}
    left = list(pids)
    deadline = time.monotonic() + timeout
    calm_since = None
    while True:
        for pid in list(left):
            st = _stat(pid)
            if st is None or not _ours(pid):
                ended[pid] = None
                left.remove(pid)
            elif st[0] in "ZX" and st[1] == os.getpid():
                try:
                    ended[pid] = os.waitpid(pid, 0)[1]
                except ChildProcessError:
                    ended[pid] = None
                left.remove(pid)
        if not left or time.monotonic() > deadline:
            return ended, left
        if any(_dying(pid) or (_stat(pid) or "Z")[0] in "ZX" for pid in left):
            calm_since = None
        elif calm_since is None:
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since > grace:
            return ended, left
        time.sleep(0.005)


# --- the image and its restores --------------------------------------------------------------------

@pytest.fixture
def tree_image(trees, tmp_path):  # noqa: F811 -- the fixture imported above
    """(image path, the tree's log, [root, A, B], every TID of the image)."""
    log = tmp_path / "tree.log"
    log.touch()
    t, a, b = trees(log)
    check(t)
    img = tmp_path / "img"
    image = pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    _wait_gone(a, b)
    tids = sorted({tid for p in image.summary()["processes"] for tid in [p["pid"], *p["threads"]]})
    return img, log, [t.pid, a, b], tids


def _restore_cmd(img, new_pidns: bool) -> list[str]:
    return [sys.executable, "-m", "pyckpt", "restore", "--no-progress", "--allow-changed-files",
            *(["--new-pidns"] if new_pidns else []), str(img)]


def _popen(argv, tmp_path, name: str) -> subprocess.Popen:
    with open(tmp_path / f"{name}.out", "wb") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _first_task(p: subprocess.Popen, root: int, new_pidns: bool, timeout: float = 60.0) -> int | None:
    """The first task the restoring process `p` makes: the image's root (PID `root`),
    or with `new_pidns` the new namespace's init (a child in another PID namespace;
    pyckpt may have other children, such as ldconfig run by ctypes).  None if `p`
    ended without one."""
    own = _pid_ns(os.getpid())
    deadline = time.monotonic() + timeout
    while True:
        for kid in _children(p.pid):
            if kid == root if not new_pidns else _pid_ns(kid) not in (own, None):
                return kid
        if p.poll() is not None:
            return None
        assert time.monotonic() < deadline, "the restore made no task"
        time.sleep(0.0005)


class Outcomes:
    """What the trials found: how each ended, and how each task of the image ended."""

    def __init__(self):
        self.trials = collections.Counter()  # killed / completed / released
        self.tasks = collections.Counter()  # SIGKILL / gone / ...
        self.bad: list[str] = []  # what went wrong

    def __str__(self):
        return f"trials {dict(self.trials)}, tasks {dict(self.tasks)}" + (
            f"; wrong: {self.bad}" if self.bad else "")


def _killed(status: int | None) -> bool:
    return status is None or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL)


def _after_kill(rc: int, first: int, pids: list[int], log, new_pidns: bool, ns: str | None,
                out: Outcomes) -> None:
    """Judge what a killed restore left (see the module's docstring); end and reap it all.

    `first` is the restore's first task: the image's root, or the new namespace's
    init (which ends the namespace with everything in it)."""
    watch = [first] if new_pidns else pids
    ended, alive = _settle(watch)
    for pid, status in ended.items():
        out.tasks[_describe(status)] += 1
        if not _killed(status):
            out.bad.append(f"{'init ' if new_pidns else ''}{pid} ended with {_describe(status)}")
    if alive:
        # Only a complete, released tree may run after the restore ended: all of it,
        # untraced, checking itself.
        root = _children(first) if new_pidns else [first]
        complete = alive == watch and len(root) == 1
        if complete and not new_pidns:
            for pid in pids:
                with open(f"/proc/{pid}/status") as f:
                    complete = complete and "TracerPid:\t0\n" in f.read()
        if complete:
            try:
                check(Target(root[0], log))
            except AssertionError as e:
                complete = False
                out.bad.append(f"a tree left running by a restore ended with {rc} fails its check: {e}")
        if complete:
            out.trials["completed" if rc == 0 else "released"] += 1
        else:
            out.bad.append(f"after a restore that ended with {rc}, {alive} still run: "
                           f"{ {p: _stat(p) for p in alive} }")
        if new_pidns:
            kill_own(first)
        else:
            _end_tree(pids)
        ended, alive = _settle(watch)
        assert not alive, f"{alive} outlived the test's kill"
    else:
        out.trials["killed" if rc == -signal.SIGKILL else f"ended with {rc}"] += 1
        if rc != -signal.SIGKILL:
            out.bad.append(f"the restore ended with {rc} and left no tree")
    deadline = time.monotonic() + 15
    while ns is not None and (left := _in_ns(ns)):
        assert time.monotonic() < deadline, f"processes {left} outlived their namespace's init"
        time.sleep(0.005)


def _restore_and_check(spawn, img, log, pids) -> None:
    """The image, after all that, restores and the tree checks itself."""
    p = pyckpt.restore(img, allow_changed_files=True)
    spawn.track(p.pid)
    assert p.pid == pids[0]
    check(Target(p.pid, log))


# --- SIGKILL of `pyckpt restore` at a random moment ------------------------------------------------

@pytest.mark.parametrize("new_pidns", [False, True], ids=["plain", "new-pidns"])
def test_restore_killed_at_random_moments(tree_image, spawn, tmp_path, new_pidns):
    img, log, pids, tids = tree_image
    rng = random.Random(SEED)

    # How long a restore takes from its first task to its release (the first task,
    # released last, is no longer traced): the median of three full restores
    windows = []
    for i in range(3):
        p = _popen(_restore_cmd(img, new_pidns), tmp_path, f"measure{i}")
        first = _first_task(p, pids[0], new_pidns)
        t0 = time.monotonic()
        assert first is not None, (tmp_path / f"measure{i}.out").read_text()
        traced = False  # (it asks to be traced just after it is made)
        while not traced or _tracer(first) not in (0, None):
            traced = traced or bool(_tracer(first))
            assert time.monotonic() < t0 + 60 and (traced or p.poll() is None), \
                (tmp_path / f"measure{i}.out").read_text()
            time.sleep(0.0005)
        windows.append(time.monotonic() - t0)
        rc = p.wait(timeout=60)
        assert rc == 0, (tmp_path / f"measure{i}.out").read_text()
        measure = Outcomes()
        _after_kill(rc, first, pids, log, new_pidns, _pid_ns(first) if new_pidns else None, measure)
        assert measure.trials == {"completed": 1}
    window = sorted(windows)[1]

    out = Outcomes()
    moments = []
    for i in range(TRIALS):
        p = _popen(_restore_cmd(img, new_pidns), tmp_path, f"trial{i}")
        first = _first_task(p, pids[0], new_pidns)
        assert first is not None, (tmp_path / f"trial{i}.out").read_text()
        ns = _pid_ns(first) if new_pidns else None
        delay = rng.uniform(0, window * 1.1)  # some just after the release
        time.sleep(delay)  # the moment of the kill, chosen at random
        os.kill(p.pid, signal.SIGKILL)
        rc = p.wait(timeout=60)
        moments.append(round(delay / window, 2))
        _after_kill(rc, first, pids, log, new_pidns, ns, out)
        left = [tid for tid in tids if _stat(tid) is not None and _ours(tid)]
        assert new_pidns or not left, f"threads {left} of the image outlived the killed restore"
    print(f"\n{'new-pidns' if new_pidns else 'plain'} (PYCKPT_KILL_SEED={SEED}): {TRIALS} kills at "
          f"{moments} of {window:.3f}s: {out}")
    assert not out.bad, (f"a killed restore left a task running or ending otherwise than by SIGKILL "
                         f"(PYCKPT_KILL_SEED={SEED}): {out}")
    assert out.trials["killed"] >= TRIALS // 3, f"too few kills fell in the restore: {out}"
    _restore_and_check(spawn, img, log, pids)


# --- a restore that kills itself just before its k-th ptrace operation -----------------------------

KILLER = r"""
import os, signal, sys, time
import pyckpt
from pyckpt import ptrace_ops, restorer, seize
from pyckpt.inject import Injector
from pyckpt.kinds import creds

img, k, new_pidns = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "new-pidns"
print("OWN", os.readlink("/proc/self/ns/pid"), flush=True)  # the namespace the tasks are told apart from
ops, tasks, marks = 0, set(), []

def counted(f, name):
    def op(*args, **kw):
        global ops
        if name == "wait" and args[0] not in tasks:  # a task just made (its first stop)
            tasks.add(args[0])
            print("TASK", args[0], os.readlink(f"/proc/{args[0]}/ns/pid"), flush=True)
        ops += 1
        if ops == k:
            os.kill(os.getpid(), signal.SIGKILL)
        r = f(*args, **kw)
        if name == "call_clone":
            marks.append(f"clone:{ops}")  # a child or thread was just made
        return r
    return op

for name in ("request", "wait", "get_regs", "set_regs", "get_sigmask", "set_sigmask"):
    setattr(ptrace_ops, name, counted(getattr(ptrace_ops, name), name))
for name in ("call", "call_clone", "write"):
    setattr(Injector, name, counted(getattr(Injector, name), name))

def marking(f, mark):
    def step(*args):
        r = f(*args)
        marks.append(f"{mark}:{ops}")
        return r
    return step

creds.restore = marking(creds.restore, "creds")  # a process's ids were just set
real_release = restorer.release
released = []  # (start, end) of each process's release
def release(*args):
    marks.append(f"release:{ops}")  # the next operation is its first detach
    t = time.perf_counter()
    r = real_release(*args)
    released.append((t, time.perf_counter()))
    return r
restorer.release = seize.release = release  # (a tree's goes through seize.release_all)

pyckpt.restore(img, new_pidns=new_pidns, allow_changed_files=True)
print("OPS", ops, *marks, flush=True)
print(f"RELEASE {(released[-1][1] - released[0][0]) * 1e6:.0f} us", flush=True)
"""


def _tasks(text: str, pids: list[int], tids: list[int], new_pidns: bool
           ) -> tuple[int | None, str | None, list[int]]:
    """From the killer's output: the restore's first task of the image (its root, or a
    new namespace's init), that namespace, and the other tasks it made in this test's
    namespace (a new namespace's launcher) that are not the image's."""
    # The killer's own namespace, as it printed it (not this process's: a reading that
    # failed here would make every task look like a new namespace's init).
    own = next((line.split()[1] for line in text.splitlines() if line.startswith("OWN ")), None)
    assert own is not None, f"the killer did not say its PID namespace: {text[-500:]!r}"
    made = [(int(line.split()[1]), line.split()[2]) for line in text.splitlines() if line.startswith("TASK ")]
    inits = [(pid, ns) for pid, ns in made if ns != own]
    if new_pidns:
        first, ns = inits[0] if inits else (None, None)
    else:
        first, ns = (pids[0], None) if any(pid == pids[0] for pid, _ in made) else (None, None)
    return first, ns, [pid for pid, ns in made if ns == own and pid not in tids]


def _run_killer(img, k: int, new_pidns: bool, tmp_path) -> tuple[int, str]:
    out = tmp_path / f"killer-{k}.out"
    with open(out, "wb") as f:
        p = subprocess.run([sys.executable, "-c", KILLER, str(img), str(k),
                            "new-pidns" if new_pidns else "plain"],
                           stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                           start_new_session=True, timeout=120)
    return p.returncode, out.read_text()


USER_TREE = r"""
import os, threading, time, selfcheck
selfcheck.listen()
parent = os.getpid()
child = os.fork()
if child == 0:  # runs until its parent changes
    while os.getppid() == parent:
        time.sleep(0.02)
    os._exit(0)
threading.Thread(target=lambda: [time.sleep(0.02) for _ in iter(int, 1)], daemon=True).start()
print("READY", child, flush=True)
def check():
    ok = os.getresuid() == (65534,) * 3 and os.waitpid(child, os.WNOHANG) == (0, 0)
    return [] if ok else [f"ids {os.getresuid()}, child {child}"]
selfcheck.serve(check)
"""


@pytest.fixture
def user_image(trees, spawn, python_exe, tmp_path):  # noqa: F811
    """A process of user 65534 with a thread and a child, dumped and killed: the restore
    changes ids (which clears a parent-death signal) in both.  Its output goes to a
    file opened O_APPEND (each restored copy adds its lines)."""
    exe = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else python_exe
    log = tmp_path / "user.log"
    with open(log, "ab") as out:
        p = subprocess.Popen([exe, "-c", USER_TREE], stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True, user=65534, group=65534,
                             cwd="/", env=dict(os.environ, PYTHONPATH=str(TARGETS)))
    spawn.track(p.pid)
    t = Target(p.pid, log, p)
    child = int(t.wait_for(r"^READY (\d+)$").group(1))
    trees.adopt(t.pid, child)
    check(t)
    img = tmp_path / "img"
    image = pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    _wait_gone(child)
    tids = sorted({tid for p in image.summary()["processes"] for tid in [p["pid"], *p["threads"]]})
    return img, log, [t.pid, child], tids


@pytest.mark.parametrize("image,new_pidns", [("tree_image", False), ("tree_image", True),
                                             ("user_image", False)],
                         ids=["tree", "tree-new-pidns", "user-65534"])
def test_restore_killed_before_each_kind_of_step(request, spawn, tmp_path, image, new_pidns):
    """SIGKILL just before the k-th ptrace operation of the restore, for k spread over
    all of it: before the first clone (k=1 here is the first wait: the new task was
    just made), right after each child or thread is made, right after each process's
    ids are set, through every stage of every process, to just before the last
    detach, and before each detach of the release.  With a new PID namespace the
    others die with the init, the last let go; without one, the release's guard
    kills the processes already let go (seize.release_all)."""
    img, log, pids, tids = request.getfixturevalue(image)
    rc, text = _run_killer(img, 0, new_pidns, tmp_path)  # count the operations
    assert rc == 0, text
    total, *marks = text.split("OPS ")[1].split("\n")[0].split()
    release_took = text.split("RELEASE ")[1].split("\n")[0]
    total = int(total)
    marks = [(m.split(":")[0], int(m.split(":")[1])) for m in marks]
    release = min(n for m, n in marks if m == "release") + 1  # its first detach
    assert {m for m, _ in marks} == {"clone", "creds", "release"}, marks
    out = Outcomes()
    _after_kill(rc, _tasks(text, pids, tids, new_pidns)[0], pids, log, new_pidns, None, out)
    assert out.trials == {"completed": 1}, out

    last = total
    rng = random.Random(SEED)
    strata = 12
    spread = {rng.randrange(7 + (last - 7) * i // strata, 7 + (last - 7) * (i + 1) // strata)
              for i in range(strata)}
    # every detach of the release (a few), and the operations before it
    ks = sorted(set(range(1, 7)) | spread | {n + 1 for m, n in marks} | set(range(release, last + 1)))
    out = Outcomes()
    for k in ks:
        rc, text = _run_killer(img, k, new_pidns, tmp_path)
        assert rc == -signal.SIGKILL, f"k={k}: the restore ended with {rc}: {text}"
        first, ns, others = _tasks(text, pids, tids, new_pidns)
        # Tasks of the restore that are not the image's (a new namespace's launcher)
        ended, alive = _settle(others)
        assert not alive, f"k={k}: {alive} outlived the killed restore"
        for pid, status in ended.items():
            out.tasks[_describe(status)] += 1
            if not _killed(status):
                out.bad.append(f"k={k}: {pid} ended with {_describe(status)}")
        if first is None:  # killed before it made the image's first task (or the init)
            out.trials["killed"] += 1
            continue
        _after_kill(rc, first, pids, log, new_pidns, ns if new_pidns else None, out)
        left = [tid for tid in tids if _stat(tid) is not None and _ours(tid)]
        assert new_pidns or not left, f"k={k}: threads {left} of the image outlived the killed restore"
    print(f"\n{request.node.callspec.id} (PYCKPT_KILL_SEED={SEED}): killed before operation {ks} of "
          f"{total} (marks {marks}; the release took {release_took}): {out}")
    assert not out.bad, (f"a killed restore left a task running or ending otherwise than by SIGKILL "
                         f"(PYCKPT_KILL_SEED={SEED}): {out}")
    assert out.trials == {"killed": len(ks)}, out
    _restore_and_check(spawn, img, log, pids)
