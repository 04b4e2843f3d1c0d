"""Restore orchestration: validate -> prepare -> create -> stages -> registers -> release.

Nothing creates a process before the image has been read in full, every
checksum verified, the kernel's vDSO and the PID checked and every file the
task needs opened and compared with the dump.  The page store's checksums of
an image of CHECK_BESIDE_MIN bytes of pages or more are the exception: every
run's bounds are checked first, its digests in a thread while the new task
reads its pages, and that check must pass before any process runs (a bad
digest kills and reaps what was made, as any failure does).
The new task is made by clone3(set_tid) and born small: it execs a tiny
program of pyckpt's (a memfd; ck_clone_exec) and stops before running it
(else, where that cannot be used, it is a stopped copy of pyckpt:
ck_clone_stopped).  It inherits the files pyckpt opened for it, so nothing
is opened by path from inside it.  Its address space is then cleared and
rebuilt by injected syscalls, in the order of `Stage`.  If anything fails, or pyckpt is interrupted, the task is
killed and reaped: no half-made process is left behind.  If pyckpt itself is
killed (SIGKILL, OOM), the kernel kills every task made so far: each is traced
with PTRACE_O_EXITKILL until its release (ck_clone_stopped).
"""

from __future__ import annotations

import contextlib
import os
import struct
import time

from ._dataclass import dataclass, field

from . import limits, netns, privileges, proc, trust
from . import ptrace_ops as pt
from ._native._ck import ffi, lib
from .arch import PAGE
from .errors import (ImageError, PidInUseError, PtraceError, PyckptError, RemoteCallError, ResourceError,
                     RestoreError, boundary)
from .image import ImageReader
from .inject import Injector, find_syscall_insn, nr
from .kinds import cpu, creds, files, load_for, memory, mm, signals, stored_runs, task, thread
from .kinds.context import AFTER_RELEASE, WARNINGS, RestoreContext, RestoreOptions, hooks_at, run_undo
from .kinds.order import ordered
from .problems import Fix, RestoreProblem, needs
from .progress import Progress
from .seize import kill_and_reap, pinned_to_cpu, release, release_all
from .signals import checkpoint, commit, deferred_signals

TASK_END = 0x7FFFFFFFF000  # top of user space with 4-level paging
MAP_FIXED_NOREPLACE = 0x100000
CLONE_NEWPID = 0x20000000
CLONE_NEWIPC = 0x08000000
CLONE_PARENT = 0x8000
SIGCHLD = 17
SCRATCH_CODE = b"\x0f\x05\xcc"  # syscall; int3
SCRATCH_DATA = 64  # injected calls' data lives after the code, in the same page
SCRATCH_SIZE = 16 * PAGE  # the first page as above; the rest for batches of calls (inject.Batch)


class _Step(int):
    """A step of `Stage`: its number, with its name (`Stage.PAGES.name == "PAGES"`)."""

    def __new__(cls, number: int, name: str):
        step = super().__new__(cls, number)
        step.name = name
        return step

    def __repr__(self) -> str:
        return f"Stage.{self.name}"


class _Steps(type):
    """What `enum.IntEnum` gave `Stage` (named ints, iterated in order), without the
    enum module: ~3 ms of a restore command's start-up."""

    def __new__(mcs, name, bases, namespace):
        for key, value in list(namespace.items()):
            if not key.startswith("_") and type(value) is int:
                namespace[key] = _Step(value, key)
        return super().__new__(mcs, name, bases, namespace)

    def __iter__(cls):
        return iter(sorted(v for v in vars(cls).values() if isinstance(v, _Step)))


class Stage(metaclass=_Steps):
    """Restore steps in order; each comment says why it sits where it does."""

    VALIDATE = 1  # read and check the whole image: nothing exists yet
    PREPARE = 2  # open every file in pyckpt, compared with the dump
    CREATE = 3  # clone3(set_tid): a stopped task with the dumped PID, born of pyckpt's stub (or a
    #             copy of pyckpt), which pyckpt's death kills (PTRACE_O_EXITKILL, inherited by
    #             every task made from it)
    CLEAR = 4  # drop inherited rseq first (else unmapping kills it), scratch page, unmap rest
    LAYOUT = 5  # vDSO block back, then every VMA at its address
    PAGES = 6  # the task preads its pages from the image, then final protections
    FILES = 7  # fds dup3'd to their numbers (uses passed fds)
    TASK = 8  # cwd, umask, personality, session
    MM = 9  # PR_SET_MM_MAP: exe link needs every old mapping gone (done in CLEAR)
    CLOSE_PASSED = 10  # the passed copies are no longer needed
    SIGNALS = 11  # dispositions and sigaltstack
    THREADS = 12  # clone3 every other thread with its TID, traced from birth
    THREAD = 13  # per thread: comm, robust list, clear_child_tid, rseq (needs memory), altstack;
    #              then pending signals, queued while every thread blocks all signals
    DEFERRED = 14  # work queued by kinds that needs everything else in place
    OUTSIDE = 15  # rlimits, scheduling, affinity, set from pyckpt while the task is still root
    CREDS = 16  # user/group ids: after every step that needs root's privileges; then the
    #             parent-death signal, which a change of ids clears (the root's: none)
    LEAVE_SCRATCH = 17  # inject from the task's own vDSO, unmap the scratch page
    REGISTERS = 18  # per thread: xstate, blocked mask, registers (with restart fix-up) last
    RELEASE = 19  # detach every thread: the process runs


@dataclass
class RestoreStats:
    total: float = 0.0
    injected_calls: int = 0
    pages_bytes: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what was done otherwise than asked, in words


def restore(path, *, progress: Progress | None = None, stats: RestoreStats | None = None,
            options: RestoreOptions | None = None, process: bool = True) -> psutil.Process:
    """Re-create the process (tree) of the image at `path` (see pyckpt.restore).
    With `process=False` (the command, which prints only the PID) it returns an
    object with `pid` and `restore_warnings`, and psutil is not loaded."""
    progress = progress or Progress()
    options = options or RestoreOptions()
    load_for(options)  # (reading the image loads the kinds it uses)
    stats = stats if stats is not None else RestoreStats()
    # refused up front: nothing read, nothing created
    privileges.require("restore", path=path, new_namespaces=options.new_pidns or options.new_netns)
    t0 = time.perf_counter()
    with boundary(f"restore from {path}", RestoreError, "no process was left behind"), limits.fd_room(), \
            limits.translated(f"restoring from {path} (no process was left behind)"), \
            deferred_signals(), (netns.fresh() if options.new_netns else contextlib.nullcontext()):
        rctxs = _validate(path, progress, stats, options, beside=not options.lazy)
        try:
            problems = _prepare(rctxs, stats)
            if problems:  # the first; check() lists them all
                raise problems[0].error
            with pinned_to_cpu(_this_cpu()), _fd_room():
                _create_and_fill(rctxs, stats)
            for step in ordered(rctxs[0].shared.get(AFTER_RELEASE, ())):  # kinds' work once it runs
                try:
                    step.run()
                except Exception as e:  # the processes run: a failure here undoes nothing
                    stats.warnings.append(f"after the release ({step.name}): {type(e).__name__}: {e}")
            stats.warnings += rctxs[0].shared.get(WARNINGS, [])
        except BaseException as e:
            run_undo(rctxs[0].shared)  # what kinds made outside the processes (socket files...)
            check = rctxs[0].shared.pop(PAGE_CHECK, None)  # (a failure before its wait)
            if check is not None and isinstance(e, Exception) and not isinstance(e, ImageError) \
                    and check.size <= WAIT_CHECK_MAX:
                # A damaged page is said before what failed after it was read (a file
                # changed...), as when the pages are checked before anything is made;
                # not worth a long wait that no signal cuts short (a big image's check).
                try:
                    check.wait()
                except ImageError as bad:
                    raise bad from e
                except Exception:  # noqa: BLE001 -- (the check could not read: e is the error)
                    pass
            elif check is not None:  # (interrupted: stop the check)
                check.cancel()
            raise
        finally:
            if PAGE_CHECK in rctxs[0].shared:  # (left by a path that did not wait for it)
                rctxs[0].shared.pop(PAGE_CHECK).cancel()  # (before the mapping it reads goes)
            rctxs[0].close_passed()
    stats.total = time.perf_counter() - t0
    if not process:
        return Restored(rctxs[0].pid, list(stats.warnings), list(rctxs[0].shared.get("lazy handlers", [])))
    import psutil  # (only here: ~15 ms of a command's start-up)

    restored = psutil.Process(rctxs[0].pid)
    restored.restore_warnings = list(stats.warnings)
    restored.lazy_handlers = list(rctxs[0].shared.get("lazy handlers", []))  # lazy.Handler each
    return restored


@dataclass
class Restored:
    """What restore(..., process=False) returns: the PID, and what was done otherwise
    than asked, in words (a psutil.Process carries the same as `restore_warnings`)."""

    pid: int
    restore_warnings: list[str]
    lazy_handlers: list = field(default_factory=list)  # lazy.Handler each (restore(lazy=True))


def check(path, *, progress: Progress | None = None,
          options: RestoreOptions | None = None) -> list[RestoreProblem]:
    """Every problem that would stop a restore of `path` with `options` before it
    creates a process: restore's own validation (VALIDATE and PREPARE), run to the
    end instead of to the first problem, then undone.  A damaged image is an
    ImageError, raised."""
    progress = progress or Progress()
    options = options or RestoreOptions()
    load_for(options)
    stats = RestoreStats()
    # as restore: refused up front (a check without the privileges could not open what
    # restore opens, nor make the namespaces it makes)
    privileges.require("restore", path=path, new_namespaces=options.new_pidns or options.new_netns)
    with boundary(f"checking a restore from {path}", RestoreError), limits.fd_room(), \
            limits.translated(f"checking a restore from {path}"), deferred_signals(), \
            (netns.fresh() if options.new_netns else contextlib.nullcontext()):
        rctxs = _validate(path, progress, stats, options, checking=True)
        try:
            return _prepare(rctxs, stats)
        finally:
            rctxs[0].close_passed()


def _prepare(rctxs: list[RestoreContext], stats: RestoreStats) -> list[RestoreProblem]:
    """PREPARE: open every file of every process, before any process exists; returns
    the problems validation found (PIDs included)."""
    t = time.perf_counter()
    for rctx in rctxs:
        if rctx.zombie:
            continue
        for step in (memory.prepare, mm.prepare, task.prepare, files.prepare,
                     *(h.run for h in hooks_at("prepare"))):  # then the kinds' own, declared
            rctx.collect(lambda step=step: step(rctx))
    root = rctxs[0]
    if TRUST in root.shared:  # an image of an ordinary user: may it open what pyckpt opened?
        owner, paths = root.shared[TRUST]
        denied = trust.denied_files(owner, root.passed, paths)
        if denied:
            more = f" and {len(denied) - 3} more" if len(denied) > 3 else ""
            root.note(trust.refusal(root.image.path, owner, "; ".join(denied[:3]) + more))
    for p in root.problems:  # out of fds or memory: not what it was reported as
        number = limits.cause(p.error)
        if number is not None and not isinstance(p.error, ResourceError):
            p.error, p.fixes = limits.resource_error(number, "preparing the restore"), ()
    stats.phases[Stage.PREPARE.name] = time.perf_counter() - t
    return root.problems


TRUST = "trust: owner, paths"  # RestoreContext.shared: who owns an untrusted image


def _check_trust(path, image, views, recs, root: RestoreContext) -> None:
    """An image directory an ordinary user owns restores only with what that user has
    (see trust.py): what each process asks for beyond it is a problem, avoided by
    trust_image; the files are checked once opened (PREPARE)."""
    owner = trust.owner_of(path)
    if owner is None:
        return
    root.shared[TRUST] = (owner, trust.other_paths(image, root.options.deleted_dir))
    for view, rec in zip(views, recs):
        if not task.is_zombie(view):
            wants = trust.check_process(path, owner, view)
            if wants:
                root.note(trust.refusal(path, owner, f"process {rec.pid} with {'; '.join(wants)}"))
    objects = trust.foreign_objects(owner, image)
    if objects:
        root.note(trust.refusal(path, owner, "; ".join(objects)))


def _check_fd_room(views, recs, path) -> None:
    """Every fd of the image is placed at its number in a task that starts with
    pyckpt's limits, and pyckpt keeps the files it opens for it above them: the
    highest must lie below pyckpt's limit of open files (raised to the hard limit).
    Raised, not noted: no option avoids it, and no file could be placed for a check."""
    limit = limits.nofile_limit()
    live = [(v, r) for v, r in zip(views, recs) if not task.is_zombie(v)]
    view, rec = max(live, key=lambda vr: files.highest_fd(vr[0]))
    top = files.highest_fd(view)
    if top + 1 >= limit:
        room = sum(len(v.of_type(files.FdRecord)) for v, _ in live) + 4
        raise limits.nofile_too_low(top, f"process {rec.pid} of the image at {path}", room)


def _fd_room():
    """pyckpt's soft RLIMIT_NOFILE raised to its hard limit for the restore: the new
    task starts with pyckpt's limits and must dup3 to every fd number of the
    image before its own limits are set (OUTSIDE stage).  restore() holds it from
    the start (the files opened in PREPARE sit above the image's fds already)."""
    return limits.fd_room()


# From this many bytes of pages, restore checks their digests in a thread beside the
# stages after VALIDATE (on another CPU while the new task reads its pages) and waits
# for it before the processes run: a bad digest then kills the half-made processes.
CHECK_BESIDE_MIN = 1 << 20
# A restore failing meanwhile waits for that check (a damaged page said first) when it
# has at most this many bytes to read (~50 ms here), else stops it.
WAIT_CHECK_MAX = 256 << 20
PAGE_CHECK = "page check"  # shared: the image.PageCheck running beside


def _validate(path, progress: Progress, stats: RestoreStats,
              options: RestoreOptions, checking: bool = False, beside: bool = False) -> list[RestoreContext]:
    """Read and check the whole image; one context per process, the root first.
    A damaged image raises ImageError; what is wrong here and now (a PID in use)
    is noted in the contexts' shared `problems`.  `beside`: the digests of a big
    image's pages may be left to a thread (CHECK_BESIDE_MIN)."""
    t = time.perf_counter()
    problems: list[RestoreProblem] = []
    image = ImageReader(path)
    if image.header.machine != os.uname().machine:
        raise ImageError(f"image at {path} is for {image.header.machine}, this is {os.uname().machine}",
                         path=path)
    # The reader checked the tree when it opened the image (kinds.check_tree): a live
    # first process, no PID twice, every parent present, each process consistent.
    views = task.process_views(image)
    recs = [view.one(task.ZombieRecord if task.is_zombie(view) else task.TaskRecord) for view in views]
    shared: dict = {}
    if options.lazy and not checking:  # lazily served pages: checked by the handler when served
        from . import lazy

        runs, later = lazy.checked_up_front(image, views, shared)
    else:
        runs, later = stored_runs(image), 0
    total = sum(length for _, length, _ in runs)
    stats.pages_bytes = total + later
    beside = beside and total >= CHECK_BESIDE_MIN
    if not beside:
        with progress.bar(total, "verify image") as bar:
            image.verify_pages(runs, bar.update)
    stats.phases[Stage.VALIDATE.name] = time.perf_counter() - t
    passed: dict = {}
    pids: dict[int, int] = {}
    lowest = max(max(files.highest_fd(v) for v in views if not task.is_zombie(v)) + 1, 3)
    rctxs = []
    for view, rec in zip(views, recs):
        rctx = RestoreContext(image=view, pid=rec.pid, progress=progress, options=options,
                              image_pid=rec.pid, tid_map={rec.pid: rec.pid})
        # shared by the tree:
        rctx.passed, rctx.pids, rctx.lowest_passed = passed, pids, lowest
        rctx.problems, rctx.shared, rctx.check_only = problems, shared, checking
        rctx.zombie = rec if task.is_zombie(view) else None
        rctxs.append(rctx)
    root = rctxs[0]
    if not options.trust_image:
        _check_trust(path, image, views, recs, root)
    _check_fd_room(views, recs, path)
    for view, rec in zip(views, recs):
        if not task.is_zombie(view):
            for error in limits.unraisable(view.one(task.TaskRecord).rlimits,
                                           f"process {rec.pid} of the image at {path}"):
                root.note(error)
    if not options.new_pidns:
        for view, rec in zip(views, recs):
            tids = [rec.pid] if task.is_zombie(view) else [t.tid for t in thread.thread_records(view)]
            for tid in tids:
                root.collect(lambda tid=tid: _check_pid_free(tid))
    files.plan_replacements(root, [(rec.pid, view) for view, rec in zip(views, recs)])
    if beside:  # the last check here: started once nothing else can fail in VALIDATE
        t = time.perf_counter()
        # (the copy-in's mapping of pages.img, made now: the check reads it too)
        source = memory.source_beside(root)
        try:
            shared[PAGE_CHECK] = image.verify_pages_beside(runs, mapping=source)
        except BaseException:  # (a run out of bounds, a damaged parent): its mapping goes
            root.close_passed()
            raise
        stats.phases[Stage.VALIDATE.name] += time.perf_counter() - t
    return rctxs


def _check_pid_free(pid: int) -> None:
    if os.path.exists(f"/proc/{pid}"):
        try:
            holder = proc.read_stat(pid)
            detail = f" by {holder.comm} (state {holder.state})"
        except OSError:
            detail = ""
        raise needs(PidInUseError(pid, detail), Fix("new_pidns"))


def _create_and_fill(rctxs: list[RestoreContext], stats: RestoreStats) -> None:
    root = rctxs[0]
    t = time.perf_counter()
    made: list[int] = []  # processes made so far, outermost first, for the undo
    threads: list[int] = []
    try:
        if root.options.new_pidns:
            root.init_pid, launcher_page = _new_pidns_init()
            made.append(root.init_pid)
            first = _fork_in(root.init_pid, root.image_pid, launcher_page, reaper=True)
        else:
            first = _clone_small(root)
        made.append(first)
        _made(root, first)
        # Every process is made while its parent is still pristine (the stub or a
        # copy of pyckpt), parents first, each leading its session or group before
        # it makes the children that inherit them.
        for rctx in rctxs:
            if rctx.zombie:
                continue
            children = [c for c in rctxs[1:] if _ppid(c) == rctx.image_pid]
            _lead_and_fork(rctx, children, made)
        stats.phases[Stage.CREATE.name] = time.perf_counter() - t
        live = [r for r in rctxs if not r.zombie]
        for rctx in live:
            _fill(rctx, stats)
            threads += list(rctx.threads)
        if PAGE_CHECK in root.shared:  # a bad digest: the processes are killed (below)
            t = time.perf_counter()
            root.shared.pop(PAGE_CHECK).wait()
            stats.phases["page check (wait)"] = time.perf_counter() - t
        for hook in hooks_at("before release"):  # kinds' work once every process is complete
            hook.run(root)
        t = time.perf_counter()
        # The last checkpoint: a signal until now undoes the restore; from here on it
        # lets the released process run (a late signal, see signals.commit).
        commit()
        if root.options.shell_job:  # its group in the foreground of the caller's terminal
            from .kinds import tty

            tty.take_foreground(root)
        # every process is complete: all go now.  In a new PID namespace the init goes
        # last (should pyckpt die before, the namespace dies with it): one release.
        procs = [(rctx.pid, list(rctx.threads)) for rctx in reversed(live)]
        if root.init_pid:
            for pid, threads in procs:
                release(pid, threads)
            release(root.init_pid)
        else:
            release_all(procs)
        stats.phases[Stage.RELEASE.name] = time.perf_counter() - t
    except BaseException as e:
        # Only what this restore made is killed and reaped (never a PID before
        # it was made: that is the image's PID, maybe a live process).
        kill_and_reap(made, threads + [t for r in rctxs for t in r.threads])
        for r in rctxs:  # the threads' injectors (the processes' are cured on the way out)
            for t in r.threads.values():
                with contextlib.suppress(PyckptError):
                    t.cure()  # its thread is gone: this closes its /proc/TID/mem fd
        run_undo(root.shared)  # what kinds made outside the processes (SysV segments...)
        said = root.shared.get("lazy: said by a handler")  # it killed them: a corrupted page (lazy.py)
        if said:
            raise ImageError(f"restore of process {root.image_pid} failed and was undone: {said}",
                             path=root.image.where) from e
        # What went wrong in a task (a ptrace request, an injected call, an OS call) is
        # said with "undone"; a bug is left to the boundary (an InternalError).
        if not isinstance(e, (PtraceError, RemoteCallError, OSError)):
            raise
        raise RestoreError(f"restore of process {root.image_pid} failed and was undone: {e}") from e


def _ppid(rctx: RestoreContext) -> int:
    return (rctx.zombie or rctx.image.one(task.TaskRecord)).ppid


def _exit_as_zombie(inj: Injector, page: int, pid: int, status: int) -> None:
    """Make the freshly forked `pid` end with the wait status its parent will collect."""
    site = inj.site
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        child = Injector(pid, site, pt.get_regs(pid), cure_regs=False)
        with child:
            child.write(page, bytes(32))  # SIG_DFL, no flags
            child.check(nr.rt_sigaction, sig, page, 0, 8, what=f"resetting signal {sig}")
            child.forget_sigmask()
        pt.set_sigmask(pid, 0)
        os.kill(pid, sig)
        status_now = pt.wait(pid)  # the signal's delivery stop (we trace it)
        pt.request(pt.PTRACE_CONT, pid, 0, os.WSTOPSIG(status_now) if os.WIFSTOPPED(status_now) else 0,
                   "PTRACE_CONT")
    else:
        regs = pt.decode_regs(pt.get_regs(pid))
        regs.rip, regs.rax, regs.orig_rax = site, 231, (1 << 64) - 1  # exit_group
        regs.rdi = os.WEXITSTATUS(status)
        pt.set_regs(pid, pt.encode_regs(regs))
        pt.request(pt.PTRACE_CONT, pid, 0, 0, "PTRACE_CONT")
    end = pt.wait(pid)  # the tracer's notice; the parent still has to reap it
    if not (os.WIFEXITED(end) or os.WIFSIGNALED(end)):
        raise RestoreError(f"zombie {pid} did not end (wait status {end:#x})")


def _made(rctx: RestoreContext, real_pid: int) -> None:
    rctx.pid = real_pid
    rctx.tid_map[rctx.image_pid] = real_pid
    rctx.pids[rctx.image_pid] = real_pid


def _lead_and_fork(rctx: RestoreContext, children: list[RestoreContext], made: list[int]) -> None:
    """In the freshly made (still pristine) process: lead its session or group, then
    fork each child with its image PID."""
    inj = Injector(rctx.pid, _birth_site(rctx), pt.get_regs(rctx.pid), cure_regs=False)
    with inj:
        # a shell job's first process leads a group of its own (kinds/tty.py)
        task.make_leader(inj, rctx.image.one(task.TaskRecord),
                         own_group=rctx.options.shell_job and _ppid(rctx) not in rctx.pids)
        if children:
            pt.request(pt.PTRACE_SETOPTIONS, rctx.pid, 0, pt.PTRACE_O_TRACEFORK | pt.PTRACE_O_EXITKILL,
                       "PTRACE_SETOPTIONS")
            page = inj.map_scratch()
            for child in children:
                real = _fork_with_pid(inj, page, child.image_pid)
                made.append(real)
                _made(child, real)
                if child.zombie:
                    _exit_as_zombie(inj, page, real, child.zombie.status)


def _fork_with_pid(inj: Injector, page: int, pid: int) -> int:
    inj.write(page + 128, struct.pack("<Q", pid))
    inj.write(page, thread.CLONE_ARGS.pack(0, 0, 0, 0, SIGCHLD, 0, 0, 0, page + 128, 1))
    try:
        return inj.call_clone(nr.clone3, page, thread.CLONE_ARGS.size)
    except RemoteCallError as e:
        if e.errno == 17:
            raise PidInUseError(pid, " (taken while restoring)") from None
        raise


BIRTH_SITE = "restorer: the syscall instruction of the stub the tasks were born of"  # rctx.shared
STUB = {"usable": True}  # ck_clone_exec works in this process (False after it could not)


def _clone_small(root: RestoreContext) -> int:
    """CREATE's first task, stopped and traced, with the image's PID: born of
    pyckpt's stub (ck_clone_exec: a clone3(CLONE_VM) that execs a memfd of one
    page and stops at once), so that neither the clone nor CLEAR has to copy and
    unmap pyckpt's address space.  It inherits the files passed to it (PREPARE).
    Where the stub cannot be used (pyckpt not root with all of its bounding
    set, memfds not executable), a copy of pyckpt as before (_clone_stopped)."""
    pid = root.image_pid
    if STUB["usable"]:
        keep = sorted(root.passed.values())
        child = lib.ck_clone_exec(pid, ffi.new("int[]", keep), len(keep))
        if child == -17:  # EEXIST
            raise PidInUseError(pid, " (taken while restoring)")
        if child > 0:
            status = pt.wait(child)
            if not os.WIFSTOPPED(status):
                raise RestoreError(f"the new task {child} did not stop (wait status {status:#x})")
            root.shared[BIRTH_SITE] = pt.decode_regs(pt.get_regs(child)).rip  # the stub's entry
            root.shared[mm.FRESH_EXE] = True
            return child
        if child == -95:  # ENOTSUP: not here (the child made, if any, is gone)
            STUB["usable"] = False
    return _clone_stopped(pid, 0)


def _this_cpu() -> int:
    """The CPU pyckpt runs on (pinned there for the restore: no migration first), else
    its lowest allowed one."""
    cpu = lib.ck_getcpu()
    return cpu if cpu >= 0 and cpu in os.sched_getaffinity(0) else min(os.sched_getaffinity(0))


def _birth_site(rctx: RestoreContext) -> int:
    """A syscall instruction a just-made task can run: its stub's, or pyckpt's vDSO's."""
    site = rctx.shared.get(BIRTH_SITE)
    if site is None:
        own_vdso, site_off = _own_vdso_site()
        site = own_vdso + site_off
    return site


def _clone_stopped(pid: int, flags: int) -> int:
    child = lib.ck_clone_stopped(pid, flags)
    if child < 0:
        if -child == 17:  # EEXIST
            raise PidInUseError(pid, " (taken while restoring)")
        raise RestoreError(f"clone3 for PID {pid} failed: {os.strerror(-child)}")
    status = pt.wait(child)
    if not os.WIFSTOPPED(status):
        raise RestoreError(f"the new task {child} did not stop (wait status {status:#x})")
    # Traced with PTRACE_O_EXITKILL (ck_clone_stopped): pyckpt's death kills it, and every
    # task it makes (children and threads traced from birth inherit the option).
    return child


def _new_pidns_init() -> tuple[int, int]:
    """A stopped copy of pyckpt as PID 1 of a new PID namespace, pyckpt's child; and the
    address of a scratch page it holds a copy of (see _fork_in).

    Not made by ck_clone_stopped(CLONE_NEWPID): an init whose parent died before it
    asked for a parent-death signal could not kill itself (an init ignores its own
    signals).  A stopped copy made by ck_clone_stopped (the launcher, which can)
    puts its future children in a new PID namespace (unshare) and forks the init
    with CLONE_PARENT: the init is pyckpt's child, traced from birth with
    PTRACE_O_EXITKILL, and without a parent-death signal (a fork has none), so it
    outlives `pyckpt restore --new-pidns`.  The launcher is then killed and reaped."""
    launcher = _clone_stopped(0, 0)
    try:
        own_vdso, site_off = _own_vdso_site()
        inj = Injector(launcher, own_vdso + site_off, pt.get_regs(launcher), cure_regs=False)
        with inj:
            # its own IPC namespace too: SysV ids and keys of copies side by side do not clash
            r = inj.call(nr.unshare, CLONE_NEWPID | CLONE_NEWIPC)
            if r == -1:  # EPERM
                raise RestoreError("restoring into a new PID namespace needs CAP_SYS_ADMIN "
                                   "(unshare(CLONE_NEWPID) was refused: EPERM)")
            if -4096 < r < 0:
                raise RestoreError(f"unshare(CLONE_NEWPID) failed: {os.strerror(-r)}")
            # (clone3 wants exit signal 0 with CLONE_PARENT: the kernel gives the init the
            # launcher's, SIGCHLD, and reports a clone, not a fork)
            pt.request(pt.PTRACE_SETOPTIONS, launcher, 0, pt.PTRACE_O_TRACECLONE | pt.PTRACE_O_EXITKILL,
                       "PTRACE_SETOPTIONS")
            page = inj.map_scratch()
            inj.write(page, thread.CLONE_ARGS.pack(CLONE_PARENT, 0, 0, 0, 0, 0, 0, 0, 0, 0))
            init = inj.call_clone(nr.clone3, page, thread.CLONE_ARGS.size)
    finally:
        kill_and_reap([launcher])
    return init, page


def _fork_in(init: int, pid: int, launcher_page: int, *, reaper: bool) -> int:
    """Make the root as the init's child, with the image's PID inside the namespace,
    then point the init at its reaping loop (it runs once released)."""
    own_vdso, site_off = _own_vdso_site()
    inj = Injector(init, own_vdso + site_off, pt.get_regs(init), cure_regs=False)
    with inj:
        pt.request(pt.PTRACE_SETOPTIONS, init, 0, pt.PTRACE_O_TRACEFORK | pt.PTRACE_O_EXITKILL,
                   "PTRACE_SETOPTIONS")
        inj.check(nr.munmap, launcher_page, PAGE, what="munmap of the launcher's scratch page")
        page = inj.map_scratch()
        try:
            child = _fork_with_pid(inj, page, pid)
        except PidInUseError:
            raise PidInUseError(pid, " inside the new namespace") from None
        # The root has the fds pyckpt passes: the init holds none from now on (its loop
        # closes them too, but only once released, after the processes run: meanwhile
        # a pipe whose write end only pyckpt made would not read end-of-file).
        inj.check(nr.close_range, 0, (1 << 32) - 1, 0, what="close_range in the namespace's init")
    regs = pt.decode_regs(inj.regs)
    regs.rip = int(ffi.cast("uintptr_t", ffi.addressof(lib, "ck_init_loop")))
    regs.rsp = ((regs.rsp - 4096) & ~15) - 8  # as if called: rsp = 8 (mod 16) at entry
    regs.orig_rax = (1 << 64) - 1
    pt.set_regs(init, pt.encode_regs(regs))
    return child


_OWN_SITE: dict[int, tuple[int, int]] = {}


def _own_vdso_site() -> tuple[int, int]:
    """(vdso start, offset of a syscall instruction) in pyckpt's own vDSO (found once)."""
    pid = os.getpid()
    if pid not in _OWN_SITE:
        for m in proc.own_vdso_blocks():
            if m.path == "[vdso]":
                with open("/proc/self/mem", "rb") as f:
                    f.seek(m.start)
                    _OWN_SITE[pid] = m.start, find_syscall_insn(f.read(m.size))
                break
        else:
            raise RestoreError("pyckpt itself has no [vdso]")
    return _OWN_SITE[pid]


def _free_page(ranges: list[tuple[int, int]], size: int = PAGE) -> int:
    addr = 0x100000
    for start, end in sorted(ranges):
        if end <= addr:
            continue
        if start >= addr + size:
            break
        addr = (end + PAGE - 1) & ~(PAGE - 1)
    return addr


class _timed:
    """A stage's block: a checkpoint first, then its time added to `stats`."""

    __slots__ = ("stats", "stage", "t")

    def __init__(self, stats: RestoreStats, stage: Stage):
        self.stats, self.stage = stats, stage

    def __enter__(self):
        checkpoint()
        self.t = time.perf_counter()

    def __exit__(self, *a):
        phases = self.stats.phases
        phases[self.stage.name] = phases.get(self.stage.name, 0) + time.perf_counter() - self.t


def _fill(rctx: RestoreContext, stats: RestoreStats, site: int | None = None) -> None:
    """Every stage from CLEAR to REGISTERS in the made task; `site`: a syscall
    instruction it can run until it has a scratch page (default: the stub's it was
    born of, or pyckpt's own vDSO's for a copy of pyckpt; fastcopy.py forks from a
    restored one)."""
    pid = rctx.pid
    own_vdso, site_off = _own_vdso_site()
    inj = Injector(pid, _birth_site(rctx) if site is None else site, pt.get_regs(pid), cure_regs=False)
    rctx.inj = inj
    with inj:
        with _timed(stats, Stage.CLEAR):
            thread.drop_inherited_rseq(rctx)
            # Where the image has nothing; the task (the stub, or a copy of pyckpt) is asked
            # first, and its maps read only if it has something there.
            image_ranges = memory.target_ranges(rctx.image)
            scratch = _free_page(image_ranges, SCRATCH_SIZE)
            if inj.call(nr.mmap, scratch, SCRATCH_SIZE, 7, 0x22 | MAP_FIXED_NOREPLACE, -1, 0) != scratch:
                scratch = _free_page(image_ranges + [(m.start, m.end) for m in proc.read_maps(pid)],
                                     SCRATCH_SIZE)
                inj.check(nr.mmap, scratch, SCRATCH_SIZE, 7, 0x22 | MAP_FIXED_NOREPLACE, -1, 0,
                          what="mmap of the scratch page")
            inj.write(scratch, SCRATCH_CODE)
            inj.site = scratch
            rctx.scratch = scratch + SCRATCH_DATA
            inj.use_batches(scratch + PAGE, SCRATCH_SIZE - PAGE)
            batch = inj.batch()
            batch.add(nr.munmap, 0, scratch, what="munmap below the scratch page")
            batch.add(nr.munmap, scratch + SCRATCH_SIZE, TASK_END - scratch - SCRATCH_SIZE,
                      what="munmap above the scratch page")
            _close_unpassed(rctx, batch)
            batch.run()
        with _timed(stats, Stage.LAYOUT):
            memory.restore_layout(rctx)
        with _timed(stats, Stage.PAGES):
            memory.restore_pages(rctx)
        with _timed(stats, Stage.FILES):
            files.restore(rctx)
        with _timed(stats, Stage.TASK):
            task.restore(rctx)
        with _timed(stats, Stage.MM):
            mm.restore(rctx)
        inj.check(nr.close_range, rctx.lowest_passed, 0xFFFFFFFF, 0, what="closing passed fds")
        with _timed(stats, Stage.SIGNALS):
            signals.restore(rctx)
        with _timed(stats, Stage.THREADS):
            thread.create_threads(rctx)
        with _timed(stats, Stage.THREAD):
            thread.restore(rctx)
            signals.restore_pending(rctx)
        with _timed(stats, Stage.DEFERRED):
            for step in ordered(rctx.deferred):
                step.run()
        with _timed(stats, Stage.OUTSIDE):
            task.restore_from_outside(rctx)
            thread.restore_from_outside(rctx)
        with _timed(stats, Stage.CREDS):
            creds.restore(rctx)
            thread.restore_pdeathsig(rctx)
        # Leave the scratch page: inject from the task's own vDSO from now on.
        inj.site = memory.vdso_start(rctx) + (own_vdso - _own_vdso_block_start()) + site_off
        inj.check(nr.munmap, scratch, SCRATCH_SIZE, what="munmap of the scratch page")
        for t in [inj, *rctx.threads.values()]:
            t.forget_sigmask()
        for t in rctx.threads.values():
            t.cure()  # nothing left to undo but its /proc/TID/mem fd
        stats.injected_calls += inj.calls + sum(t.calls for t in rctx.threads.values())
    with _timed(stats, Stage.REGISTERS):
        cpu.restore(rctx)
        thread.restore_masks(rctx)


def _own_vdso_block_start() -> int:
    return min(m.start for m in proc.own_vdso_blocks())


def _close_unpassed(rctx: RestoreContext, batch) -> None:
    """Close every fd the new task inherited from pyckpt except the passed ones (queued
    in `batch`)."""
    keep = sorted(rctx.passed.values())
    lo = 0
    for fd in keep:
        if fd > lo:
            batch.add(nr.close_range, lo, fd - 1, 0, what="close_range")
        lo = fd + 1
    batch.add(nr.close_range, lo, 0xFFFFFFFF, 0, what="close_range")
