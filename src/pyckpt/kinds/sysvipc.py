"""SysV shared memory: the segments the image's processes have attached.

A SysV segment attached by a process shows in /proc/PID/maps as
"/SYSV<key> (deleted)"; the inode of that mapping is the segment's id
(shmid).  Each segment is saved ONCE per tree (objref by device and
inode) as a `SysvShmRecord`: its id, key, size, permission bits and
owner, its creator's ids and PID, whether it was marked for removal
(IPC_RMID, the SHM_DEST bit: the key then reads as IPC_PRIVATE, 0) or
locked (SHM_LOCK), and its content (read through /proc/PID/map_files,
holes stay holes).  Every attached VMA is a window on it, with its offset
(`VmaRecord.kind == "sysv_shm"`).  What is read comes from the target's own
IPC namespace (pyckpt enters it with setns when it is another).

Restore re-creates each segment once, in the IPC namespace of the restored
processes, with the SAME id (through /proc/sys/kernel/shm_next_id, as CRIU
does) and key, size, mode and owner, writes its content, and each process
attaches it again with an injected shmat() at every address it had it
attached (parts of an attachment that were unmapped are unmapped again,
protections changed with mprotect are set again), so shm_nattch counts the
restored processes as before.  A segment marked for removal is created,
attached by every process, and only then removed again (IPC_RMID): it
lives as long as its attachments, as before.

Where: a restore with new_pidns puts its processes in a new IPC namespace
too (restorer: CLONE_NEWIPC with the PID namespace), so copies side by side
get their own segments under the same ids and keys.  A restore in place
uses pyckpt's IPC namespace: an id (its slot) or a key taken there by
another segment is refused before anything is made (`IpcInUseError`,
naming the id and key; the way out is new_pidns, or removing the
segment).  One exception: the segment the dumped process itself left
behind when it was killed — same id, key, size, creator PID and owner, and
attached by nobody (postgres never removes its segment while it runs) — is
the image's own segment: it is taken over, its content replaced by the
image's.

Semaphore sets and message queues: nothing is mapped or open, so what a
process uses is told as far as the kernel tells.  When the tree has an IPC
namespace of its own (not pyckpt's: a container, a copy restored with
new_pidns, `unshare --ipc`), every set and queue in it can only be the
tree's and all are saved (as CRIU saves a tree's own IPC namespace) — and
so are the segments of such a namespace that no process attaches (pyckpt
attaches one read-only for a moment to read it).  In a namespace shared
with others, the sets one of whose semaphores a process of the tree
changed last (GETPID: semop, SETVAL) and the queues a process of the tree
sent to or received from last (lspid, lrpid); a set or queue the tree uses
that another process touched last is missed.  Each set is saved with its
values (`SysvSemRecord`), each queue with its messages in order
(`SysvMsgRecord`; read with msgrcv(MSG_COPY), which consumes nothing and
needs CONFIG_CHECKPOINT_RESTORE), with key, id, mode and owner.  Restore
re-creates them under the same ids (sem_next_id, msg_next_id) before the
processes run: in a new IPC namespace with new_pidns; in place in pyckpt's,
where an id slot or key taken is an `IpcInUseError` found before anything
is made — except by the tree's own set or queue left behind (sets and
queues outlive their processes: same id, key and owner), which is taken
over and given the image's values or messages again.

Not saved: the creator's user and group ids (a re-created object's are
pyckpt's), the creator and last PIDs and the times (the kernel sets them);
semaphore undo adjustments (SEM_UNDO: a restored process that exits does
not undo what it did before the dump) and the processes waiting on a set
or queue (they wait again: their syscall restarts); a queue's size limit
above msgmnb (raising it needs CAP_SYS_RESOURCE); segments nobody in the
image has attached, in a namespace shared with pyckpt.  Huge-page segments
(SHM_HUGETLB) are refused.  An
image owned by an ordinary user (trust.py) may hold only objects of that
user's, and no locked segment.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat

from .._dataclass import dataclass, field

from .. import proc
from ..arch import libc as _libc
from ..proc.misc import ShmEntry, parse_shm_table
from ..errors import ImageError, IpcInUseError, RestoreError, UnsupportedError
from ..image import record
from ..inject import nr
from ..problems import Fix, needs
from .context import DumpContext, RestoreContext, dump_hook, restore_hook
from .deleted import ContentRun, check_size, store_content
from .fileid import FileIdentity
from .memory import PAGE, PROT_EXEC, PROT_READ, PROT_WRITE, MappedObject, VmaRecord, mapped_object

def shm_key(name: str) -> int | None:
    """The key of a SysV segment's mapping name ("/SYSV" + 8 lower-case hex digits +
    " (deleted)": what re.fullmatch(r"/SYSV([0-9a-f]{8}) \\(deleted\\)", name) takes),
    else None.  (No `re`: every dump asks it of every mapping.)"""
    if len(name) == 23 and name.startswith("/SYSV") and name.endswith(" (deleted)") \
            and all(c in "0123456789abcdef" for c in name[5:13]):
        return int(name[5:13], 16)
    return None
IPC_CREAT, IPC_EXCL = 0o1000, 0o2000
IPC_RMID, IPC_SET, IPC_STAT = 0, 1, 2
SHM_LOCK = 11
SHM_RDONLY, SHM_EXEC = 0o10000, 0o100000
SHM_DEST, SHM_LOCKED = 0o1000, 0o2000
CLONE_NEWIPC = 0x08000000
IPCMNI = 32768  # ids are seq * IPCMNI + slot
NEXT_ID = "kernel/shm_next_id"  # under /proc/sys (proc.write_sys), of this thread's IPC namespace


class _IpcPerm(ctypes.Structure):
    _fields_ = [("key", ctypes.c_int), ("uid", ctypes.c_uint), ("gid", ctypes.c_uint),
                ("cuid", ctypes.c_uint), ("cgid", ctypes.c_uint), ("mode", ctypes.c_uint),
                ("seq", ctypes.c_ushort), ("pad2", ctypes.c_ushort),
                ("unused1", ctypes.c_ulong), ("unused2", ctypes.c_ulong)]


class _ShmidDs(ctypes.Structure):
    _fields_ = [("perm", _IpcPerm), ("segsz", ctypes.c_size_t), ("atime", ctypes.c_long),
                ("dtime", ctypes.c_long), ("ctime", ctypes.c_long), ("cpid", ctypes.c_int),
                ("lpid", ctypes.c_int), ("nattch", ctypes.c_ulong), ("unused4", ctypes.c_ulong),
                ("unused5", ctypes.c_ulong)]



@record(120, scope="image")
@dataclass
class SysvShmRecord:
    """One SysV shared memory segment, saved once for all its attachments."""

    id: int  # object id
    shmid: int
    key: int  # 0 (IPC_PRIVATE) when created so or marked for removal
    mode: int  # permission bits with SHM_DEST (marked for removal) and SHM_LOCKED
    uid: int
    gid: int
    cuid: int
    cgid: int
    cpid: int  # creator's PID (how a leftover of the dumped process is told)
    size: int
    dev: int  # of the segment's file at dump time: how VMAs name it (with ino = shmid)
    name_key: int  # the key it was created with ("/SYSV<key>"; kept when marked for removal)
    runs: list[ContentRun]

    def stored_runs(self) -> list[tuple[int, int, int]]:
        return [(r.offset, r.stored, r.xxh3) for r in self.runs]

    def describe(self) -> str:
        return f"SysV shared memory segment key {self.key:#010x} id {self.shmid}"


def _shm_table() -> list[ShmEntry]:
    return parse_shm_table(proc.read_sysvipc_text("shm"))


@contextlib.contextmanager
def ipc_namespace(ns_path: str):
    """Run the block in the IPC namespace of `ns_path` (/proc/PID/ns/ipc): this
    thread enters it with setns and comes back after; nothing when it is ours."""
    if os.stat(ns_path).st_ino == os.stat("/proc/thread-self/ns/ipc").st_ino:
        yield
        return
    back = os.open("/proc/thread-self/ns/ipc", os.O_RDONLY | os.O_CLOEXEC)
    try:
        there = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(there, CLONE_NEWIPC) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"cannot enter the IPC namespace {ns_path}: {os.strerror(err)}")
        finally:
            os.close(there)
        try:
            yield
        finally:
            if _libc.setns(back, CLONE_NEWIPC) != 0:  # cannot fail for our own namespace
                raise OSError(ctypes.get_errno(), "cannot return to pyckpt's IPC namespace")
    finally:
        os.close(back)


# --- dump ---------------------------------------------------------------------


@mapped_object
class SysvSharedMemory(MappedObject):
    kind = "sysv_shm"
    attaches = True  # memory.restore_layout calls attach() instead of mmap

    def claims_mapping(self, name: str) -> bool:
        return shm_key(name) is not None

    def dump_mapping(self, ctx: DumpContext, map_path: str, name: str) -> tuple[FileIdentity, list]:
        st = os.stat(map_path)
        shmid = st.st_ino
        key = ("sysv shm", st.st_dev, shmid)
        recs = []
        if key not in ctx.objects:
            what = (f"process {ctx.pid}: memory at {map_path.rsplit('/', 1)[1]} is SysV shared memory "
                    f"segment key {shm_key(name):#010x} id {shmid}")
            _same_namespace_as_root(ctx, what)
            start = int(map_path.rsplit("/", 1)[1].split("-")[0], 16)
            if "ht" in ctx.smaps_flags.get(start, []):
                raise UnsupportedError(f"{what}, of huge pages (SHM_HUGETLB); pyckpt cannot save it yet — "
                                       "detach it in the target", pid=ctx.pid)
            with ipc_namespace(f"/proc/{ctx.pid}/ns/ipc"):
                entry = next((e for e in _shm_table() if e.shmid == shmid), None)
            if entry is None or not stat.S_ISREG(st.st_mode):
                raise UnsupportedError(f"{what}, which its IPC namespace does not list (a huge-page "
                                       "segment?); pyckpt cannot save it — detach it in the target",
                                       pid=ctx.pid)
            check_size(ctx, what, entry.size)
            fd = os.open(map_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                try:
                    runs = store_content(ctx, fd, entry.size, "dump SysV shared memory")
                except OSError as e:
                    raise UnsupportedError(f"{what}, whose content cannot be read ({e.strerror}); "
                                           "pyckpt cannot save it", pid=ctx.pid) from None
            finally:
                os.close(fd)
            ctx.objects[key] = len(ctx.objects) + 1
            recs.append(SysvShmRecord(ctx.objects[key], shmid, entry.key, entry.mode, entry.uid, entry.gid,
                                      entry.cuid, entry.cgid, entry.cpid, entry.size, st.st_dev,
                                      shm_key(name), runs))
        return FileIdentity(name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), recs

    # --- restore ---

    def prepare_mapping(self, rctx: RestoreContext, v: VmaRecord) -> None:
        rec = segment_of(rctx.image, v)
        done = rctx.shared.setdefault("sysv shm checked", set())
        if rec.id in done:
            return
        done.add(rec.id)
        if not rctx.options.new_pidns:
            rctx.collect(lambda: _check_free_here(rec))

    def attach(self, rctx: RestoreContext, v: VmaRecord) -> None:
        rec = segment_of(rctx.image, v)
        state = _state(rctx)
        made = state.made.get(rec.id)
        if made is None:
            made = state.made[rec.id] = _make(rctx, rec, state)
        base = v.start - v.offset
        windows = [w for w in rctx.image.of_type(VmaRecord)
                   if w.kind == self.kind and w.file.ino == v.file.ino and w.file.dev == v.file.dev
                   and w.start - w.offset == base]
        writable = any(w.prot & PROT_WRITE for w in windows)
        executable = any(w.prot & PROT_EXEC for w in windows)
        given = PROT_READ | (PROT_WRITE if writable else 0) | (PROT_EXEC if executable else 0)
        inj = rctx.inj
        if (rctx.pid, base) not in state.attached:
            flags = (0 if writable else SHM_RDONLY) | (SHM_EXEC if executable else 0)
            got = inj.check(nr.shmat, made.shmid, base, flags,
                            what=f"shmat of {rec.describe()} at {base:#x}")
            if got != base:
                raise RestoreError(f"process {rctx.image_pid}: {rec.describe()} was attached at "
                                   f"{got:#x}, not at {base:#x}")
            state.attached.add((rctx.pid, base))
            # what the image's attachment no longer covers (unmapped since) goes again
            end = base + -(-rec.size // PAGE) * PAGE
            pos = base
            for w in sorted(windows, key=lambda w: w.start):
                if w.start > pos:
                    inj.check(nr.munmap, pos, w.start - pos, what=f"munmap in {rec.describe()}")
                pos = max(pos, w.end)
            if pos < end:
                inj.check(nr.munmap, pos, end - pos, what=f"munmap in {rec.describe()}")
        if v.prot != given:
            inj.check(nr.mprotect, v.start, v.end - v.start, v.prot, what=f"mprotect of {rec.describe()} at {v.start:#x}")


def segment_of(image, v: VmaRecord) -> SysvShmRecord:
    """The segment VMA `v` is a window on (any process of the image may have saved it)."""
    reader = getattr(image, "reader", image)
    for rec in reader.of_type(SysvShmRecord):
        if (rec.dev, rec.shmid) == (v.file.dev, v.file.ino):
            return rec
    raise ImageError(f"image at {image.path}: the SysV shared memory mapped at {v.start:#x} ({v.name}) "
                     "is missing", path=image.path)


# --- restore ------------------------------------------------------------------


@dataclass
class _Made:
    shmid: int
    ns: int  # an fd of the IPC namespace it lives in
    adopted: bool
    remove: bool  # marked for removal in the image: removed once every process attached it


@dataclass
class _State:
    made: dict[int, _Made] = field(default_factory=dict)
    attached: set = field(default_factory=set)
    others: list = field(default_factory=list)  # (ns fd, "sem"/"msg", id) made, for undo


def _state(rctx: RestoreContext) -> _State:
    if "sysv shm" not in rctx.shared:
        rctx.on_undo("sysv ipc objects", lambda: undo(rctx))  # the segments it created go
    return rctx.shared.setdefault("sysv shm", _State())


def _leftover(rec: SysvShmRecord, e: ShmEntry) -> bool:
    """Whether `e` is the image's own segment, left behind by the dumped (killed) process."""
    return (e.shmid == rec.shmid and e.key == rec.key and rec.key != 0 and e.size == rec.size
            and e.cpid == rec.cpid and (e.cuid, e.cgid) == (rec.cuid, rec.cgid) and e.nattch == 0
            and not e.mode & SHM_DEST)


def _conflict(rec: SysvShmRecord, table: list[ShmEntry]) -> ShmEntry | None:
    for e in table:
        if _leftover(rec, e):
            return None
    for e in table:
        if e.shmid % IPCMNI == rec.shmid % IPCMNI or (rec.key != 0 and e.key == rec.key):
            return e
    return None


def _check_free_here(rec: SysvShmRecord) -> None:
    """In place: the segment's id slot and key must be free in pyckpt's IPC namespace."""
    e = _conflict(rec, _shm_table())
    if e is not None:
        raise needs(IpcInUseError(rec.describe(), f"SysV shared memory segment key {e.key:#010x} id "
                                  f"{e.shmid} (attached {e.nattch} times)", f"ipcrm -m {e.shmid}"),
                    Fix("new_pidns"))


def _make(rctx: RestoreContext, rec: SysvShmRecord, state: _State) -> _Made:
    """Create (or take over) the segment in the IPC namespace of the restored process
    and fill it; it is not yet removed (see finish)."""
    ns = os.open(f"/proc/{rctx.pid}/ns/ipc", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with ipc_namespace(f"/proc/self/fd/{ns}"):
            table = _shm_table()
            adopted = any(_leftover(rec, e) for e in table)
            if not adopted:
                e = _conflict(rec, table)
                if e is not None:  # taken since the check
                    raise needs(IpcInUseError(rec.describe(), f"SysV shared memory segment key "
                                              f"{e.key:#010x} id {e.shmid}", f"ipcrm -m {e.shmid}"),
                                Fix("new_pidns"))
                shmid = _create(rec)
            else:
                shmid = rec.shmid
            made = _Made(shmid, ns, adopted, bool(rec.mode & SHM_DEST))
            try:
                _fill(rctx, rec, shmid, zero=adopted)
                ds = _ShmidDs()
                _shmctl(shmid, IPC_STAT, ds, rec)
                ds.perm.uid, ds.perm.gid, ds.perm.mode = rec.uid, rec.gid, rec.mode & 0o777
                _shmctl(shmid, IPC_SET, ds, rec)
                if rec.mode & SHM_LOCKED:
                    _shmctl(shmid, SHM_LOCK, None, rec)
            except BaseException:
                if not adopted:
                    _shmctl(shmid, IPC_RMID, None, rec, check=False)
                raise
    except BaseException:
        os.close(ns)
        raise
    return made


def _create(rec: SysvShmRecord) -> int:
    """shmget a new segment under the image's id (shm_next_id: the kernel forgets it
    once an id was given) and key."""
    keys = [rec.key]
    if rec.key == 0 and rec.name_key != 0 and rec.mode & SHM_DEST:
        # marked for removal: created under its first key again (its name in
        # /proc/PID/maps) when that is free, and removed (made private) in finish()
        keys.insert(0, rec.name_key)
    for key in keys:
        proc.write_sys(NEXT_ID, str(rec.shmid))
        shmid = _libc.shmget(key, rec.size, IPC_CREAT | IPC_EXCL | 0o600)
        if shmid >= 0 or ctypes.get_errno() != errno.EEXIST:
            break
    if shmid < 0:
        err = ctypes.get_errno()
        raise RestoreError(f"cannot re-create {rec.describe()}: shmget failed: {os.strerror(err)}")
    if shmid != rec.shmid:
        _shmctl(shmid, IPC_RMID, None, rec, check=False)
        raise needs(IpcInUseError(rec.describe(), f"its id's slot (it got id {shmid})", "ipcrm"),
                    Fix("new_pidns"))
    return shmid


def _shmctl(shmid: int, cmd: int, ds, rec: SysvShmRecord, *, check: bool = True) -> None:
    r = _libc.shmctl(shmid, cmd, ctypes.byref(ds) if ds is not None else None)
    if r < 0 and check:
        err = ctypes.get_errno()
        raise RestoreError(f"shmctl({cmd}) of the re-created {rec.describe()} failed: {os.strerror(err)}")


def _fill(rctx: RestoreContext, rec: SysvShmRecord, shmid: int, *, zero: bool) -> None:
    """Write the image's content into the segment through an attachment of pyckpt's own."""
    addr = _libc.shmat(shmid, None, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        err = ctypes.get_errno()
        raise RestoreError(f"cannot attach the re-created {rec.describe()}: {os.strerror(err)}")
    try:
        if zero:
            ctypes.memset(addr, 0, rec.size)
        pages = rctx.pass_fd("pages", lambda: rctx.image.open_pages())
        with rctx.progress.bar(sum(r.length for r in rec.runs), "restore SysV shared memory") as bar:
            for r in rec.runs:
                done = 0
                while done < r.length:
                    n = min(4 << 20, r.length - done)
                    buf = (ctypes.c_char * n).from_address(addr + r.file_offset + done)
                    got = os.preadv(pages, [memoryview(buf).cast("B")], r.offset + done)
                    if got <= 0:
                        raise OSError(5, f"short read of the page store at offset {r.offset + done}")
                    done += got
                    bar.update(got)
    finally:
        _libc.shmdt(addr)


@restore_hook("before release", "sysv ipc: removals and namespace objects")
def finish(rctx: RestoreContext) -> None:
    """Every process attached its segments: remove those that were marked for removal;
    then re-create the semaphore sets and message queues of an image whose tree had
    its own IPC namespace (see `dump`), in the restored processes' one."""
    state = _state(rctx)
    reader = getattr(rctx.image, "reader", rctx.image)
    for rec in reader.of_type(SysvShmRecord):  # segments no process attached (a tree's own namespace)
        if rec.id not in state.made:
            state.made[rec.id] = _make(rctx, rec, state)
    _make_namespace_objects(rctx, state)
    for rec_id, made in state.made.items():
        if made.remove:
            with ipc_namespace(f"/proc/self/fd/{made.ns}"):
                if _libc.shmctl(made.shmid, IPC_RMID, None) < 0:
                    err = ctypes.get_errno()
                    raise RestoreError(f"cannot mark SysV shared memory segment id {made.shmid} for "
                                       f"removal again: {os.strerror(err)}")
    _close(state)


def undo(rctx: RestoreContext) -> None:
    """The restore failed: remove the segments it created (not one it took over)."""
    state = rctx.shared.get("sysv shm")
    if state is None:
        return
    for made in state.made.values():
        if not made.adopted:
            try:
                with ipc_namespace(f"/proc/self/fd/{made.ns}"):
                    _libc.shmctl(made.shmid, IPC_RMID, None)
            except OSError:
                pass  # a namespace that died with its processes took the segment along
    for ns, what, ident in state.others:
        try:
            with ipc_namespace(f"/proc/self/fd/{ns}"):
                if what == "sem":
                    _libc.semctl(ident, 0, IPC_RMID)
                elif what == "msg":
                    _libc.msgctl(ident, IPC_RMID, None)
        except OSError:
            pass
    _close(state)


def _close(state: _State) -> None:
    for fd in {made.ns for made in state.made.values()} | {ns for ns, _, _ in state.others}:
        try:
            os.close(fd)
        except OSError:
            pass
    state.made.clear()
    state.others.clear()


# --- semaphore sets and message queues of a tree's own IPC namespace -----------

SEM_TABLE, MSG_TABLE = "sem", "msg"  # /proc/sysvipc/*, of this thread's IPC namespace
SEM_NEXT_ID, MSG_NEXT_ID = "kernel/sem_next_id", "kernel/msg_next_id"  # under /proc/sys
GETPID, GETALL, SETALL = 11, 13, 17
MSG_COPY, IPC_NOWAIT, MSG_NOERROR = 0o40000, 0o4000, 0o10000
MSGMAX = 1 << 20  # the largest message a queue may be asked to copy (msgmax is 8192 by default)


class _SemidDs(ctypes.Structure):
    # x86-64's semid64_ds (104 bytes): a reserved word after each time.  Without them
    # IPC_STAT wrote 16 bytes past this buffer, into pyckpt's heap.
    _fields_ = [("perm", _IpcPerm), ("otime", ctypes.c_long), ("unused1", ctypes.c_ulong),
                ("ctime", ctypes.c_long), ("unused2", ctypes.c_ulong),
                ("nsems", ctypes.c_ulong), ("unused3", ctypes.c_ulong), ("unused4", ctypes.c_ulong)]


class _MsqidDs(ctypes.Structure):
    _fields_ = [("perm", _IpcPerm), ("stime", ctypes.c_long), ("rtime", ctypes.c_long),
                ("ctime", ctypes.c_long), ("cbytes", ctypes.c_ulong), ("qnum", ctypes.c_ulong),
                ("qbytes", ctypes.c_ulong), ("lspid", ctypes.c_int), ("lrpid", ctypes.c_int),
                ("unused4", ctypes.c_ulong), ("unused5", ctypes.c_ulong)]




@record(121, scope="image")
@dataclass
class SysvSemRecord:
    """A SysV semaphore set of the tree's own IPC namespace: its values (not the
    processes' undo adjustments, SEM_UNDO, nor who waits)."""

    id: int
    semid: int
    key: int
    mode: int
    uid: int
    gid: int
    values: list[int]

    def describe(self) -> str:
        return f"SysV semaphore set key {self.key:#010x} id {self.semid}"


@dataclass
class SysvMessage:
    mtype: int
    data: str  # hex


@record(122, scope="image")
@dataclass
class SysvMsgRecord:
    """A SysV message queue of the tree's own IPC namespace with its messages, in order
    (read with MSG_COPY: nothing is consumed)."""

    id: int
    msqid: int
    key: int
    mode: int
    uid: int
    gid: int
    qbytes: int
    messages: list[SysvMessage]

    def describe(self) -> str:
        return f"SysV message queue key {self.key:#010x} id {self.msqid}"


def _table(kind: str) -> list[list[int]]:
    """The rows of /proc/sysvipc/sem or msg: key (unsigned), id, perms (octal), the rest."""
    return proc.parse_sysvipc(proc.read_sysvipc_text(kind))


def _same_namespace_as_root(ctx: DumpContext, what: str) -> None:
    """A restore puts the whole tree in one IPC namespace: SysV objects of a process in
    another namespace than the tree's first process are refused (ids could clash)."""
    root = ctx.tree[0] if ctx.tree else ctx.pid
    mine, theirs = os.stat(f"/proc/{ctx.pid}/ns/ipc"), os.stat(f"/proc/{root}/ns/ipc")
    if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
        raise UnsupportedError(f"{what}, in another IPC namespace than process {root} of the same "
                               "tree; pyckpt restores a tree into one IPC namespace and cannot save it "
                               "— dump that process on its own", pid=ctx.pid)


def _own_namespace(pid: int) -> bool:
    there, here = os.stat(f"/proc/{pid}/ns/ipc"), os.stat("/proc/thread-self/ns/ipc")
    return (there.st_dev, there.st_ino) != (here.st_dev, here.st_ino)


@dump_hook("sysv ipc")
def dump(ctx: DumpContext) -> list:
    """Once per tree: the semaphore sets and message queues the tree uses.  When it
    has an IPC namespace of its own (not pyckpt's: a container, a copy restored with
    new_pidns), every one in it, and every segment nobody attaches, which then can
    only be the tree's (as CRIU saves a tree's own IPC namespace).  In a namespace
    shared with others, the sets one of whose semaphores a process of the tree
    operated on last (GETPID) and the queues a process of the tree sent to or
    received from last (lspid, lrpid): what the tree uses, as far as the kernel
    tells; the others are left alone."""
    st = os.stat(f"/proc/{ctx.pid}/ns/ipc")
    key = ("ipc namespace", st.st_dev, st.st_ino)
    if key in ctx.objects:
        return []
    ctx.objects[key] = len(ctx.objects) + 1
    own = _own_namespace(ctx.pid)
    tree = set(ctx.tree) | {ctx.pid}
    recs: list = []
    with ipc_namespace(f"/proc/{ctx.pid}/ns/ipc"):
        for e in _shm_table() if own else ():
            recs += _unattached_segment(ctx, e)
        for row in _table(SEM_TABLE):
            key_, semid, mode, nsems, uid, gid = row[:6]
            if not own and not {_libc.semctl(semid, i, GETPID) for i in range(nsems)} & tree:
                continue
            values = (ctypes.c_ushort * max(nsems, 1))()
            if _libc.semctl(semid, 0, GETALL, values) < 0:
                raise UnsupportedError(f"process {ctx.pid}: SysV semaphore set key {key_:#010x} id {semid} "
                                       f"of its IPC namespace cannot be read "
                                       f"({os.strerror(ctypes.get_errno())})", pid=ctx.pid)
            ctx.objects[("sysv sem", st.st_ino, semid)] = oid = len(ctx.objects) + 1
            recs.append(SysvSemRecord(oid, semid, key_, mode, uid, gid, list(values)[:nsems]))
        for row in _table(MSG_TABLE):
            key_, msqid, mode, cbytes, qnum, lspid, lrpid = row[:7]
            uid, gid = row[7], row[8]
            if not own and not {lspid, lrpid} & tree:
                continue
            what = f"process {ctx.pid}: SysV message queue key {key_:#010x} id {msqid} of its IPC namespace"
            ds = _MsqidDs()
            if _libc.msgctl(msqid, IPC_STAT, ctypes.byref(ds)) < 0:
                raise UnsupportedError(f"{what} cannot be read ({os.strerror(ctypes.get_errno())})",
                                       pid=ctx.pid)
            size = min(max(cbytes, 1), MSGMAX)
            buf = ctypes.create_string_buffer(8 + size)
            messages = []
            for index in range(qnum):
                n = _libc.msgrcv(msqid, buf, size, index, IPC_NOWAIT | MSG_COPY | MSG_NOERROR)
                if n < 0:
                    err = ctypes.get_errno()
                    raise UnsupportedError(f"{what}: its message #{index} cannot be copied "
                                           f"({os.strerror(err)}; MSG_COPY needs CONFIG_CHECKPOINT_RESTORE)",
                                           pid=ctx.pid)
                mtype = ctypes.c_long.from_buffer(buf).value
                messages.append(SysvMessage(mtype, buf.raw[8:8 + n].hex()))
            ctx.objects[("sysv msg", st.st_ino, msqid)] = oid = len(ctx.objects) + 1
            recs.append(SysvMsgRecord(oid, msqid, key_, mode, uid, gid, ds.qbytes, messages))
    if recs:
        _same_namespace_as_root(ctx, f"process {ctx.pid}: {recs[0].describe()}")
    return recs


def _unattached_segment(ctx: DumpContext, e: ShmEntry) -> list:
    """The record of segment `e` of the tree's own namespace (pyckpt is in it) unless
    it was saved already (attached by a process dumped before): pyckpt attaches it
    read-only for a moment to name it as its VMAs do (device and inode) and to read it."""
    what = f"process {ctx.pid}: SysV shared memory segment key {e.key:#010x} id {e.shmid} of its IPC namespace"
    addr = _libc.shmat(e.shmid, None, SHM_RDONLY)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise UnsupportedError(f"{what} cannot be read ({os.strerror(ctypes.get_errno())})", pid=ctx.pid)
    try:
        path = f"/proc/self/map_files/{addr:x}-{addr + -(-e.size // PAGE) * PAGE:x}"
        st = os.stat(path)
        key = ("sysv shm", st.st_dev, e.shmid)
        if key in ctx.objects:
            return []
        check_size(ctx, what, e.size)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            runs = store_content(ctx, fd, e.size, "dump SysV shared memory")
        finally:
            os.close(fd)
    finally:
        _libc.shmdt(addr)
    ctx.objects[key] = len(ctx.objects) + 1
    return [SysvShmRecord(ctx.objects[key], e.shmid, e.key, e.mode, e.uid, e.gid, e.cuid, e.cgid, e.cpid,
                          e.size, st.st_dev, e.key, runs)]


def _namespace_records(image) -> list:
    reader = getattr(image, "reader", image)
    return list(reader.of_type(SysvSemRecord)) + list(reader.of_type(SysvMsgRecord))


@restore_hook("prepare", "sysv ipc: ids and keys free")
def prepare(rctx: RestoreContext) -> None:
    """In place: the ids (their slots) and keys of the image's semaphore sets and message
    queues must be free in pyckpt's IPC namespace (once per tree)."""
    if rctx.options.new_pidns or rctx.shared.get("sysv ns checked"):
        return
    rctx.shared["sysv ns checked"] = True
    done = rctx.shared.setdefault("sysv shm checked", set())
    for seg in getattr(rctx.image, "reader", rctx.image).of_type(SysvShmRecord):
        if seg.id not in done:  # (prepare_mapping checks those attached)
            done.add(seg.id)
            rctx.collect(lambda seg=seg: _check_free_here(seg))
    recs = _namespace_records(rctx.image)
    if not recs:
        return
    tables = {"sem": _table(SEM_TABLE), "msg": _table(MSG_TABLE)}
    for rec in recs:
        what, ident = ("sem", rec.semid) if isinstance(rec, SysvSemRecord) else ("msg", rec.msqid)
        if any(_own_leftover(rec, row) for row in tables[what]):
            continue  # the dumped tree's own set or queue, still there: taken over
        for row in tables[what]:
            if row[1] % IPCMNI == ident % IPCMNI or (rec.key != 0 and row[0] == rec.key):
                kind = "semaphore set" if what == "sem" else "message queue"
                rctx.note(needs(IpcInUseError(rec.describe(), f"SysV {kind} key {row[0]:#010x} id {row[1]}",
                                              f"ipcrm -{'s' if what == 'sem' else 'q'} {row[1]}"),
                                Fix("new_pidns")))
                break


def _own_leftover(rec, row: list[int]) -> bool:
    """Whether the set or queue `row` (of /proc/sysvipc/sem or msg) is the image's own,
    left behind by the dumped tree (SysV sets and queues outlive their processes):
    the same id, key and owner (and number of semaphores)."""
    if isinstance(rec, SysvSemRecord):
        return (row[1], row[0], row[3], row[4], row[5]) == (rec.semid, rec.key, len(rec.values), rec.uid, rec.gid)
    return (row[1], row[0], row[7], row[8]) == (rec.msqid, rec.key, rec.uid, rec.gid)


def _make_namespace_objects(rctx: RestoreContext, state: _State) -> None:
    """Re-create (or, in place, take over) the image's semaphore sets and message queues
    in the restored processes' IPC namespace, with their values and messages."""
    recs = _namespace_records(rctx.image)
    if not recs:
        return
    ns = os.open(f"/proc/{rctx.pid}/ns/ipc", os.O_RDONLY | os.O_CLOEXEC)
    state.others.append((ns, "ns", -1))  # (closed by _close; nothing to remove)
    with ipc_namespace(f"/proc/self/fd/{ns}"):
        tables = {"sem": _table(SEM_TABLE), "msg": _table(MSG_TABLE)}
        for rec in recs:
            if isinstance(rec, SysvSemRecord):
                if any(_own_leftover(rec, row) for row in tables["sem"]):
                    semid = rec.semid
                else:
                    semid = _get(SEM_NEXT_ID, rec.semid, rec,
                                 lambda: _libc.semget(rec.key, len(rec.values), IPC_CREAT | IPC_EXCL | 0o600))
                    state.others.append((ns, "sem", semid))
                values = (ctypes.c_ushort * len(rec.values))(*rec.values)
                if _libc.semctl(semid, 0, SETALL, values) < 0:
                    raise RestoreError(f"cannot set the values of {rec.describe()}: "
                                       f"{os.strerror(ctypes.get_errno())}")
                ds = _SemidDs()
                _libc.semctl(semid, 0, IPC_STAT, ctypes.byref(ds))
                ds.perm.uid, ds.perm.gid, ds.perm.mode = rec.uid, rec.gid, rec.mode & 0o777
                if _libc.semctl(semid, 0, IPC_SET, ctypes.byref(ds)) < 0:
                    raise RestoreError(f"cannot set the owner and mode of {rec.describe()}: "
                                       f"{os.strerror(ctypes.get_errno())}")
            else:
                if any(_own_leftover(rec, row) for row in tables["msg"]):
                    msqid = rec.msqid
                    _drain(msqid, rec)  # what it holds now is not what the image holds
                else:
                    msqid = _get(MSG_NEXT_ID, rec.msqid, rec,
                                 lambda: _libc.msgget(rec.key, IPC_CREAT | IPC_EXCL | 0o600))
                    state.others.append((ns, "msg", msqid))
                ds = _MsqidDs()
                _libc.msgctl(msqid, IPC_STAT, ctypes.byref(ds))
                ds.perm.uid, ds.perm.gid, ds.perm.mode = rec.uid, rec.gid, rec.mode & 0o777
                if rec.qbytes <= ds.qbytes:  # more than msgmnb needs CAP_SYS_RESOURCE
                    ds.qbytes = rec.qbytes
                for m in rec.messages:  # sent while pyckpt still owns it, so the limit cannot bite
                    data = bytes.fromhex(m.data)
                    buf = ctypes.create_string_buffer(8 + len(data))
                    ctypes.c_long.from_buffer(buf).value = m.mtype
                    buf[8:8 + len(data)] = data
                    if _libc.msgsnd(msqid, buf, len(data), IPC_NOWAIT) < 0:
                        raise RestoreError(f"cannot put message back into {rec.describe()}: "
                                           f"{os.strerror(ctypes.get_errno())}")
                if _libc.msgctl(msqid, IPC_SET, ctypes.byref(ds)) < 0:
                    raise RestoreError(f"cannot set the owner and mode of {rec.describe()}: "
                                       f"{os.strerror(ctypes.get_errno())}")


def _drain(msqid: int, rec) -> None:
    buf = ctypes.create_string_buffer(8 + 64)
    while _libc.msgrcv(msqid, buf, 64, 0, IPC_NOWAIT | MSG_NOERROR) >= 0:
        pass
    if ctypes.get_errno() != errno.ENOMSG:
        raise RestoreError(f"cannot empty {rec.describe()} to take it over: {os.strerror(ctypes.get_errno())}")


def _get(next_id_file: str, want: int, rec, create) -> int:
    """Create an object under id `want` (via the namespace's *_next_id)."""
    proc.write_sys(next_id_file, str(want))
    got = create()
    if got < 0:
        err = ctypes.get_errno()
        raise needs(IpcInUseError(rec.describe(), f"an object of the namespace ({os.strerror(err)})", "ipcrm"),
                    Fix("new_pidns"))
    if got != want:
        raise needs(IpcInUseError(rec.describe(), f"its id's slot (it got id {got})", "ipcrm"),
                    Fix("new_pidns"))
    return got


def validate(image) -> None:
    """Each SysV VMA names a saved segment at a page-aligned offset inside it; each
    segment's content lies inside it."""
    def bad(what: str):
        raise ImageError(f"image at {image.path}: {what}", path=image.path)

    for v in image.of_type(VmaRecord):
        if v.kind != SysvSharedMemory.kind:
            continue
        if v.file is None:
            bad(f"SysV shared memory at {v.start:#x} names no segment")
        rec = segment_of(image, v)
        if v.offset % PAGE or v.offset < 0 or v.offset + (v.end - v.start) > -(-rec.size // PAGE) * PAGE:
            bad(f"SysV shared memory at {v.start:#x} has a bad offset {v.offset}")
    seen = set()
    for rec in image.of_type(SysvShmRecord):
        if (rec.size <= 0 or rec.id in seen or not 0 <= rec.shmid < 1 << 31 or not 0 <= rec.key < 1 << 32
                or not 0 <= rec.mode < 1 << 16):
            bad(f"SysV shared memory segment #{rec.id} has a bad size, id, key or mode")
        seen.add(rec.id)
        for r in rec.runs:
            if r.file_offset < 0 or r.length <= 0 or r.length > r.stored or r.file_offset + r.length > rec.size:
                bad(f"SysV shared memory segment #{rec.id} has data outside it")
    for rec in list(image.of_type(SysvSemRecord)) + list(image.of_type(SysvMsgRecord)):
        ident = rec.semid if isinstance(rec, SysvSemRecord) else rec.msqid
        if (rec.id in seen or not 0 <= ident < 1 << 31 or not 0 <= rec.key < 1 << 32
                or not 0 <= rec.mode < 1 << 16 or not 0 <= rec.uid < 1 << 32 or not 0 <= rec.gid < 1 << 32):
            bad(f"SysV object #{rec.id} has a bad id, key, mode or owner")
        seen.add(rec.id)
        if isinstance(rec, SysvSemRecord):
            if not 0 < len(rec.values) <= 32000 or any(not 0 <= v <= 32767 for v in rec.values):
                bad(f"{rec.describe()} has bad values")
        else:
            if not 0 <= rec.qbytes < 1 << 63:
                bad(f"{rec.describe()} has a bad size")
            for m in rec.messages:
                if not 0 < m.mtype < 1 << 63 or len(m.data) % 2 or len(m.data) > 2 * MSGMAX:
                    bad(f"{rec.describe()} holds a bad message")
                bytes.fromhex(m.data)  # (a ValueError: damage)


def summary(image) -> list[dict]:
    """The image's SysV objects for `Image.summary()` (`pyckpt show`): `what` (kind,
    key and id), `detail` (in words), `stored_bytes` (a segment's content in pages.img)."""
    reader = getattr(image, "reader", image)
    out = []
    for r in reader.of_type(SysvShmRecord):
        stored = sum(x.stored for x in r.runs)
        state = ", marked for removal" if r.mode & SHM_DEST else ""
        out.append({"what": r.describe(), "stored_bytes": stored,
                    "detail": f"{r.size} bytes, mode {r.mode & 0o777:o}, uid {r.uid}{state}, "
                              f"{stored // 1024} KiB stored"})
    for r in reader.of_type(SysvSemRecord):
        out.append({"what": r.describe(), "stored_bytes": 0, "detail": f"values {r.values}"})
    for r in reader.of_type(SysvMsgRecord):
        size = sum(len(m.data) // 2 for m in r.messages)
        out.append({"what": r.describe(), "stored_bytes": 0,
                    "detail": f"{len(r.messages)} message(s), {size} bytes"})
    return out
