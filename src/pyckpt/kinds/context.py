"""What a kind sees while it dumps or restores."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

from .._dataclass import dataclass, field
from .. import proc
from ..errors import PyckptError
from ..image import ImageReader, PageStoreWriter
from ..inject import Injector
from ..problems import Fix, RestoreProblem, collectable
from ..progress import Progress


@dataclass
class DumpContext:
    pid: int
    stat: proc.ProcStat
    status: dict[str, str]
    maps: list[proc.MapEntry]
    smaps_flags: proc.SmapsFlags  # (or a dict: .get(start, default) of each VMA's VmFlags)
    inj: Injector
    scratch: int  # one read-write page inside the target for injected calls
    pages: PageStoreWriter
    progress: Progress
    options: "DumpOptions" = None  # type: ignore[assignment]
    threads: dict[int, Injector] = field(default_factory=dict)  # every thread, the leader first
    tree: list[int] = field(default_factory=list)  # every process of the image, parents first
    # objref for objects below open file descriptions (a pipe's buffer, a
    # deleted file's content...): kernel identity -> the id it was saved under
    objects: dict[object, int] = field(default_factory=dict)
    precopy: object = None  # precopy.PreCopy when the root's memory was copied while it ran
    # /proc tables read once per dump (mountinfo, net/tcp...), shared by every process of it
    tables: proc.Tables = field(default_factory=proc.Tables)
    # the identities of the files it mapped, found before the freeze (memory.identities_before)
    identities: dict = field(default_factory=dict)


@dataclass
class DumpOptions:
    """What the user may tune about a dump."""

    max_deleted_size: int = 64 << 20  # content of a deleted-but-open file kept in the image
    precopy: bool = False  # copy memory while the target runs; at the freeze only what changed
    # an incremental dump: the parent image's directory (memory unchanged since it is not
    # stored again), and that image as the dump opened it (kinds/memory.ParentPages)
    parent: str | None = None
    parent_pages: object = None


@dataclass
class RestoreOptions:
    """What the user may tune about a restore."""

    # fd number of the image's first process -> what to put there instead of the
    # file it had (and at every fd that shared that file, see files.py): an fd of
    # the caller (int) or a path (str/bytes) to open with that fd's access mode
    fds: dict[int, int | str | bytes] = field(default_factory=dict)
    inherit_stdio: bool = False  # use the caller's 0/1/2 for fds 0-2 outside the image
    # accept files that changed since the dump: True for any, or paths/globs (fnmatch;
    # a pattern without "/" matches the file's name) of those that may have changed
    allow_changed_files: bool | list[str] = False
    deleted_dir: str | None = None  # where deleted files are re-created (default: where they were)
    new_pidns: bool = False  # restore into a fresh PID namespace (the image's PIDs inside it)
    new_netns: bool = False  # ... and/or a fresh network namespace (its own ports, loopback)
    trust_image: bool = False  # do what an image owned by an ordinary user says (see trust.py)
    # a process that was on a terminal outside the image gets the caller's, in the caller's
    # session and its foreground (see kinds/tty.py)
    shell_job: bool = False
    # TCP connections to peers outside the image: re-established (an in-place dump --kill
    # + restore, the peer holding its end) instead of coming back reset (kinds/tcpconn.py)
    tcp_established: bool = False
    # listening TCP port of the image -> the port it listens on instead (kinds/tcp.py): a copy
    # beside the original without a network namespace; the image's connections follow
    port_map: dict[int, int] = field(default_factory=dict)
    # the process runs before its private anonymous memory is filled: pages come on first
    # touch from a handler process (pyckpt/lazy.py); True also pushes the rest in the
    # background, "touch" only what is touched
    lazy: bool | str = False
    # The caller's fds the restore uses (the ints of `fds`; 0-2 with inherit_stdio), pinned
    # when it began (files.pinned_caller_fds): caller's number -> pyckpt's close-on-exec
    # copy, or -errno when it was not open then.  None: not pinned (used as they are).
    pinned: dict[int, int] | None = None

    def allows_changed(self, path: str) -> bool:
        """Whether `allow_changed_files` accepts a change of the file at `path`."""
        allowed = self.allow_changed_files
        if not isinstance(allowed, (list, tuple)):
            return bool(allowed)
        import fnmatch

        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(path, pat) or ("/" not in pat and fnmatch.fnmatchcase(name, pat))
                   for pat in allowed)


@dataclass
class RestoreHook:
    """A kind's function restorer.py calls at a point of every restore (see restore_hook)."""

    name: str
    point: str
    run: Callable[["RestoreContext"], None]
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


POINTS = ("prepare", "before release")
RESTORE_HOOKS: list[RestoreHook] = []


def restore_hook(point: str, name: str, *, before: tuple[str, ...] = (), after: tuple[str, ...] = ()):
    """Register a kind's function `f(rctx)` for a point of every restore, so that the
    orchestration need not know the kind:

    - "prepare": for each process of the image, before any exists, after its memory,
      task and files were prepared (open what the task will inherit, check what
      must be free, queue deferred steps with `rctx.defer`);
    - "before release": once, with the first process's context, when every process
      is complete and none runs yet.

    Hooks of one point run in the declared order (kinds/order.py)."""
    if point not in POINTS:
        raise RuntimeError(f"restore_hook: point must be one of {POINTS}, not {point!r}")

    def register(f):
        if any(h.point == point and h.name == name for h in RESTORE_HOOKS):
            raise RuntimeError(f"restore_hook: {name!r} is registered at {point!r} already")
        RESTORE_HOOKS.append(RestoreHook(name, point, f, tuple(before), tuple(after)))
        return f

    return register


@dataclass
class DumpHook:
    """A kind's function `f(ctx) -> records` the dumper calls for every process (see dump_hook)."""

    name: str
    run: Callable[["DumpContext"], list]
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


DUMP_HOOKS: list[DumpHook] = []


def dump_hook(name: str, *, before: tuple[str, ...] = (), after: tuple[str, ...] = ()):
    """Register a kind's `f(ctx) -> records`, called for every process of a dump after
    the core kinds (task, memory, files...: dumper.DUMP_KINDS) have saved theirs, in
    the declared order (kinds/order.py): a kind with state of its own beside the
    fd table and memory (SysV IPC objects) needs no line in the dumper."""

    def register(f):
        if any(h.name == name for h in DUMP_HOOKS):
            raise RuntimeError(f"dump_hook: {name!r} is registered already")
        DUMP_HOOKS.append(DumpHook(name, f, tuple(before), tuple(after)))
        return f

    return register


def dump_hooks() -> list[DumpHook]:
    from .order import ordered

    return ordered(DUMP_HOOKS)


def hooks_at(point: str) -> list[RestoreHook]:
    from .order import ordered

    return ordered([h for h in RESTORE_HOOKS if h.point == point])


AFTER_RELEASE = "context: steps after the release"  # RestoreContext.shared keys
UNDO = "context: undo steps"
WARNINGS = "context: warnings"
AT_CLOSE = "context: at the restore's end"


def run_undo(shared: dict) -> None:
    """Run (once) the undo steps kinds registered with RestoreContext.on_undo."""
    from .order import ordered

    for step in ordered(shared.pop(UNDO, [])):
        try:
            step.run()
        except Exception:
            pass  # the restore is failing already: its error is the one to report


@dataclass
class Step:
    """A step of a kind's restore, queued with RestoreContext.defer."""

    name: str
    run: Callable[[], None]
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()


@dataclass
class RestoreContext:
    image: ImageReader
    pid: int  # the new process as pyckpt sees it (ptrace, /proc); set once it exists
    progress: Progress
    options: RestoreOptions = field(default_factory=RestoreOptions)
    image_pid: int = 0  # the PID the image had, which the process sees as its own
    tid_map: dict[int, int] = field(default_factory=dict)  # image TID -> TID as pyckpt sees it
    init_pid: int = 0  # with new_pidns: the namespace's init (the root's parent)
    zombie: object = None  # the ZombieRecord when this process of the tree had exited
    pids: dict[int, int] = field(default_factory=dict)  # image PID -> PID as pyckpt sees it,
    #                                                     for every process of the image (shared)
    inj: Injector | None = None  # the leader's
    threads: dict[int, Injector] = field(default_factory=dict)  # the other threads'
    scratch: int = 0
    # File descriptors pyckpt opened for the new task.  The task is cloned
    # from pyckpt, so it inherits them at the same numbers: no path has to
    # be opened from inside it.  key -> fd number (in pyckpt and the task).
    passed: dict[object, int] = field(default_factory=dict)
    lowest_passed: int = 0  # every passed fd is >= this; every image fd is below
    deferred: list["Step"] = field(default_factory=list)  # see defer()
    # Validation: every check before the first process is made notes what it
    # refuses here instead of stopping at it, so that all of it is known (and
    # `check_restore` lists all); restore then raises the first.  Shared by the
    # tree.  `check_only`: Image.check_restore, nothing will be made.
    problems: list[RestoreProblem] = field(default_factory=list)
    check_only: bool = False
    shared: dict[str, object] = field(default_factory=dict)  # kinds' state shared by the tree
    _opening: int = 0

    @property
    def checking(self) -> bool:
        """Nothing will be made: a check, or a restore that has met a problem already.
        Kinds then skip what others could see (creating a replacement file, filling a
        FIFO, listening on a port)."""
        return self.check_only or bool(self.problems)

    def pass_fd(self, key: object, opener: Callable[[], int], *, fixes: tuple[Fix, ...] = ()) -> int | None:
        """Open a file once (cached by key) and hand it to the new task.

        An opener refuses by raising a PyckptError.  Inside another opener the
        refusal propagates to it; at the top it is a problem of the restore:
        noted (with `fixes`, the options that would avoid it, added to those the
        raise site gave with `needs`), and None is returned, so validation goes
        on and finds every problem.
        """
        if key not in self.passed:
            self._opening += 1
            try:
                fd = opener()
            except Exception as e:
                if self._opening > 1 or not collectable(e):
                    raise
                self.note(e, fixes)
                return None
            finally:
                self._opening -= 1
            try:
                moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, self.lowest_passed)
            finally:
                os.close(fd)
            self.passed[key] = moved
        return self.passed[key]

    def collect(self, step: Callable[[], object], *, fixes: tuple[Fix, ...] = ()) -> None:
        """Run a validation step; a refusal it raises is noted as a problem (see pass_fd)."""
        try:
            step()
        except Exception as e:
            if not collectable(e):
                raise
            self.note(e, fixes)

    def note(self, error: PyckptError, fixes: tuple[Fix, ...] = ()) -> None:
        """Note a problem.  The same refusal found twice (a file opened for a mapping
        and for an fd) is one problem, avoided only by what avoids both."""
        fixes = tuple(getattr(error, "fixes", ())) + tuple(f for f in fixes if f not in
                                                           getattr(error, "fixes", ()))
        for p in self.problems:
            if type(p.error) is type(error) and str(p.error) == str(error):
                p.fixes = tuple(f for f in p.fixes if f in fixes)
                return
        self.problems.append(RestoreProblem(error, fixes))

    def defer(self, name: str, run: Callable[[], None], *, before: tuple[str, ...] = (),
              after: tuple[str, ...] = (), provides: tuple[str, ...] = ()) -> None:
        """Queue `run` for the DEFERRED stage of this task: every process of the image
        exists, this task's fds are placed (late ones too) and its memory, signals and
        threads are restored; its credentials are not dropped yet and its registers
        not set.  Steps run in the declared order (kinds/order.py): `before`/`after`
        name other steps or points that steps `provide`; ties go by name, so the
        order does not depend on which kind prepared first."""
        self.deferred.append(Step(name, run, tuple(before), tuple(after), tuple(provides)))

    def after_release(self, name: str, run: Callable[[], None], *, before: tuple[str, ...] = (),
                      after: tuple[str, ...] = ()) -> None:
        """Queue `run` for once every process of the image runs (the restore is done; a
        failure then is a warning of the restore, it undoes nothing).  Declared order,
        as for `defer`; shared by the tree."""
        self.shared.setdefault(AFTER_RELEASE, []).append(Step(name, run, tuple(before), tuple(after)))

    def on_undo(self, name: str, run: Callable[[], None]) -> None:
        """Register how to remove what this kind made outside the processes (a socket
        file, a SysV segment) should the restore fail before the release; run once,
        after the processes made are killed, each step's own failure ignored."""
        self.shared.setdefault(UNDO, []).append(Step(name, run))

    def warn(self, text: str) -> None:
        """Say that the restore did something otherwise than asked (in words); the
        caller gets it (`restore_warnings`, a warning line of `pyckpt restore`)."""
        self.shared.setdefault(WARNINGS, []).append(text)

    def at_close(self, run: Callable[[], None]) -> None:
        """Run `run` when the restore ends, whichever way (close_passed), before pyckpt's
        copies of the passed fds are closed."""
        self.shared.setdefault(AT_CLOSE, []).append(run)

    def close_passed(self) -> None:
        from .files import close_late

        for run in self.shared.pop(AT_CLOSE, []):
            run()
        close_late(self.shared)
        for fd in self.passed.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.passed.clear()
