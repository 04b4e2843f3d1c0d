"""Fast copies of one image: restored once into a stopped template, each copy forked from it.

`Template` (templates.py) uses this when the image allows it.  The template is
the image's process restored without being released: its memory, layout,
mm fields, working directory and signal dispositions are in place, it holds
no fd of the image (only a pidfd of pyckpt, at a high number) and its single
thread stays stopped under pyckpt's ptrace forever: it never runs code of its
own.  It was made by ck_clone_stopped, so it dies with pyckpt (parent-death
SIGKILL, PTRACE_O_EXITKILL) — with the thread of pyckpt that made it, in
fact (both are that thread's); the copies' inits watch pyckpt's process
instead (step 3), so running copies outlive that thread, not pyckpt.

Its private anonymous memory is in huge pages where the image had every
page of a 2 MiB block (MADV_COLLAPSE before the pages are read, VMA flags
unchanged): a fork of it copies one page-table entry per 2 MiB, so the
root of a copy of a 1 GiB process is forked in about a millisecond, where
fork() of the original copies 262144 entries (and the template fills faster).

A copy, made from the template by injected calls:

1. `clone3(CLONE_VM | CLONE_PARENT | CLONE_NEWPID | CLONE_NEWIPC)` in the
   template: the copy's init, PID 1 of a new PID namespace, a child of pyckpt
   (CLONE_PARENT), sharing the template's memory (CLONE_VM: no page table is
   copied for it);
2. `clone3(set_tid = the image's PID)` in that init: the copy's root, a fork
   of the template's memory (pages shared copy-on-write until written: the
   one page-table copy a fork() of the process would make too);
3. the init closes every fd but the template's pidfd of pyckpt, takes a pidfd
   of the root, goes to /, blocks every signal and is pointed at a small loop
   (INIT_BLOB, on pages of the template's mapped MADV_DONTFORK, so copies do
   not get them) that polls both pidfds and reaps the namespace's orphans (at
   least once a second): it exits when pyckpt's process or the copy's root
   has exited, which ends the namespace.  (Not a parent-death signal: that
   belongs to the thread that made the template, whose end would kill every
   copy while pyckpt runs on.);
4. the root gets what fork does not give it, by the restore's own functions
   (restorer.py, kinds/): its network namespace (new_netns: made by pyckpt
   per copy, sockets bound in it), its own file descriptions (opened by
   `files.prepare` in pyckpt for this copy — a file's offset, a pipe, a
   socket are each copy's own — and taken from pyckpt with pidfd_getfd),
   its session, threads (re-created from the image's thread records), the
   kinds' deferred work (timers, locks, epoll items), resource limits,
   credentials, pending signals, and the image's registers; then it runs.

Shared memory objects (shared anonymous memory, a memfd or deleted file
mapped shared): the fork leaves a copy's windows on the template's object;
each copy gets objects of its own (made in pyckpt with the image's data, as
the restore makes them) mapped over them in place.

What the fast path does not do yet (Template.copy() then makes full
restores, and `Template.reason` says why): SysV IPC objects, a memfd or
deleted file mapped private (its unwritten pages would stay the template's
object's), memory marked MADV_DONTFORK or
MADV_WIPEONFORK (a fork does not copy it), a root whose PID is 1, shell_job,
tcp_established.

Process trees: only the root is forked from the template.  A fork's memory
is its maker's and its parent is its maker (or the maker's parent), so a
child of the copy's root with the memory of the image's child cannot be
forked from a template's process: the processes below the root are forked
by their parents in the copy (with their image PIDs, sessions and groups, as
the restore makes them) and then restored whole by the restore's stages
(restorer._fill): their memory is read from the image per copy, not shared.

The template, its copies' inits and the roots are traced by the thread that
made the template until released: copy() must be called from that thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import struct
import time

from . import limits, netns, privileges
from . import ptrace_ops as pt
from .arch import PAGE
from .errors import PtraceError, PyckptError, RemoteCallError, RestoreError, boundary
from .inject import ALL_SIGNALS, Injector, nr
from .kinds import cpu, creds, files, load_all, memory, mm, signals, task, thread
from .kinds.context import AFTER_RELEASE, WARNINGS, RestoreContext, RestoreOptions, hooks_at, run_undo
from .kinds.order import ordered
from .progress import Progress
from .seize import kill_and_reap, pinned_to_cpu, release
from .signals import checkpoint, commit, deferred_signals

CLONE_VM, CLONE_PARENT, CLONE_NEWIPC, CLONE_NEWPID = 0x100, 0x8000, 0x08000000, 0x20000000
SIGCHLD = 17
MADV_DONTFORK, MADV_COLLAPSE = 10, 25
MAP_NORESERVE = 0x4000
HUGE = 2 << 20
MAP_FIXED_NOREPLACE = 0x100000
U32 = 0xFFFFFFFF
NETNS = ("copy's network namespace",)  # rctx.passed key

# The copy's init: poll(r13, 2, 1000) on two pollfds (POLLFDS: pyckpt's process, the
# copy's root); when one is readable (its process has exited), exit_group(0); else
# wait4(-1, NULL, __WALL | WNOHANG, NULL) while it reaps someone, exit_group(0) once it
# reaped the root (r12, its PID inside the namespace) or no child is left, and poll
# again.  Uses no stack: it runs on the template's memory (CLONE_VM); poll writes only
# the pollfds' revents (on the page after the code, shared by every init: unread).
#   0: mov rdi,r13; mov esi,2; mov edx,1000; mov eax,7; syscall; test rax,rax; jg 43
#  19: mov rdi,-1; xor esi,esi; mov edx,0x40000001; xor r10d,r10d; mov eax,61; syscall
#  31: cmp rax,r12; je 43; cmp rax,-10; je 43; test rax,rax; jg 19; jmp 0
#  43: xor edi,edi; mov eax,231; syscall; jmp 43
INIT_BLOB = bytes.fromhex("4c89efbe02000000bae8030000b8070000000f054885c07f2a48c7c7ffffffff31f6ba0100"
                          "00404531d2b83d0000000f054c39e0740d4883f8f674074885c07fd8ebbd31ffb8e70000000f05ebf5")
BLOB_DATA = 256  # clone_args and set_tid after the code, on the same page
POLLFD = struct.Struct("<ihh")  # fd, events, revents
POLLIN = 1


class NotFast(PyckptError):
    """This copy cannot be made from the template (the caller makes a full restore);
    `for_good`: nor can any later one."""

    def __init__(self, message: str, for_good: bool = False):
        super().__init__(message)
        self.for_good = for_good


def refusal(image, options: RestoreOptions) -> str | None:
    """Why the image (with these options) gets no fast copies, in words; None if it does."""
    reader = getattr(image, "reader", image)
    views = task.process_views(reader)
    if task.is_zombie(views[0]):
        return "the image's process had exited"
    rec = views[0].one(task.TaskRecord)
    if rec.pid == 1:
        return "the image's process is PID 1 (it would be the copy's init)"
    why = _option_refusal(options)
    if why:
        return why
    if any(type(r).__module__.endswith(".sysvipc") for r in reader.records):
        return "the image holds SysV IPC objects"
    for view in views:
        if task.is_zombie(view):
            continue
        pid = view.one(task.TaskRecord).pid
        for v in view.of_type(memory.VmaRecord):
            if _own_per_copy(v):
                pass  # each copy gets its own object (_own_shared)
            elif v.kind not in ("anon", "file") or (v.shared and v.kind != "file"):
                return (f"memory of process {pid} at {v.start:#x}-{v.end:#x} is {v.kind}"
                        f"{' shared' if v.shared else ''} (every copy would share it)")
            if {"dc", "wf"} & set(v.vmflags):  # MADV_DONTFORK / MADV_WIPEONFORK: a fork would lose it
                return (f"memory of process {pid} at {v.start:#x}-{v.end:#x} is not copied by fork "
                        f"(VmFlags {' '.join(v.vmflags)})")
    return None


def _option_refusal(options: RestoreOptions) -> str | None:
    """Why these restore options get no fast copy (checked for the template's, and for
    each copy's: copy() may add options); None if they do."""
    if options.shell_job:
        return "shell_job=True"
    if options.tcp_established:
        return "tcp_established=True"
    if options.new_pidns:
        return "new_pidns is the template's own"
    return None


@dataclasses.dataclass
class CopyStats:
    """Where a copy's time went (seconds by step) and how many calls were injected."""

    total: float = 0.0
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    injected_calls: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)


class _Phases:
    def __init__(self, stats: CopyStats):
        self.stats, self.t = stats, time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.stats.phases[name] = self.stats.phases.get(name, 0.0) + now - self.t
        self.t = now


class FastTemplate:
    """The image restored once into a stopped process that copies are forked from."""

    def __init__(self, path, options: RestoreOptions, progress: Progress | None = None):
        from . import restorer

        load_all()
        privileges.require("restore", path=path, new_namespaces=True)
        self.path = os.fspath(path)
        self.options = options
        self.progress = progress or Progress(False)
        self.pid = 0
        self.build_time = 0.0
        self.tracer = 0
        t0 = time.perf_counter()
        stats = restorer.RestoreStats()
        with boundary(f"making a template of {path}", RestoreError, "no process was left behind"), \
                limits.fd_room(), limits.translated(f"making a template of {path}"), deferred_signals():
            # (as with new_pidns: the image's PIDs are the copies', each in its own namespace)
            rctxs = restorer._validate(path, self.progress, stats,
                                       dataclasses.replace(options, fds={}, new_pidns=True))
            root = rctxs[0]
            self.image = root.image
            why = refusal(root.image, options)
            if why:
                root.close_passed()
                raise NotFast(why)
            try:
                for step in (memory.prepare, mm.prepare, task.prepare):
                    root.collect(lambda step=step: step(root))
                root.pass_fd(files.PYCKPT_PIDFD, lambda: os.pidfd_open(os.getpid()))
                if root.problems:
                    raise root.problems[0].error
                self.lowest_passed = root.lowest_passed
                self.pidfd_slot = max(1023, root.lowest_passed + 512)
                if self.pidfd_slot >= resource.getrlimit(resource.RLIMIT_NOFILE)[0]:
                    raise NotFast(f"fd {self.pidfd_slot} is above pyckpt's limit of open files")
                self.cpu = min(os.sched_getaffinity(0))
                with pinned_to_cpu(self.cpu):
                    self.pid = restorer._clone_stopped(0, 0)
                    self.tracer = _thread_id()
                    try:
                        self._fill_template(root, stats)
                    except BaseException:
                        kill_and_reap([self.pid])
                        self.pid = 0
                        raise
            finally:
                run_undo(root.shared)
                root.close_passed()
        self.image_pid = root.image_pid
        self.processes = [(r.image, r.image_pid, r.zombie) for r in rctxs]  # the root first
        self.build_time = time.perf_counter() - t0
        self.build_phases = dict(stats.phases)

    # -- the template ----------------------------------------------------------
    def _fill_template(self, rctx: RestoreContext, stats) -> None:
        """The restore's steps that a fork carries over, into the template (restorer._fill's
        CLEAR to MM and SIGNALS, then the init blob's page); nothing per copy."""
        from . import restorer
        from .restorer import Stage, _timed

        pid = rctx.pid = self.pid
        rctx.tid_map[rctx.image_pid] = pid
        own_vdso, site_off = restorer._own_vdso_site()
        inj = Injector(pid, own_vdso + site_off, pt.get_regs(pid), cure_regs=False)
        rctx.inj = inj
        with inj:
            with _timed(stats, Stage.CLEAR):
                thread.drop_inherited_rseq(rctx)
                taken = memory.target_ranges(rctx.image) + [(m.start, m.end) for m in _maps(pid)]
                size = restorer.SCRATCH_SIZE
                scratch = restorer._free_page(taken, size)
                inj.check(nr.mmap, scratch, size, 7, 0x22 | MAP_FIXED_NOREPLACE, -1, 0,
                          what="mmap of the scratch page")
                inj.write(scratch, restorer.SCRATCH_CODE)
                inj.site = scratch
                rctx.scratch = scratch + restorer.SCRATCH_DATA
                inj.use_batches(scratch + PAGE, size - PAGE)  # as restorer._fill
                batch = inj.batch()
                batch.add(nr.munmap, 0, scratch, what="munmap below the scratch page")
                batch.add(nr.munmap, scratch + size, restorer.TASK_END - scratch - size,
                          what="munmap above the scratch page")
                restorer._close_unpassed(rctx, batch)
                batch.run()
            with _timed(stats, Stage.LAYOUT):
                memory.restore_layout(rctx)
            self._collapse(inj, rctx)  # before the pages: they are read into huge pages
            rctx.shared[memory.PREFILLED] = True  # (so by the task: UFFDIO_COPY refuses them)
            with _timed(stats, Stage.PAGES):
                memory.restore_pages(rctx)
            with _timed(stats, Stage.TASK):
                task.restore(rctx)
            with _timed(stats, Stage.MM):
                mm.restore(rctx)
            # what the template keeps: a pidfd of pyckpt at a high number, nothing else
            inj.check(nr.dup3, rctx.passed[files.PYCKPT_PIDFD], self.pidfd_slot, os.O_CLOEXEC,
                      what="dup3 of pyckpt's pidfd")
            inj.check(nr.close_range, 0, self.pidfd_slot - 1, 0, what="close_range")
            inj.check(nr.close_range, self.pidfd_slot + 1, U32, 0, what="close_range")
            with _timed(stats, Stage.SIGNALS):
                signals.restore(rctx)
            taken.append((scratch, scratch + size))
            # the init's code (read-only) and its pollfds (written by poll): pyckpt's pidfd at
            # pidfd_slot, the root's at fd 0 (the init's lowest free fd when it takes it)
            self.blob = restorer._free_page(taken + [(m.start, m.end) for m in _maps(pid)], 2 * PAGE)
            inj.check(nr.mmap, self.blob, 2 * PAGE, 3, 0x22 | MAP_FIXED_NOREPLACE, -1, 0,
                      what="mmap of the init's pages")
            inj.write(self.blob, INIT_BLOB)
            inj.write(self.blob + PAGE, POLLFD.pack(self.pidfd_slot, POLLIN, 0) + POLLFD.pack(0, POLLIN, 0))
            inj.check(nr.mprotect, self.blob, PAGE, 5, what="mprotect of the init's code")
            inj.check(nr.madvise, self.blob, 2 * PAGE, MADV_DONTFORK, what="madvise(MADV_DONTFORK)")
            self.site = memory.vdso_start(rctx) + (own_vdso - restorer._own_vdso_block_start()) + site_off
            inj.site = self.site
            inj.check(nr.munmap, scratch, size, what="munmap of the scratch page")
            inj.forget_sigmask()  # it keeps every signal blocked: so do the clones it makes
        pt.set_sigmask(pid, ALL_SIGNALS)
        pt.request(pt.PTRACE_SETOPTIONS, pid, 0,
                   pt.PTRACE_O_TRACECLONE | pt.PTRACE_O_TRACEFORK | pt.PTRACE_O_EXITKILL, "PTRACE_SETOPTIONS")
        self.regs = pt.get_regs(pid)

    def _collapse(self, inj: Injector, rctx: RestoreContext) -> None:
        """Huge pages for the template's private anonymous memory where the image has
        every page of a 2 MiB block (a block with a page missing is left alone: it would
        grow), before the pages are read: one byte of each block written (MADV_COLLAPSE
        wants a page table there), then MADV_COLLAPSE, which works whatever the THP
        setting and leaves the VMA's flags as they are.  A fork then copies one
        page-table entry per 2 MiB instead of 512, and a copy that writes a page still
        copies 4 KiB (the kernel splits the mapping in that copy).  A block the kernel
        cannot make huge stays in small pages."""
        self.collapsed = 0
        for v in rctx.image.of_type(memory.VmaRecord):
            if v.kind != "anon" or v.shared or not v.pages or "nh" in v.vmflags:
                continue
            for start, end in _full_blocks(v.pages):
                for block in range(start, end, HUGE):
                    inj.write(block, b"\0")  # every page of it is read from the image (or zero)
                if inj.call(nr.madvise, start, end - start, MADV_COLLAPSE) == 0:
                    self.collapsed += end - start

    # -- copies ------------------------------------------------------------------
    def copy(self, options: RestoreOptions, stats: CopyStats | None = None) -> tuple[int, int, int]:
        """Make a copy; returns (its root's PID, its init's PID, a pidfd of the init), the
        PIDs as the caller sees them.  The init is the caller's child (the pidfd, opened
        while it was still traced, is the caller's to close: it names that init even once
        its PID is reaped and reused).  A failure kills and reaps what this copy made (the
        template is left as it was)."""
        from .kinds.files import pinned_caller_fds

        if not self._stopped():
            self.close()
            raise NotFast(f"the template process {self.pid} ended (killed from outside?)", for_good=True)
        if _thread_id() != self.tracer:
            raise NotFast("copy() was called from another thread than the template's maker "
                          "(ptrace serves one thread)")
        why = _option_refusal(options)
        if why:  # an option given to this copy only
            raise NotFast(f"{why} (given for this copy)")
        stats = stats if stats is not None else CopyStats()
        t0 = time.perf_counter()
        phases = _Phases(stats)
        with boundary(f"copying the template of {self.path}", RestoreError, "no process was left behind"), \
                limits.fd_room(), pinned_caller_fds(options) as options, \
                limits.translated(f"copying the template of {self.path}"), deferred_signals(), \
                (netns.fresh() if options.new_netns else contextlib.nullcontext()):
            phases.mark("netns" if options.new_netns else "setup")
            rctxs = self._prepare(options)
            root_ctx = rctxs[0]
            try:
                phases.mark("prepare")
                with pinned_to_cpu(self.cpu):  # the template's (pinning pyckpt where it runs and
                    root, init, init_pidfd = self._make(rctxs, stats, phases)  # moving the template
                    # there: no faster)
                for step in ordered(root_ctx.shared.get(AFTER_RELEASE, ())):
                    try:
                        step.run()
                    except Exception as e:
                        stats.warnings.append(f"after the release ({step.name}): {type(e).__name__}: {e}")
                stats.warnings += root_ctx.shared.get(WARNINGS, [])
            except BaseException:
                run_undo(root_ctx.shared)
                raise
            finally:
                root_ctx.close_passed()
        phases.mark("finish")  # after the release: pyckpt's own affinity, fds and namespace back
        stats.total = time.perf_counter() - t0
        return root, init, init_pidfd

    def _prepare(self, options: RestoreOptions) -> list[RestoreContext]:
        """One context per process of the copy, the root first: their own files, opened
        in pyckpt as the restore's PREPARE does (for processes below the root, their
        memory's files, exe and cwd too: they are restored whole, see _make)."""
        passed: dict = {}
        pids: dict[int, int] = {}
        problems: list = []
        shared: dict = {}
        rctxs = []
        for view, image_pid, zombie in self.processes:
            rctx = RestoreContext(image=view, pid=0, progress=self.progress, options=options,
                                  image_pid=image_pid, tid_map={image_pid: image_pid})
            rctx.passed, rctx.pids, rctx.lowest_passed = passed, pids, self.lowest_passed
            rctx.problems, rctx.shared, rctx.zombie = problems, shared, zombie
            rctxs.append(rctx)
        root = rctxs[0]
        try:
            files.plan_replacements(root, [(r.image_pid, r.image) for r in rctxs])
            for rctx in rctxs:
                if rctx.zombie:
                    continue
                whole = (memory.prepare, mm.prepare, task.prepare) if rctx is not root else (_own_objects,)
                for step in (*whole, files.prepare, *(h.run for h in hooks_at("prepare"))):
                    rctx.collect(lambda step=step, rctx=rctx: step(rctx))
            if options.new_netns:
                root.pass_fd(NETNS, lambda: os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
            if problems:
                raise problems[0].error
            if any(n >= self.pidfd_slot for n in passed.values()):
                raise NotFast(f"pyckpt's fds for the copy reach fd {self.pidfd_slot}, the template's pidfd")
        except BaseException:
            run_undo(shared)
            root.close_passed()
            raise
        return rctxs

    def _make(self, rctxs: list[RestoreContext], stats: CopyStats, phases: _Phases) -> tuple[int, int, int]:
        from . import restorer

        rctx = rctxs[0]
        made: list[int] = []
        tmpl = init_inj = None
        init_pidfd = -1
        try:
            tmpl = Injector(self.pid, self.site, self.regs, cure_regs=False)
            data = self.blob + BLOB_DATA
            flags = CLONE_VM | CLONE_PARENT | CLONE_NEWPID | CLONE_NEWIPC
            tmpl.write(data, thread.CLONE_ARGS.pack(flags, 0, 0, 0, 0, 0, 0, 0, 0, 0))
            init = tmpl.call_clone(nr.clone3, data, thread.CLONE_ARGS.size)
            made.append(init)
            phases.mark("clone init")
            init_inj = Injector(init, self.site, pt.get_regs(init), cure_regs=False)
            init_inj.write(data + 128, struct.pack("<Q", self.image_pid))
            init_inj.write(data, thread.CLONE_ARGS.pack(0, 0, 0, 0, SIGCHLD, 0, 0, 0, data + 128, 1))
            try:
                root = init_inj.call_clone(nr.clone3, data, thread.CLONE_ARGS.size)
            except RemoteCallError as e:
                raise RestoreError(f"clone3 with PID {self.image_pid} in the copy's namespace failed: "
                                   f"{os.strerror(e.errno)}") from None
            made.append(root)
            phases.mark("clone root")
            init_inj.check(nr.close_range, 0, self.pidfd_slot - 1, 0, what="close_range in the copy's init")
            init_inj.check(nr.close_range, self.pidfd_slot + 1, U32, 0, what="close_range in the copy's init")
            fd = init_inj.check(nr.pidfd_open, self.image_pid, 0, what="pidfd_open of the root in the copy's init")
            if fd != 0:
                raise RestoreError(f"the copy's init got fd {fd} for its root's pidfd, not 0")
            init_inj.write(data + 192, b"/\0")  # no directory of the image held busy by it
            init_inj.check(nr.chdir, data + 192, what="chdir to / in the copy's init")
            regs = pt.decode_regs(init_inj.regs)
            regs.rip, regs.r12, regs.r13, regs.orig_rax = self.blob, self.image_pid, self.blob + PAGE, (1 << 64) - 1
            pt.set_regs(init, pt.encode_regs(regs))
            rctx.init_pid = init
            restorer._made(rctx, root)
            phases.mark("init")
            inj = rctx.inj = Injector(root, self.site, pt.get_regs(root), cure_regs=False)
            with inj:
                # a scratch page for the kinds' data, then room for batches of calls (inject.Batch)
                area = inj.check(nr.mmap, 0, restorer.SCRATCH_SIZE, 7, 0x22, -1, 0, what="mmap of a scratch area")
                rctx.scratch = area
                inj.use_batches(area + PAGE, restorer.SCRATCH_SIZE - PAGE)
                self._take_fds(rctx)
                _own_shared(rctx)
                phases.mark("take fds")
                if len(rctxs) > 1:
                    self._tree(rctxs, made, stats)
                    phases.mark("processes below the root")
                self._fill_root(rctx, stats, phases, lead=len(rctxs) == 1)
                inj.check(nr.munmap, area, restorer.SCRATCH_SIZE, what="munmap of the scratch area")
            cpu.restore(rctx)
            thread.restore_masks(rctx)
            phases.mark("registers")
            for hook in hooks_at("before release"):
                hook.run(rctx)
            init_pidfd = os.pidfd_open(init)  # (traced and stopped: surely the copy's init)
            checkpoint()
            commit()
            for r in reversed([r for r in rctxs if not r.zombie]):
                release(r.pid, list(r.threads))
            release(init)
            phases.mark("release")
            stats.injected_calls += tmpl.calls + init_inj.calls
            return root, init, init_pidfd
        except BaseException as e:
            kill_and_reap(made, [t for r in rctxs for t in r.threads])
            if init_pidfd >= 0:
                os.close(init_pidfd)
            for r in rctxs:  # the threads' injectors (the processes' are cured on the way out)
                for t in r.threads.values():
                    with contextlib.suppress(PyckptError):
                        t.cure()  # its thread is gone: this closes its /proc/TID/mem fd
            if not isinstance(e, (PtraceError, RemoteCallError, OSError)):
                raise
            raise RestoreError(f"copy of the template of {self.path} failed and was undone: {e}") from e
        finally:
            for held in (tmpl, init_inj):  # never entered: cure() only closes its /proc/PID/mem fd
                if held is not None:
                    held.cure()

    def _take_fds(self, rctx: RestoreContext) -> None:
        """The copy's network namespace, then every fd pyckpt opened for the copy, into
        the root at pyckpt's numbers (processes forked from it inherit them), in one batch.
        The root holds only the template's pidfd of pyckpt (pidfd_slot): pidfd_getfd gives
        it fd 0 each time, moved to its number and closed."""
        batch = rctx.inj.batch()

        def take(n: int) -> None:
            batch.add(nr.pidfd_getfd, self.pidfd_slot, n, 0, want=0, what=f"pidfd_getfd of pyckpt's fd {n}")
            batch.add(nr.dup3, 0, n, os.O_CLOEXEC, want=n, what=f"dup3 to fd {n}")
            batch.add(nr.close, 0, want=0, what="close")

        netns_fd = rctx.passed.get(NETNS)
        if netns_fd is not None:
            take(netns_fd)
            batch.add(nr.setns, netns_fd, netns.CLONE_NEWNET, want=0,
                      what="setns into the copy's network namespace")
        for n in sorted(set(rctx.passed.values()) - {netns_fd}):
            take(n)
        batch.run()

    def _tree(self, rctxs: list[RestoreContext], made: list[int], stats: CopyStats) -> None:
        """The processes below the root: forked with their image PIDs by their parents
        (the root: a copy of the template; the others while still a copy of their parent),
        each leading its session or group first as the restore does, then each restored
        whole by the restore's own stages (restorer._fill): their memory is not shared."""
        from . import restorer

        root = rctxs[0]
        pt.request(pt.PTRACE_SETOPTIONS, root.pid, 0, pt.PTRACE_O_TRACEFORK | pt.PTRACE_O_EXITKILL,
                   "PTRACE_SETOPTIONS")
        task.make_leader(root.inj, root.image.one(task.TaskRecord))
        for rctx in rctxs:
            if rctx.zombie:
                continue
            children = [c for c in rctxs[1:] if restorer._ppid(c) == rctx.image_pid]
            if rctx is root:
                self._fork_children(root.inj, root.scratch, children, made)
                continue
            inj = Injector(rctx.pid, self.site, pt.get_regs(rctx.pid), cure_regs=False)
            with inj:
                task.make_leader(inj, rctx.image.one(task.TaskRecord))
                if children:
                    pt.request(pt.PTRACE_SETOPTIONS, rctx.pid, 0, pt.PTRACE_O_TRACEFORK | pt.PTRACE_O_EXITKILL,
                               "PTRACE_SETOPTIONS")
                    self._fork_children(inj, inj.map_scratch(), children, made)
        below = restorer.RestoreStats()
        for rctx in rctxs[1:]:
            if not rctx.zombie:
                restorer._fill(rctx, below, site=self.site)
        stats.injected_calls += below.injected_calls

    @staticmethod
    def _fork_children(inj: Injector, page: int, children: list[RestoreContext], made: list[int]) -> None:
        from . import restorer

        for child in children:
            real = restorer._fork_with_pid(inj, page, child.image_pid)
            made.append(real)
            restorer._made(child, real)
            if child.zombie:
                restorer._exit_as_zombie(inj, page, real, child.zombie.status)

    def _fill_root(self, rctx: RestoreContext, stats: CopyStats, phases: _Phases, lead: bool) -> None:
        """What fork does not give the copy's root, in the restore's order (restorer._fill);
        its injector (entered) holds the fds pyckpt opened for the copy."""
        inj = rctx.inj
        files.restore(rctx)
        if lead:  # (a tree's root leads before it forks: _tree)
            task.make_leader(inj, rctx.image.one(task.TaskRecord))
        inj.check(nr.close_range, rctx.lowest_passed, U32, 0, what="closing passed fds")
        phases.mark("files")
        thread.create_threads(rctx)
        thread.restore(rctx)
        signals.restore_pending(rctx)
        phases.mark("threads")
        for step in ordered(rctx.deferred):
            step.run()
        phases.mark("deferred")
        task.restore_from_outside(rctx)
        thread.restore_from_outside(rctx)
        creds.restore(rctx)
        thread.restore_pdeathsig(rctx)
        for t in [inj, *rctx.threads.values()]:
            t.forget_sigmask()
        for t in rctx.threads.values():
            t.cure()
        stats.injected_calls += inj.calls + sum(t.calls for t in rctx.threads.values())

    def _stopped(self) -> bool:
        """Whether the template is still there, stopped under pyckpt's ptrace."""
        from . import proc

        try:
            return self.pid != 0 and proc.read_stat(self.pid).state == "t"
        except OSError:
            return False

    def close(self) -> None:
        """Kill and reap the template (copies made from it live on until killed)."""
        if self.pid:
            kill_and_reap([self.pid])
            self.pid = 0


def _own_per_copy(v) -> bool:
    """A shared window on an object the restore makes (shared anonymous memory, a memfd,
    a deleted file): each copy maps one of its own there.  (A private window on one of
    those is not: its unwritten pages would stay the template's object's.)"""
    obj = memory.MAPPED_OBJECTS.get(v.kind)
    return v.shared and obj is not None and not obj.attaches


def _shared_objects(rctx: RestoreContext) -> list:
    """The root's shared windows on objects each copy has its own of (_own_per_copy)."""
    return [v for v in rctx.image.of_type(memory.VmaRecord) if _own_per_copy(v)]


def _own_objects(rctx: RestoreContext) -> None:
    """PREPARE of a copy's root: a new object for each it maps shared (shared anonymous
    memory, a memfd, a deleted file), holding the image's data (made as the restore makes
    them: kinds/shmem.py, memfd.py, deleted.py; an fd of the image on the same object
    gets the same one), handed to the root like its files; processes below the root map
    the same ones."""
    for v in _shared_objects(rctx):
        rctx.pass_fd(*memory.MAPPED_OBJECTS[v.kind].mapping_opener(rctx, v))


def _own_shared(rctx: RestoreContext) -> None:
    """In a copy's root (its fds taken): each shared window on such an object, which the
    fork left on the template's object, mapped again on the copy's own, in place."""
    windows = _shared_objects(rctx)
    if not windows:
        return
    batch = rctx.inj.batch()
    for v in windows:
        fd = rctx.passed[memory.MAPPED_OBJECTS[v.kind].mapping_opener(rctx, v)[0]]
        flags = memory.MAP_FIXED | memory.MAP_SHARED | (MAP_NORESERVE if "nr" in v.vmflags else 0)
        batch.add(nr.mmap, v.start, v.end - v.start, v.prot, flags, fd, v.offset, want=v.start,
                  what=f"mmap of the copy's own shared memory at {v.start:#x}")
        for flag in v.vmflags:
            advice = memory.MADVISE_FOR_FLAG.get(flag)
            if advice is not None:
                batch.add(nr.madvise, v.start, v.end - v.start, advice, want=0,
                          what=f"madvise({advice}) of the shared memory at {v.start:#x}")
    batch.run()


def _full_blocks(runs) -> list[tuple[int, int]]:
    """Ranges of whole 2 MiB blocks that `runs` (PageRuns, stored or zero) cover entirely."""
    spans: list[list[int]] = []
    for r in sorted(runs, key=lambda r: r.addr):
        lo, hi = r.addr, r.addr + r.npages * PAGE
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    out = []
    for lo, hi in spans:
        start, end = (lo + HUGE - 1) & ~(HUGE - 1), hi & ~(HUGE - 1)
        if end > start:
            out.append((start, end))
    return out


def _maps(pid: int):
    from . import proc

    return proc.read_maps(pid)


def _thread_id() -> int:
    import threading

    return threading.get_native_id()
