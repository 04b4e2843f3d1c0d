"""File locks: POSIX (fcntl F_SETLK), OFD (F_OFD_SETLK) and flock locks.

Who owns a lock decides how it is saved and set again:

- a POSIX lock belongs to the process (its fd table): /proc/locks shows the
  PID; it is set again from inside the restored task with F_SETLK;
- an OFD lock and a flock lock belong to the open file description: they
  are shared by every fd (and every process) holding that description,
  /proc/locks shows -1 (OFD) or the PID that took it (flock, even after that
  process is gone), so only fdinfo ties them to a description.

Dump reads the `lock:` lines of one fd of every description
(/proc/PID/fdinfo/N lists the granted locks on that description owned by it
or by the process's fd table, never waiters), and checks against
/proc/locks that every POSIX lock of the PID was found.  A request the task
is blocked in (F_SETLKW, flock without LOCK_NB; `->` lines of /proc/locks)
is not a held lock and is not saved: the task's syscall is restarted after
restore and it goes back to waiting.  Leases (F_SETLEASE) are refused.

Validation (before any process exists) looks in /proc/locks for a lock
that conflicts with one of the image, on the file pyckpt opened for the
task, and refuses with LockConflictError.  Restore queues one deferred step
that runs inside the task once its whole fd table exists.  It never waits:
POSIX and OFD locks are set with F_SETLK / F_OFD_SETLK, flock with LOCK_NB.
If someone else holds a conflicting lock, the file system is not what it
was at dump time: LockConflictError names the path, the lock and the
holder's PID (from /proc/locks; an OFD or flock holder is found through the
fdinfo of the processes having that description open), and the restorer
removes the half-made task.  An OFD or flock lock on a description the
target shared with a process outside the image (a parent it inherited the
fd from) stays with that process when the target is killed: validation then
meets it and refuses the same way, naming that process.
"""

from __future__ import annotations

import errno
import os
import struct
from .._dataclass import dataclass

from ..errors import DumpError, ImageError, LockConflictError, RestoreError, UnsupportedError, describe
from ..image import record
from ..inject import nr
from ..proc import read_fdinfo, read_mountinfo
from ..proc.locks import LockLine, parse_fdinfo_locks, read_fdinfo_locks, read_locks
from .context import DumpContext, RestoreContext
from .files import FdRecord, TableHook, source_of, table_hook

F_SETLK, F_OFD_SETLK = 6, 37
F_RDLCK, F_WRLCK = 0, 1
LOCK_SH, LOCK_EX, LOCK_NB = 1, 2, 4
SEEK_SET = 0
# struct flock on x86-64: short l_type, short l_whence, (pad) off_t l_start,
# off_t l_len, pid_t l_pid, (pad): 32 bytes.
FLOCK_STRUCT = struct.Struct("<hh4xqqi4x")
assert FLOCK_STRUCT.size == 32

KINDS = {"POSIX": "posix", "OFDLCK": "ofd", "FLOCK": "flock"}
TYPES = {"READ": "read", "WRITE": "write"}


@record(90, scope="process")
@dataclass
class FileLockRecord:
    """One granted lock, set again through fd `fd` (which holds description `file_id`)."""


    file_id: int
    fd: int
    kind: str  # "posix", "ofd" or "flock"
    type: str  # "read" or "write" (flock: shared or exclusive)
    start: int  # first byte (flock: 0)
    end: int | None  # last byte, inclusive; None: to EOF, whatever the length (flock: None)
    path: str  # for messages


def lock_in_words(kind: str, type_: str, start: int, end: int | None) -> str:
    """'POSIX write lock on bytes 0-9', 'OFD read lock on bytes 100-EOF', 'flock exclusive lock'."""
    if kind == "flock":
        return f"flock {'exclusive' if type_ == 'write' else 'shared'} lock"
    last = "EOF" if end is None else str(end)
    return f"{'POSIX' if kind == 'posix' else 'OFD'} {type_} lock on bytes {start}-{last}"


def _record_words(rec: FileLockRecord) -> str:
    return lock_in_words(rec.kind, rec.type, rec.start, rec.end)


def _line_words(line: LockLine) -> str:
    return lock_in_words(KINDS.get(line.kind, line.kind), TYPES.get(line.type, line.type.lower()),
                         line.start, line.end)


# -- dump ---------------------------------------------------------------------

def _locks_of_description(pid: int, fd: int, file_id: int, fdinfo: str | None = None,
                          path: str | None = None) -> list[tuple[FileLockRecord, LockLine]]:
    """The locks on fd's description, from its fdinfo (`fdinfo`: its text, already read;
    `path`: the fd's link, already read)."""
    if path is None:
        path = os.readlink(f"/proc/{pid}/fd/{fd}")
    out = []
    for line in read_fdinfo_locks(pid, fd) if fdinfo is None else parse_fdinfo_locks(fdinfo):
        if line.waiter:  # fdinfo lists granted locks only; be safe
            continue
        if line.kind in ("LEASE", "DELEG"):
            raise UnsupportedError(
                f"process {pid}: fd {fd} ({path}) holds a {line.type.lower()} lease (F_SETLEASE); "
                "pyckpt cannot save leases — release it (fcntl F_SETLEASE, F_UNLCK) and dump again", pid=pid
            )
        if line.kind not in KINDS or line.type not in TYPES:
            raise UnsupportedError(
                f"process {pid}: fd {fd} ({path}) holds a lock pyckpt does not know "
                f"({line.kind} {line.state} {line.type}); release it and dump again", pid=pid
            )
        kind = KINDS[line.kind]
        if kind == "posix" and line.pid != pid:
            raise UnsupportedError(
                f"process {pid}: fd {fd} ({path}) carries a POSIX lock of process {line.pid} "
                "(a shared fd table?); pyckpt cannot save it", pid=pid
            )
        start, end = (0, None) if kind == "flock" else (line.start, line.end)
        out.append((FileLockRecord(file_id, fd, kind, TYPES[line.type], start, end, path), line))
    return out


@table_hook
class FileLocks(TableHook):
    name = "file locks"
    # set from inside the task once its fds are placed; epoll's moves of fd numbers
    # (closing one for a moment drops its POSIX locks) must be over by then
    after = ("epoll items",)

    def dump(self, ctx: DumpContext, table: list) -> list:
        pid = ctx.pid
        first_fd: dict[int, int] = {}
        for r in table:
            if isinstance(r, FdRecord):
                first_fd.setdefault(r.file_id, r.fd)
        saved: list[FileLockRecord] = []
        for file_id, fd in sorted(first_fd.items()):
            try:
                found = _locks_of_description(pid, fd, file_id, ctx.tables.fdinfo_text(pid, fd),
                                              ctx.tables.fd_link(pid, fd))
            except OSError as e:
                raise DumpError(f"reading the locks of fd {fd} of process {pid} failed: {e}") from e
            saved += [rec for rec, _ in found]
        # /proc/locks is not read here: every POSIX lock of the process is on a
        # file it has open (closing any fd of a file drops them) and so shows in
        # that fd's fdinfo; and reading /proc/locks costs ~15 ms of freeze
        # time on this machine even when it is empty.
        return saved

    def prepare(self, rctx: RestoreContext) -> None:
        recs = rctx.image.of_type(FileLockRecord)
        if not recs:
            return
        fds = {r.fd: r.file_id for r in rctx.image.of_type(FdRecord)}
        for rec in recs:
            _validate(rec, fds)
        for rec in recs:
            # Validation: a conflicting lock someone holds now refuses the restore
            # before any process is made.  Setting the lock (below) still
            # fails cleanly if one is taken in between.
            key = source_of(rctx, rec.fd)
            if key is not None and key[0] == "file" and rctx.passed.get(key) is not None:
                rctx.collect(lambda rec=rec, fd=rctx.passed[key]: check_free(rctx, rec, fd))
        rctx.defer("file locks", lambda: restore_locks(rctx, recs))


def _validate(rec: FileLockRecord, fds: dict[int, int]) -> None:
    bad = None
    if rec.kind not in ("posix", "ofd", "flock"):
        bad = f"unknown kind {rec.kind!r}"
    elif rec.type not in ("read", "write"):
        bad = f"unknown type {rec.type!r}"
    elif rec.start < 0 or (rec.end is not None and rec.end < rec.start):
        bad = f"bad range {rec.start}-{rec.end}"
    elif fds.get(rec.fd) != rec.file_id:
        bad = f"fd {rec.fd} does not hold file {rec.file_id}"
    if bad:
        raise ImageError(f"lock record on {rec.path!r}: {bad}; the image is damaged")


# -- restore ------------------------------------------------------------------

def restore_locks(rctx: RestoreContext, recs: list[FileLockRecord]) -> None:
    """Set every lock from inside the task, never waiting (a deferred step)."""
    inj = rctx.inj
    for rec in recs:
        if rec.kind == "flock":
            r = inj.call(nr.flock, rec.fd, (LOCK_EX if rec.type == "write" else LOCK_SH) | LOCK_NB)
        else:
            length = 0 if rec.end is None else rec.end - rec.start + 1
            inj.write(rctx.scratch, FLOCK_STRUCT.pack(F_WRLCK if rec.type == "write" else F_RDLCK,
                                                      SEEK_SET, rec.start, length, 0))
            cmd = F_SETLK if rec.kind == "posix" else F_OFD_SETLK
            r = inj.call(nr.fcntl, rec.fd, cmd, rctx.scratch)
        if r >= 0 or r <= -4096:
            continue
        err = -r
        if err in (errno.EAGAIN, errno.EACCES):
            holder, pids = find_holders(rctx.pid, rec)
            raise LockConflictError(rctx.pid, rec.fd, rec.path, _record_words(rec), holder, pids)
        raise RestoreError(
            f"setting the {_record_words(rec)} of process {rctx.pid} on {rec.path!r} "
            f"(fd {rec.fd}) failed: {os.strerror(err)}"
        )


def _conflicts(rec: FileLockRecord, line: LockLine) -> bool:
    if line.waiter or line.type not in TYPES:
        return False
    if rec.type == "read" and line.type == "READ":
        return False
    if rec.kind == "flock":
        return line.kind == "FLOCK"
    return line.kind in ("POSIX", "OFDLCK") and line.overlaps(rec.start, rec.end)


def check_free(rctx: RestoreContext, rec: FileLockRecord, fd: int) -> None:
    """Before the task exists: refuse `rec` when a lock that conflicts with it is held
    now (`fd`: pyckpt's own copy of the file the task will get)."""
    try:
        dev, ino = _lock_file_key(os.getpid(), fd)
        lines = [line for line in read_locks()
                 if line.dev == dev and line.ino == ino and _conflicts(rec, line)]
    except OSError:
        return  # the lock is set from inside the task, which finds any conflict
    if lines:
        holder, pids = _holders_in_words(lines, exclude={os.getpid()})
        raise LockConflictError(rctx.image_pid, rec.fd, rec.path, _record_words(rec), holder, pids)


def find_holders(pid: int, rec: FileLockRecord) -> tuple[str, list[int]]:
    """Words naming the conflicting locks and who holds them, and the holders' PIDs.

    `pid` is the task being restored (its own locks are not conflicts).
    """
    try:
        dev, ino = _lock_file_key(pid, rec.fd)
        lines = [line for line in read_locks()
                 if line.dev == dev and line.ino == ino and _conflicts(rec, line)
                 and not (line.kind == "POSIX" and line.pid == pid)]
    except OSError:
        lines = []
    return _holders_in_words(lines, exclude={pid, os.getpid()})


def _holders_in_words(lines: list[LockLine], exclude: set[int]) -> tuple[str, list[int]]:
    if not lines:
        return "a lock held by another process", []
    words, pids = [], []
    for line in lines:
        if line.kind == "POSIX":
            who = [line.pid]
        else:  # the lock belongs to a description: find the processes holding it
            who = _description_holders(line, exclude=exclude)
            if not who and line.pid > 0:
                who = [line.pid]
        pids += [p for p in who if p not in pids]
        holders = ", ".join(f"process {p} ({_name(p)})" for p in who) or "an unknown process"
        what = _line_words(line)
        words.append(f"{'an' if what.startswith('OFD') else 'a'} {what} held by {holders}")
    return "; ".join(words), pids


def _lock_file_key(pid: int, fd: int) -> tuple[tuple[int, int], int]:
    """((major, minor), inode) of fd's file as /proc/locks prints it: the super
    block's device (mountinfo, by the fd's mnt_id) and fdinfo's inode — stat's
    st_dev may differ from it (btrfs subvolumes, overlayfs)."""
    info = read_fdinfo(pid, fd)
    for m in read_mountinfo(pid):  # (at restore, for one lock: not worth a cache)
        if m.mnt_id == info.mnt_id:
            return (m.major, m.minor), info.ino
    st = os.stat(f"/proc/{pid}/fd/{fd}")
    return (os.major(st.st_dev), os.minor(st.st_dev)), st.st_ino


def _name(pid: int) -> str:
    d = describe(pid)
    return d.split("name=", 1)[1] if "name=" in d else "gone"


def _description_holders(line: LockLine, exclude: set[int], limit: int = 8) -> list[int]:
    """PIDs whose fdinfo shows the OFD/flock lock `line` (they hold its description)."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        p = int(entry)
        try:
            fds = os.listdir(f"/proc/{p}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                mine = read_fdinfo_locks(p, int(fd))
            except (OSError, ValueError):
                continue
            if any(m.kind == line.kind and m.dev == line.dev and m.ino == line.ino
                   and m.type == line.type and m.start == line.start and m.end == line.end
                   for m in mine):
                found.append(p)
                break
        if len(found) >= limit:
            break
    return found
