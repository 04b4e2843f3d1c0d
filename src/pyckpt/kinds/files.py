"""The fd table, the objref table of open file descriptions, and the file-kind registry.

The fd table and the open file descriptions behind it are kept apart, as
the objref rule wants: each `FdRecord` names a descriptor number, its
close-on-exec flag and the id of its description; a description is saved
once, by the module of its kind, under that id.  Two fds share a
description when the kernel says so (kcmp KCMP_FILE), never because their
paths match.

Each kind of file is a `FileKind` subclass registered with `@file_kind` in
its own module under kinds/: it says which fds it claims, dumps a
description into records, and at restore opens an equivalent description
*in pyckpt*, which the new task inherits (see RestoreContext.pass_fd) and
dup3s to every fd number that had it.  Work that needs the task's whole fd
table hangs off a `TableHook`: queued on `rctx.deferred` (POSIX locks), or
done right after the fds are placed (epoll items).  Adding a kind touches no
orchestration.

A description pyckpt cannot re-create because it belongs to something
outside the image (a terminal, a pipe whose other end is another process's)
is saved as an `ExternalFileRecord`; at restore the user supplies a
replacement (`fds={1: f}`), asks for pyckpt's own stdio
(`inherit_stdio=True`), or gets a clear `RestoreError`.  Nothing is dropped
silently.  Any other fd is refused at dump time with an error naming the
fd, its kind and the process.  A replacement may stand in for any fd, not
only those outside the image (see "replacements" below).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import stat

from .._dataclass import dataclass, replace

from ..arch import libc as _libc
from ..errors import RestoreError, UnsupportedFdError
from ..image import record
from ..inject import nr
from ..problems import Fix, needs
from ..proc import FdInfo, parse_fdinfo
from . import load_for_fd
from .context import DumpContext, RestoreContext, RestoreOptions
from .order import ordered

KCMP_FILE = 0
O_CLOEXEC = os.O_CLOEXEC
O_ACCMODE = 3


@record(61, scope="process")
@dataclass
class FdRecord:
    fd: int
    file_id: int
    cloexec: bool


@record(62, scope="image")
@dataclass
class ExternalFileRecord:
    """A description that belongs to something outside the image."""

    id: int
    what: str  # e.g. "terminal /dev/pts/3", "pipe:[1234] (write end)"
    flags: int


@dataclass
class DumpedFd:
    """What the fd table knows about one fd when a kind dumps its description."""

    pid: int
    fd: int
    link: str  # readlink of /proc/PID/fd/N: a path, "pipe:[ino]", "anon_inode:[eventfd]"...
    st: os.stat_result  # stat through the magic link
    info: FdInfo

    @property
    def proc_path(self) -> str:
        return f"/proc/{self.pid}/fd/{self.fd}"


class FileKind:
    """One kind of open file.  Subclass, set `records`, register with @file_kind.

    Kinds are asked in turn whether they claim an fd, in the declared order
    (kinds/order.py): a kind whose `claims` may also be true of another kind's
    fds names that kind in `before` (a socket kind: `before = ("unix",)`, which
    takes every other socket to refuse it by name).  Names are unique.

    Most kinds open their description in pyckpt before any process exists
    (`open`; the tasks inherit it).  A kind whose description needs the
    processes to exist (a pidfd names one) sets `opens_late` and implements
    `open_late` instead: it is called once per description when every process
    of the image exists, and each holder gets that very description (the same
    open file, shared across fork as before) through pidfd_getfd, right after
    its other fds are placed — before the table hooks (epoll items may watch it).
    """

    name = "file"
    records: tuple[type, ...] = ()  # description record types this kind restores
    before: tuple[str, ...] = ()  # kinds asked after this one (see above)
    after: tuple[str, ...] = ()
    opens_late = False

    def claims(self, f: DumpedFd) -> bool:
        raise NotImplementedError

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        """Records for the description of `f`; the first has `.id == file_id`."""
        raise NotImplementedError

    def open(self, rctx: RestoreContext, rec) -> int:
        """A new fd in pyckpt holding an equivalent description."""
        raise NotImplementedError

    def open_late(self, rctx: RestoreContext, rec) -> int:
        """With `opens_late`: a new fd in pyckpt holding an equivalent description,
        once every process of the image exists (`rctx.pids`)."""
        raise NotImplementedError

    def describe(self, rec) -> str:
        """Short text for `pyckpt show`."""
        return self.name


FILE_KINDS: list[FileKind] = []


class TableHook:
    """State that hangs off the whole fd table (file locks, epoll items...): dumped
    after every description is known, restored from `prepare` (usually by queueing
    deferred steps that run in the task once all its fds exist) or `restore`.
    Hooks run in the declared order (`name`, `before`, `after`: kinds/order.py)."""

    name = "table hook"
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()

    def dump(self, ctx: DumpContext, table: list) -> list:
        """Extra records, given the table's records (descriptions and FdRecords)."""
        return []

    def prepare(self, rctx: RestoreContext) -> None:
        pass

    def restore(self, rctx: RestoreContext) -> None:
        """In each task (parents first) right after its fds were placed at their
        numbers, while it still holds, above them, every fd pyckpt opened for any
        process of the image (`rctx.passed`: until the CLOSE_PASSED stage): the
        place to build an object shared by the tree once, from the first task."""


TABLE_HOOKS: list[TableHook] = []


def _register(registry: list, obj) -> None:
    """Add `obj` and put the registry in its declared order (the same whichever
    module registered first)."""
    if any(o.name == obj.name for o in registry):
        raise RuntimeError(f"{type(obj).__name__}: the name {obj.name!r} is taken by "
                           f"{next(type(o).__name__ for o in registry if o.name == obj.name)}")
    registry[:] = ordered(registry + [obj])


def table_hook(cls):
    _register(TABLE_HOOKS, cls())
    return cls


def file_kind(cls):
    _register(FILE_KINDS, cls())
    _KIND_OF_TYPE.clear()  # (a kind loaded later may take a type)
    return cls


_KIND_OF_TYPE: dict[type, FileKind | None] = {}  # record type -> the first kind taking it


def kind_of_record(rec) -> FileKind | None:
    """The file kind whose records `rec` is one of (the first in declared order), or
    None; looked up once per record type (a restore asks for every record, often)."""
    t = type(rec)
    try:
        return _KIND_OF_TYPE[t]
    except KeyError:
        pass
    kind = next((k for k in FILE_KINDS if isinstance(rec, k.records)), None)
    _KIND_OF_TYPE[t] = kind
    return kind


def description_records(image) -> list:
    """Every description record of the image (any kind, whichever process saved it),
    in image order: found once per reader (a restore asks ~10 times, and a Python
    kernel's image has ~500 records) while its list of records stays the one it was."""
    reader = getattr(image, "reader", image)
    everything = reader.records
    memo = reader.__dict__.get("_descriptions")
    if memo is None or memo[0] is not everything or memo[1] != len(everything):
        found = [r for r in everything if isinstance(r, ExternalFileRecord) or kind_of_record(r)]
        memo = reader._descriptions = (everything, len(everything), found)
    return list(memo[2])


def _kcmp_file(pid1: int, fd1: int, pid2: int, fd2: int) -> int:
    """kcmp(KCMP_FILE): 0 when fd1 of pid1 and fd2 of pid2 are one open file description,
    else 1 or 2 as the first is the lesser or the greater in the kernel's order of them."""
    r = _libc.syscall(nr.kcmp, pid1, pid2, KCMP_FILE, fd1, fd2)
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"kcmp({pid1} fd {fd1}, {pid2} fd {fd2}): {os.strerror(err)}")
    return r


def same_description(pid1: int, fd1: int, pid2: int, fd2: int) -> bool:
    """Whether fd1 of pid1 and fd2 of pid2 are one open file description (kcmp)."""
    return _kcmp_file(pid1, fd1, pid2, fd2) == 0


def _described(entries: list, pid: int, fd: int) -> tuple[int, int | None]:
    """Where fd `fd` of `pid` goes in `entries` ((pid, fd, file id) of one inode's
    descriptions, in kcmp's order of descriptions), and the file id of the entry that
    is its description (None: a new one).  A binary search: the anonymous inode that
    every eventfd and epoll shares made the walk of each one's list quadratic (~470
    kcmp calls a dump of a Jupyter kernel)."""
    lo, hi = 0, len(entries)
    while lo < hi:
        mid = (lo + hi) // 2
        other_pid, other_fd, other_id = entries[mid]
        r = _kcmp_file(pid, fd, other_pid, other_fd)
        if r == 0:
            return mid, other_id
        if r == 1:
            hi = mid
        else:
            lo = mid + 1
    return lo, None


def take_fd(pid: int, fd: int) -> int:
    """A copy in pyckpt of fd `fd` of process `pid` (pidfd_getfd): the same open
    file description, so reading its state needs no new open — and anything
    done to the description (flags, offsets) is done to the target's."""
    pidfd = os.pidfd_open(pid)
    try:
        copy = _libc.syscall(nr.pidfd_getfd, pidfd, fd, 0)
        if copy < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd of fd {fd} of process {pid}: {os.strerror(err)}")
    finally:
        os.close(pidfd)
    return copy


def set_status_flags(fd: int, flags: int, settable: int) -> int:
    """F_SETFL the dumped status flags (those of `settable`) on a new fd; closes it on failure."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & settable)
    except BaseException:
        os.close(fd)
        raise
    return fd


def kind_in_words(f: DumpedFd) -> str:
    """The fd's kind in words, for a refusal."""
    mode = f.st.st_mode
    if stat.S_ISCHR(mode):
        return "terminal or character device"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "pipe" if f.link.startswith("pipe:") else "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if f.link.startswith("anon_inode:"):
        return f.link[len("anon_inode:"):].strip("[]") + " (anon inode)"
    if stat.S_ISREG(mode) and f.link.endswith(" (deleted)"):
        return "deleted file"
    return "special file"


def dump(ctx: DumpContext) -> list:
    pid = ctx.pid
    descriptions: list = []
    fds: list[FdRecord] = []
    # The objref table is the whole image's: a description shared by processes
    # of a tree (inherited across fork) is saved once, by its first holder.
    table = ctx.objects.setdefault("fd table", {"next_id": 1, "owners": {}})
    owners = table["owners"]  # (dev, ino) -> [(pid, fd, file id)]
    for fd, st in ctx.tables.fd_stats(pid).items():
        f = DumpedFd(pid, fd, ctx.tables.fd_link(pid, fd), st, parse_fdinfo(ctx.tables.fdinfo_text(pid, fd)))
        same_inode = owners.setdefault((f.st.st_dev, f.st.st_ino), [])
        at, file_id = _described(same_inode, pid, fd)
        if file_id is None:
            load_for_fd(f.link, f.st.st_mode)  # (every kind that may claim it: kinds/__init__.py)
            kind = next((k for k in FILE_KINDS if k.claims(f)), None)
            if kind is None:
                raise UnsupportedFdError(pid, fd, kind_in_words(f), f.link)
            file_id = table["next_id"]
            table["next_id"] += 1
            recs = kind.dump(ctx, f, file_id)
            assert recs and recs[0].id == file_id
            descriptions += recs
            same_inode.insert(at, (pid, fd, file_id))
        fds.append(FdRecord(fd, file_id, bool(f.info.flags & O_CLOEXEC)))
    table = descriptions + fds
    for hook in TABLE_HOOKS:
        table += hook.dump(ctx, table)
    return table


def highest_fd(image) -> int:
    return max((r.fd for r in image.of_type(FdRecord)), default=-1)


# --- replacements (fds=) and fds outside the image ---------------------------------
#
# `fds={N: f}` replaces the open file description that fd N of the image's
# first process had: at fd N and at every fd of any process of the image that
# shared it (a dup such as 2>&1, the stdout a child inherited), whatever it was
# (a regular file, a pipe, a socket, a terminal).  An fd of the first process
# named in `fds` itself gets its own entry.  A description outside the image
# (a terminal, a pipe to another process) that the first process does not hold
# is replaced by `fds[N]` when another process held it at fd N.  What is
# replaced is not opened at all, so not checked for changes either.

PLAN = "fd replacements"


@dataclass
class Replacements:
    """What `fds=` replaces in this image (kept in RestoreContext.shared[PLAN])."""

    root_pid: int
    given: dict  # fd number -> the caller's fd (int) or a path (str/bytes)
    of_file: dict[int, int]  # description id -> the fd number whose replacement it gets
    holders: dict[int, list[tuple[int, int]]]  # description id -> (pid, fd) of every fd holding it
    flags: dict[int, int]  # fd number -> open flags of what it replaces (a path gets its access mode)


def plan_replacements(root: RestoreContext, processes: list[tuple[int, object]]) -> None:
    """Decide what `fds=` replaces (see above) before any file is opened, from
    (pid, view) of every process, the first one first.  A key that names no fd of
    the image is a problem."""
    descs = {d.id: d for d in description_records(root.image)}
    holders: dict[int, list[tuple[int, int]]] = {}
    for pid, view in processes:
        for r in view.of_type(FdRecord):
            holders.setdefault(r.file_id, []).append((pid, r.fd))
    given = dict(root.options.fds)
    root_fds = {r.fd: r.file_id for r in root.image.of_type(FdRecord)}
    of_file: dict[int, int] = {}
    for n in sorted(given):
        if n in root_fds:
            of_file.setdefault(root_fds[n], n)
    for file_id, where in holders.items():
        if file_id not in of_file and isinstance(descs.get(file_id), ExternalFileRecord):
            n = min((fd for _, fd in where if fd in given), default=None)
            if n is not None:
                of_file[file_id] = n
    for n in sorted(given):
        if n not in root_fds and n not in of_file.values():
            root.note(RestoreError(
                f"fds={{{n}: ...}}: process {root.image_pid} of the image has no fd {n} (its fds: "
                f"{', '.join(map(str, sorted(root_fds))) or 'none'}); give replacements only for "
                "fds of the image (see pyckpt show)"))
    flags = {n: getattr(descs[root_fds[n]], "flags", os.O_RDWR) for n in given if n in root_fds}
    for file_id, n in of_file.items():
        flags.setdefault(n, getattr(descs[file_id], "flags", os.O_RDWR))
    root.shared[PLAN] = Replacements(root.image_pid, given, of_file, holders, flags)


def _source(rctx: RestoreContext, r: FdRecord, desc, pid: int | None = None) -> tuple:
    """The key in rctx.passed of what the task (or process `pid` of the image) gets at fd `r.fd`."""
    plan: Replacements = rctx.shared[PLAN]
    if (rctx.image_pid if pid is None else pid) == plan.root_pid and r.fd in plan.given:
        return ("replacement", r.fd)
    if r.file_id in plan.of_file:
        return ("replacement", plan.of_file[r.file_id])
    if isinstance(desc, ExternalFileRecord):
        if rctx.options.shell_job and desc.what.startswith("terminal "):
            return ("caller's terminal", r.file_id)  # a new open of it (kinds/tty.py)
        if rctx.options.inherit_stdio and r.fd in (0, 1, 2):
            return ("stdio", r.fd)
        return ("outside", r.file_id, r.fd)  # nothing to put there: a problem
    return ("file", r.file_id)


def _replacing_fd(plan: Replacements, file_id: int) -> int:
    """The fd number whose replacement would replace this description: the first
    process's lowest holding it, else the lowest of any process."""
    where = plan.holders.get(file_id, [])
    mine = [fd for pid, fd in where if pid == plan.root_pid]
    return min(mine or [fd for _, fd in where])


def _replacement_fixes(rctx: RestoreContext, file_id: int) -> tuple[Fix, ...]:
    """`fds=` for the first process's lowest fd holding the description, if it holds
    it: replacing that avoids opening the description at all."""
    plan: Replacements = rctx.shared[PLAN]
    if any(pid == plan.root_pid for pid, _ in plan.holders.get(file_id, [])):
        return (Fix("fds", _replacing_fd(plan, file_id)),)
    return ()


def _outside(rctx: RestoreContext, r: FdRecord, ext: ExternalFileRecord) -> int:
    """An fd that belonged to something outside the image, with nothing to put there:
    refused, in one message for the description whichever fd finds it."""
    plan: Replacements = rctx.shared[PLAN]
    where = sorted(plan.holders.get(r.file_id, [(rctx.image_pid, r.fd)]),
                   key=lambda h: (h[0] != plan.root_pid, h))
    (pid, fd), rest = where[0], where[1:]
    also = ", ".join(f"fd {f}" if p == pid else f"fd {f} of process {p}" for p, f in rest)
    n = _replacing_fd(plan, r.file_id)
    stdio = all(f <= 2 for _, f in where)
    from .tty import on_outside_terminal

    terminal = ext.what.startswith("terminal ") and on_outside_terminal(rctx.image)  # a shell job
    raise needs(RestoreError(
        f"fd {fd} of process {pid} was {ext.what}{f' (and so was {also})' if also else ''}, outside "
        f"the image; pass a replacement (restore(..., fds={{{n}: f}}) or --fd {n}=PATH)"
        + (", or use inherit_stdio=True / --inherit-stdio" if stdio else "")
        + (", or restore it as a shell job on your terminal (shell_job=True / --shell-job)" if terminal else "")
    ), *((Fix("shell_job"),) if terminal else ()), *((Fix("inherit_stdio"),) if r.fd <= 2 else ()),
        Fix("fds", n))


_ACCESS = {os.O_RDONLY: "reading", os.O_WRONLY: "writing", os.O_RDWR: "reading and writing"}


@contextlib.contextmanager
def pinned_caller_fds(options: RestoreOptions):
    """`options` with the caller's fds that the restore uses — the ints of `fds=`, and
    0-2 with `inherit_stdio` — pinned: copied (F_DUPFD_CLOEXEC) before pyckpt opens a
    single file, the copies held until the block ends.  Else a number the caller left
    closed could be handed to a file pyckpt opens meanwhile (the image's pages, a file
    of the image), pass for open and be given to the restored process.  A number that
    was not open is remembered as such (refused where the restore uses it)."""
    numbers = {v for v in options.fds.values() if isinstance(v, int)}
    if options.inherit_stdio:
        numbers |= {0, 1, 2}
    pins: dict[int, int] = {}
    try:
        for n in sorted(numbers):
            try:
                pins[n] = fcntl.fcntl(n, fcntl.F_DUPFD_CLOEXEC, 3)
            except OSError as e:
                pins[n] = -(e.errno or errno.EBADF)
        yield replace(options, pinned=pins)
    finally:
        for copy in pins.values():
            if copy >= 0:
                os.close(copy)


def _caller_fd(rctx: RestoreContext, n: int) -> int:
    """A new fd in pyckpt for the caller's fd `n` as it was when the restore began
    (see pinned_caller_fds); OSError if it was not open then."""
    pins = rctx.options.pinned
    if pins is None or n not in pins:  # not pinned (restorer used directly): as it is now
        return os.dup(n)
    if pins[n] < 0:
        raise OSError(-pins[n], os.strerror(-pins[n]))
    return os.dup(pins[n])


def _open_replacement(rctx: RestoreContext, n: int, value, flags: int) -> int:
    """An fd in pyckpt for `fds[n]`: a copy of the caller's fd, or the path opened with
    the access mode the replaced fd had (created and appended to unless read-only)."""
    if isinstance(value, int):
        try:
            return _caller_fd(rctx, value)
        except OSError as e:
            raise RestoreError(f"fds={{{n}: {value}}}: fd {value} of the caller is not open "
                               f"({e.strerror}); pass an open fd, a file object or a path") from None
    access = flags & O_ACCMODE if flags & O_ACCMODE in _ACCESS else os.O_RDWR
    how = access if access == os.O_RDONLY else access | os.O_CREAT | os.O_APPEND
    path = os.fsdecode(value)
    try:
        if rctx.checking:  # see that it could be opened, without creating it
            if os.path.exists(path):
                if not os.access(path, os.R_OK if access == os.O_RDONLY else
                                 os.W_OK if access == os.O_WRONLY else os.R_OK | os.W_OK):
                    raise PermissionError(13, os.strerror(13))
            elif access == os.O_RDONLY:
                raise FileNotFoundError(2, os.strerror(2))
            else:
                parent = os.path.dirname(os.path.abspath(path))
                if not os.path.isdir(parent):
                    raise FileNotFoundError(2, os.strerror(2))
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise PermissionError(13, os.strerror(13))
            return os.open(os.devnull, os.O_RDONLY | O_CLOEXEC)
        return os.open(path, how | os.O_NOCTTY | O_CLOEXEC, 0o644)
    except OSError as e:
        raise RestoreError(f"cannot open {path!r} for {_ACCESS[access]} as fd {n} (fds={{{n}: "
                           f"{path!r}}} / --fd {n}={path}): {e.strerror}") from None


def _inherited(rctx: RestoreContext, n: int) -> int:
    try:
        return _caller_fd(rctx, n)
    except OSError as e:
        raise RestoreError(f"inherit_stdio: pyckpt's own fd {n} is not open ({e.strerror}); "
                           f"open it, or give fd {n} a replacement (fds={{{n}: f}} or "
                           f"--fd {n}=PATH)") from None


def _open_source(rctx: RestoreContext, key: tuple, r: FdRecord, desc) -> int:
    plan: Replacements = rctx.shared[PLAN]
    if key[0] == "replacement":
        return _open_replacement(rctx, key[1], plan.given[key[1]], plan.flags.get(key[1], os.O_RDWR))
    if key[0] == "stdio":
        return _inherited(rctx, key[1])
    if key[0] == "caller's terminal":
        from .tty import open_caller_terminal

        return open_caller_terminal(rctx, desc.flags)
    return _outside(rctx, r, desc)


def source_of(rctx: RestoreContext, fd: int) -> tuple | None:
    """The key in rctx.passed of what the task gets at `fd` (None: no such fd):
    ("file", id) for the description of the image, ("replacement", n) for a
    replacement from `fds=`, ("stdio", n) for pyckpt's own fd n."""
    descs = {d.id: d for d in description_records(rctx.image)}
    for r in rctx.image.of_type(FdRecord):
        if r.fd == fd:
            return _source(rctx, r, descs[r.file_id])
    return None


def sources(rctx: RestoreContext) -> dict[int, tuple]:
    """fd number -> the key in rctx.passed of what the task gets there (see source_of)."""
    descs = {d.id: d for d in description_records(rctx.image)}
    return {r.fd: _source(rctx, r, descs[r.file_id]) for r in rctx.image.of_type(FdRecord)}


def source_of_file(rctx: RestoreContext, file_id: int, fd: int | None = None) -> tuple | None:
    """The key in rctx.passed of what the processes of the image that held description
    `file_id` get in its place — a holder's at number `fd` if one held it there, else
    the first process's, else any's — whichever process asks; None if none held it."""
    plan: Replacements = rctx.shared[PLAN]
    where = plan.holders.get(file_id)
    if not where:
        return None
    pid, n = min(where, key=lambda h: (h[1] != fd, h[0] != plan.root_pid))
    descs = rctx.shared.get(DESCRIPTIONS)
    if descs is None:  # once per restore: a kind may ask for every item of a large table
        descs = rctx.shared[DESCRIPTIONS] = {d.id: d for d in description_records(rctx.image)}
    return _source(rctx, FdRecord(n, file_id, False), descs[file_id], pid)


DESCRIPTIONS = "files: descriptions by id"  # RestoreContext.shared, for source_of_file


def prepare(rctx: RestoreContext) -> None:
    """Open every description of this process in pyckpt (checked against the dump) for
    the new task, and what replaces the others; one shared by processes of a tree is
    opened once (the first process to prepare it opens it; all inherit it)."""
    descs = {d.id: d for d in description_records(rctx.image)}
    needed: set[int] = set()
    others: dict[tuple, FdRecord] = {}
    for r in rctx.image.of_type(FdRecord):
        key = _source(rctx, r, descs[r.file_id])
        if key[0] == "file":
            needed.add(r.file_id)
        else:
            others.setdefault(key, r)
    late = False
    for rec in description_records(rctx.image):  # in image order (kinds may rely on it)
        if rec.id in needed:
            kind = kind_of_record(rec)
            if kind.opens_late:
                late = True
                continue
            rctx.pass_fd(("file", rec.id), lambda kind=kind, rec=rec: kind.open(rctx, rec),
                         fixes=_replacement_fixes(rctx, rec.id))
    if late:  # the task takes late descriptions from pyckpt through this pidfd
        rctx.pass_fd(PYCKPT_PIDFD, lambda: os.pidfd_open(os.getpid()))
    for key, r in others.items():
        rctx.pass_fd(key, lambda key=key, r=r: _open_source(rctx, key, r, descs[r.file_id]))
    for hook in TABLE_HOOKS:
        rctx.collect(lambda hook=hook: hook.prepare(rctx))


PYCKPT_PIDFD = ("pyckpt's pidfd",)  # rctx.passed key: a pidfd of pyckpt, for pidfd_getfd
LATE = "files: late descriptions"  # RestoreContext.shared: file id -> its fd in pyckpt


def restore(rctx: RestoreContext) -> None:
    descs = {d.id: d for d in description_records(rctx.image)}
    late = []
    batch = rctx.inj.batch()  # every fd placed with one stop of the task
    for r in rctx.image.of_type(FdRecord):
        key = _source(rctx, r, descs[r.file_id])
        if key[0] == "file" and kind_of_record(descs[r.file_id]).opens_late:
            late.append(r)
            continue
        batch.add(nr.dup3, rctx.passed[key], r.fd, O_CLOEXEC if r.cloexec else 0, what=f"dup3 to fd {r.fd}")
    batch.run()
    for r in late:
        fd = late_fd_in_task(rctx, r.file_id)  # close-on-exec, at the lowest free number
        if fd == r.fd:  # which may be this one's
            if not r.cloexec:
                rctx.inj.check(nr.fcntl, fd, fcntl.F_SETFD, 0, what=f"clearing FD_CLOEXEC of fd {fd}")
            continue
        rctx.inj.check(nr.dup3, fd, r.fd, O_CLOEXEC if r.cloexec else 0, what=f"dup3 to fd {r.fd}")
        rctx.inj.check(nr.close, fd, what="close")
    for hook in TABLE_HOOKS:
        hook.restore(rctx)


def opens_late(rctx: RestoreContext, file_id: int) -> bool:
    """Whether description `file_id` is made once every process exists (FileKind.opens_late)."""
    rec = next((d for d in description_records(rctx.image) if d.id == file_id), None)
    kind = None if rec is None else kind_of_record(rec)
    return kind is not None and kind.opens_late


def late_fd_in_task(rctx: RestoreContext, file_id: int) -> int:
    """A new fd of the task (not at any number of the image's) holding the late
    description `file_id` (FileKind.opens_late), opened in pyckpt once for the tree;
    the caller closes it."""
    opened = rctx.shared.setdefault(LATE, {})
    if file_id not in opened:
        rec = next(d for d in description_records(rctx.image) if d.id == file_id)
        opened[file_id] = kind_of_record(rec).open_late(rctx, rec)
    return rctx.inj.check(nr.pidfd_getfd, rctx.passed[PYCKPT_PIDFD], opened[file_id], 0,
                          what=f"pidfd_getfd of file #{file_id} from pyckpt")


def close_late(shared: dict) -> None:
    """Close pyckpt's fds of late descriptions (the tasks hold their own)."""
    for fd in shared.pop(LATE, {}).values():
        os.close(fd)


def summary(image) -> list[dict]:
    """Every fd with its kind, description and sharing, for `pyckpt show`."""
    descs = {d.id: d for d in description_records(image)}
    sharing: dict[int, list[int]] = {}
    fds = image.of_type(FdRecord)
    for r in fds:
        sharing.setdefault(r.file_id, []).append(r.fd)
    out = []
    for r in fds:
        d = descs[r.file_id]
        kind = kind_of_record(d)
        out.append({
            "fd": r.fd,
            "kind": "external" if kind is None else getattr(d, "kind", kind.name),
            "what": d.what if kind is None else kind.describe(d),
            "path": d.file.path if hasattr(d, "file") else None,
            "flags": getattr(d, "flags", 0),
            "pos": getattr(d, "pos", None),
            "cloexec": r.cloexec,
            "file_id": r.file_id,
            "shared_with": [x for x in sharing[r.file_id] if x != r.fd],
        })
    return out


def validate(image) -> None:
    """fd numbers valid and unique; every fd names a saved description; ids unique;
    status flags a C int."""
    from ..errors import ImageError

    descriptions = description_records(image)
    ids = [d.id for d in descriptions]
    if len(ids) != len(set(ids)):
        raise ImageError(f"image at {image.path}: two file descriptions share an id")
    for d in descriptions:  # open file status flags: a C int
        if not 0 <= getattr(d, "flags", 0) < 1 << 31:
            raise ImageError(f"image at {image.path}: file #{d.id} has status flags out of range")
    seen: set[int] = set()
    for r in image.of_type(FdRecord):
        if not 0 <= r.fd < (1 << 20) or r.fd in seen:
            raise ImageError(f"image at {image.path}: fd {r.fd} is invalid or listed twice")
        seen.add(r.fd)
        if r.file_id not in ids:
            raise ImageError(f"image at {image.path}: fd {r.fd} refers to a missing file #{r.file_id}")
