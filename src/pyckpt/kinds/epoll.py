"""epoll instances and their items.

Dump: the epoll description itself is only its status flags (`EpollRecord`,
by the file kind).  Its items are found once the whole fd table is known
(`EpollTable`, a table hook) of the process that saves the description — the
first of the tree to hold it: each `tfd:` line of the epoll's fdinfo gives
the fd number the item was added under, its event mask and its data; which
open file description the item watches is asked of the kernel with
kcmp(KCMP_EPOLL_TFD) against one fd of every description of the table,
because the number may have been closed (the file living on through a dup)
or even reused for another file since.  A set inherited across fork is one
description, saved once, its items with it, whichever process added them
(the number of an item is the adder's).  An item whose file that process no
longer holds is looked for among the fds of the other processes of the tree
(kcmp across processes; one dumped later fills in the id when its own table
is known, before the image is written).  An item whose file no process of
the tree holds (only a process outside it) cannot be re-created: dump refuses.

Restore: each epoll instance is created once in pyckpt (epoll_create1) and
inherited by its holders.  An item can only be added by a task in which its
number holds its file, so the items of every set of the image are added
once, by the first task made (the root), right after its fds were placed
(`EpollTable.restore`, from files.restore): it then still holds, above its
own fds, every file pyckpt opened for any process of the tree, so it can
fill the sets of its descendants too, and the sets are full before any
process runs.  The kernel keys an item by (file, fd number), so an item is
added through a temporary dup3 of its file to that number (moving aside and
back whatever the number holds now) unless the number already holds it.
Watched epoll sets are filled before the sets that watch them.  A set that
`fds=` replaced is not filled; an item on a replaced file watches the
replacement.  Closing numbers for a moment drops POSIX locks: they are set
later (deferred steps).

Event masks and data are restored as dumped.  A one-shot item that had
already fired (mask reduced to its flag bits) is added armed while its set
is still empty and polled once with an injected epoll_wait, so that it
fires and disarms again; if its file is neither readable nor writable now
it stays armed for EPOLLERR|EPOLLHUP only (the kernel always adds those
two at ADD and MOD).  Limits: an edge-triggered item whose event
had already been reported is reported once more after restore if its file
is still ready (the kernel re-polls a file when an item is added; fdinfo
does not show which items sit in the ready list).
"""

from __future__ import annotations

import ctypes
import os
import struct
from .._dataclass import dataclass

from ..arch import libc as _libc
from ..errors import ImageError, RestoreError, UnsupportedError, UnsupportedFdError
from ..image import record
from ..inject import nr
from ..proc.anon_fdinfo import EpollItemInfo, parse_epoll_items
from .context import DumpContext, RestoreContext
from . import files
from .files import DumpedFd, FdRecord, FileKind, TableHook, file_kind, table_hook

O_CLOEXEC = os.O_CLOEXEC
O_NONBLOCK = os.O_NONBLOCK
O_ASYNC = 0o20000
KCMP_EPOLL_TFD = 7
EPOLL_CTL_ADD, EPOLL_CTL_MOD = 1, 3
F_DUPFD_CLOEXEC = 1030
EPOLLIN, EPOLLPRI, EPOLLOUT, EPOLLRDHUP = 0x1, 0x2, 0x4, 0x2000
EPOLLEXCLUSIVE, EPOLLWAKEUP, EPOLLONESHOT, EPOLLET = 1 << 28, 1 << 29, 1 << 30, 1 << 31
PRIVATE_BITS = EPOLLEXCLUSIVE | EPOLLWAKEUP | EPOLLONESHOT | EPOLLET  # the kernel's EP_PRIVATE_BITS
EVENT_SIZE = 12  # struct epoll_event is packed on x86-64: u32 events, u64 data
WAIT_BATCH = 64


class _KcmpEpollSlot(ctypes.Structure):
    _fields_ = [("efd", ctypes.c_uint32), ("tfd", ctypes.c_uint32), ("toff", ctypes.c_uint32)]


@record(83, scope="image")
@dataclass
class EpollRecord:
    id: int
    flags: int  # status flags (O_NONBLOCK), no O_CLOEXEC


@dataclass
class EpollItem:
    tfd: int  # the fd number it was added under (part of the kernel's key)
    file_id: int  # the description it watches
    events: int
    data: int


@record(84, scope="image")
@dataclass
class EpollItemsRecord:
    epoll_id: int
    items: list[EpollItem]


@file_kind
class Epoll(FileKind):
    name = "epoll"
    records = (EpollRecord,)

    def claims(self, f: DumpedFd) -> bool:
        return f.link == "anon_inode:[eventpoll]"

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        if f.info.flags & O_ASYNC:
            raise UnsupportedFdError(f.pid, f.fd, "epoll with O_ASYNC (signal-driven I/O)", f.link)
        return [EpollRecord(file_id, f.info.flags & ~O_CLOEXEC)]

    def open(self, rctx: RestoreContext, rec: EpollRecord) -> int:
        fd = _libc.epoll_create1(O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"epoll_create1: {os.strerror(err)}")
        if rec.flags & O_NONBLOCK:
            os.set_blocking(fd, False)
        return fd

    def describe(self, rec: EpollRecord) -> str:
        return "epoll"


# --- dump: items -----------------------------------------------------------------

def item_file(pid: int, epfd: int, item: EpollItemInfo, candidates: list[int],
              holder: int | None = None) -> int | None:
    """The fd among `candidates` (fds of process `pid`) whose description is the one
    item `item` of epoll fd `epfd` (of process `holder`, by default `pid`) watches."""
    holder = pid if holder is None else holder
    slot = _KcmpEpollSlot(epfd, item.tfd, item.toff)
    for fd in candidates:
        r = _libc.syscall(nr.kcmp, pid, holder, KCMP_EPOLL_TFD, fd, ctypes.byref(slot))
        if r == 0:
            return fd
        if r < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"kcmp(KCMP_EPOLL_TFD) on epoll fd {epfd} of process {holder}, item fd "
                               f"{item.tfd}, fd {fd} of process {pid}: {os.strerror(err)}")
    return None


# DumpContext.objects (shared by the tree's processes while they are dumped):
FD_IDS = "epoll: fd -> file id, per process"  # {pid: ({fd: file id}, one fd of each file)}
#                                              of every process dumped so far
PENDING = "epoll: items of no known file"  # [_Pending]: items no process dumped so far holds
FILLED = "epoll: sets filled"  # RestoreContext.shared: the first task filled every set


@dataclass
class _Pending:
    item: EpollItem  # in its set's record, file_id still 0: filled in by the process that holds it
    holder: int  # the process whose fd `epfd` is the set
    epfd: int
    info: EpollItemInfo


def _one_fd_each(id_of: dict[int, int]) -> dict[int, int]:
    """file id -> one fd of it."""
    out: dict[int, int] = {}
    for fd, file_id in sorted(id_of.items()):
        out.setdefault(file_id, fd)
    return out


@table_hook
class EpollTable(TableHook):
    name = "epoll items"

    def dump(self, ctx: DumpContext, table: list) -> list:
        id_of = {r.fd: r.file_id for r in table if isinstance(r, FdRecord)}
        one_fd = _one_fd_each(id_of)
        fd_ids = ctx.objects.setdefault(FD_IDS, {})
        pending: list[_Pending] = ctx.objects.setdefault(PENDING, [])
        # Items of sets saved by a process dumped before this one, whose files no process
        # dumped so far held: their records are written once the whole tree is dumped
        # (dumper._dump_frozen), so the file id can still be filled in.
        for p in list(pending):
            fd = item_file(ctx.pid, p.epfd, p.info, list(one_fd.values()), holder=p.holder)
            if fd is not None:
                p.item.file_id = id_of[fd]
                pending.remove(p)
        fd_ids[ctx.pid] = (id_of, list(one_fd.values()))
        out = []
        for ep in (r for r in table if isinstance(r, EpollRecord)):  # sets this process saves
            epfd = one_fd[ep.id]
            items = []
            for info in parse_epoll_items(ctx.tables.fdinfo_text(ctx.pid, epfd)):
                # The number it was added under first: usually it still holds the file.
                first = [info.tfd] if info.tfd in id_of else []
                fd = item_file(ctx.pid, epfd, info, first + [f for f in one_fd.values() if f != info.tfd])
                file_id = id_of[fd] if fd is not None else _held_before(ctx, fd_ids, epfd, info)
                item = EpollItem(info.tfd, file_id or 0, info.events, info.data)
                if file_id is None:  # maybe by a process dumped after this one
                    pending.append(_Pending(item, ctx.pid, epfd, info))
                items.append(item)
            out.append(EpollItemsRecord(ep.id, items))
        if pending and (not ctx.tree or ctx.pid == ctx.tree[-1]):  # the last process: none will
            p = pending[0]
            raise UnsupportedError(
                f"process {p.holder}: epoll fd {p.epfd} watches a file added as fd {p.info.tfd} "
                "that no fd of any process of the tree holds any more (a process outside it keeps "
                "it open); pyckpt cannot re-create that item — remove it (EPOLL_CTL_DEL) or keep "
                "the file open in the tree", pid=p.holder)
        return out

    def restore(self, rctx: RestoreContext) -> None:
        # Every set of the image, once, from the first task whose fds are placed (the
        # root): it holds every file pyckpt opened for the tree (see the docstring).
        if FILLED not in rctx.shared and rctx.image.of_type(EpollItemsRecord):
            rctx.shared[FILLED] = True
            restore_items(rctx)


def _held_before(ctx: DumpContext, fd_ids: dict, epfd: int, info: EpollItemInfo) -> int | None:
    """The file id of the item, if a process dumped before this one holds its file."""
    for pid, (id_of, candidates) in fd_ids.items():
        if pid == ctx.pid:
            continue
        fd = item_file(pid, epfd, info, candidates, holder=ctx.pid)
        if fd is not None:
            return id_of[fd]
    return None


# --- restore: items --------------------------------------------------------------

def _fill_order(epolls: dict[int, EpollRecord], items: dict[int, list[EpollItem]]) -> list[int]:
    """Epoll ids, every watched epoll set before the sets that watch it."""
    order: list[int] = []
    state: dict[int, int] = {}  # 1 visiting, 2 done

    def visit(ep_id: int) -> None:
        if state.get(ep_id) == 2:
            return
        if state.get(ep_id) == 1:
            raise RestoreError(f"the image's epoll sets watch each other in a loop (epoll file {ep_id})")
        state[ep_id] = 1
        for it in items.get(ep_id, []):
            if it.file_id in epolls:
                visit(it.file_id)
        state[ep_id] = 2
        order.append(ep_id)

    for ep_id in epolls:
        visit(ep_id)
    return order


class _TaskFds:
    """What each fd number of the task holds right after files.restore: its own fds
    (a key of rctx.passed each, see files.sources) and, above them, the passed fds."""

    def __init__(self, rctx: RestoreContext):
        self.rctx = rctx
        self.key_at: dict[int, tuple] = files.sources(rctx)
        self.cloexec = {r.fd: r.cloexec for r in rctx.image.of_type(FdRecord)}
        self.own_of: dict[tuple, int] = {}  # key -> the task's lowest own fd holding it
        for n, key in sorted(self.key_at.items(), reverse=True):
            self.own_of[key] = n
        for key, n in rctx.passed.items():
            self.key_at[n] = key
            self.cloexec[n] = True  # pass_fd makes them close-on-exec
        self.checked: set[int] = set()
        self.late: dict[tuple, int] = {}  # late files taken from pyckpt -> the task's fd

    def close_late(self) -> None:
        for fd in self.late.values():
            self.rctx.inj.check(nr.close, fd, what=f"closing temporary fd {fd}")

    def fd_of(self, key: tuple, number: int) -> int:
        """An fd of the task holding `key`: `number` if it does, else one of its own,
        else the passed one."""
        if self.key_at.get(number) == key:
            return number
        if key in self.own_of:
            return self.own_of[key]
        if key in self.late:
            return self.late[key]
        fd = self.rctx.passed.get(key)
        if fd is None and key[0] == "file" and files.opens_late(self.rctx, key[1]):
            # made once every process existed (a pidfd), held by another process of the
            # tree only: the task takes the same file from pyckpt for as long as it needs
            self.late[key] = files.late_fd_in_task(self.rctx, key[1])
            return self.late[key]
        if fd is None:
            raise RestoreError(f"epoll items: nothing was opened for {key} (internal error)")
        if fd not in self.checked:  # the task must hold it still, as pyckpt does
            if not files.same_description(os.getpid(), fd, self.rctx.pid, fd):
                raise RestoreError(f"epoll items: process {self.rctx.pid} does not hold the file "
                                   f"pyckpt opened for {key} at fd {fd} (internal error)")
            self.checked.add(fd)
        return fd


def restore_items(rctx: RestoreContext) -> None:
    """Add the items of every epoll set of the image, from the task of `rctx`."""
    image = rctx.image
    epolls = {r.id: r for r in image.of_type(EpollRecord)}
    items: dict[int, list[EpollItem]] = {}
    for r in image.of_type(EpollItemsRecord):
        if r.epoll_id not in epolls:
            raise RestoreError(f"image: epoll items of file {r.epoll_id}, which is not an epoll")
        items[r.epoll_id] = r.items
    task = _TaskFds(rctx)
    for ep_id in _fill_order(epolls, items):
        its = items.get(ep_id, [])
        key = files.source_of_file(rctx, ep_id)
        if not its or key != ("file", ep_id):  # empty, or replaced with fds=: nothing to add
            continue
        epfd = task.fd_of(key, -1)
        srcs = []
        for it in its:
            src_key = files.source_of_file(rctx, it.file_id, it.tfd)
            if src_key is None:
                raise RestoreError(f"image: epoll file {ep_id} watches file {it.file_id}, "
                                   "which no process holds")
            srcs.append((it, src_key))
        disarmed = [(it, k) for it, k in srcs if it.events & EPOLLONESHOT and not it.events & ~PRIVATE_BITS]
        for it, k in disarmed:  # first, while nothing else in the set can be ready
            _add_disarmed(rctx, task, epfd, it, k)
        for it, k in srcs:
            if not any(it is d for d, _ in disarmed):
                _add(rctx, task, epfd, it, k, it.events)
    task.close_late()


def _ctl(rctx: RestoreContext, epfd: int, op: int, it: EpollItem, events: int) -> None:
    rctx.inj.write(rctx.scratch, struct.pack("<IQ", events & 0xFFFFFFFF, it.data))
    what = "EPOLL_CTL_ADD" if op == EPOLL_CTL_ADD else "EPOLL_CTL_MOD"
    rctx.inj.check(nr.epoll_ctl, epfd, op, it.tfd, rctx.scratch,
                   what=f"{what} of fd {it.tfd} (events {events:#x}) to epoll fd {epfd}")


def _with_number(rctx: RestoreContext, task: _TaskFds, epfd: int, it: EpollItem, key: tuple,
                 action) -> None:
    """Run action(epfd) while fd number it.tfd holds the item's file (`key`) in the task."""
    src = task.fd_of(key, it.tfd)
    if src == it.tfd:
        action(epfd)
        return
    inj = rctx.inj
    occupant = task.key_at.get(it.tfd)
    saved = None
    if occupant is not None:  # the number now holds another file: move it aside
        saved = inj.check(nr.fcntl, it.tfd, F_DUPFD_CLOEXEC, rctx.lowest_passed,
                          what=f"moving fd {it.tfd} aside")
    inj.check(nr.dup3, src, it.tfd, O_CLOEXEC, what=f"dup3 of fd {src} to fd {it.tfd} for an epoll item")
    action(saved if epfd == it.tfd else epfd)
    if saved is None:
        inj.check(nr.close, it.tfd, what=f"closing temporary fd {it.tfd}")
    else:
        inj.check(nr.dup3, saved, it.tfd, O_CLOEXEC if task.cloexec.get(it.tfd, True) else 0,
                  what=f"putting fd {it.tfd} back")
        inj.check(nr.close, saved, what=f"closing temporary fd {saved}")


def _add(rctx, task, epfd, it, key, events) -> None:
    _with_number(rctx, task, epfd, it, key, lambda e: _ctl(rctx, e, EPOLL_CTL_ADD, it, events))


def _add_disarmed(rctx, task, epfd, it, key) -> None:
    """Add a one-shot item that had already fired, disarmed as it was.

    Added armed for input and output, it fires at once if its file is ready
    (nothing else is in the set yet), and an injected epoll_wait disarms it.
    If it does not fire, it is set to its flag bits only, which the kernel
    turns into EPOLLERR|EPOLLHUP + flags (it always adds those two).
    """
    _add(rctx, task, epfd, it, key, it.events | EPOLLIN | EPOLLOUT | EPOLLPRI)
    buf = rctx.scratch + 16
    n = rctx.inj.check(nr.epoll_wait, epfd, buf, WAIT_BATCH, 0,
                       what=f"epoll_wait on epoll fd {epfd} (disarming one-shot fd {it.tfd})")
    data = rctx.inj.read(buf, n * EVENT_SIZE) if n else b""
    if any(struct.unpack_from("<IQ", data, i * EVENT_SIZE)[1] == it.data for i in range(n)):
        return
    _with_number(rctx, task, epfd, it, key, lambda e: _ctl(rctx, e, EPOLL_CTL_MOD, it, it.events))


# --- bad input -------------------------------------------------------------------

def validate(image) -> None:
    """Every items record names an epoll, one record per set, each item a file some
    process of the image holds; the sets do not watch each other in a loop."""
    reader = getattr(image, "reader", image)
    epolls = {r.id: r for r in reader.records if isinstance(r, EpollRecord)}
    held = {r.file_id for r in reader.records if isinstance(r, FdRecord)}
    items: dict[int, list[EpollItem]] = {}
    for r in reader.records:
        if not isinstance(r, EpollItemsRecord):
            continue
        if r.epoll_id not in epolls:
            raise ImageError(f"image at {image.path}: epoll items of file {r.epoll_id}, which is not "
                             "an epoll")
        if r.epoll_id in items:
            raise ImageError(f"image at {image.path}: two records of items for epoll file {r.epoll_id}")
        if r.items and r.epoll_id not in held:
            raise ImageError(f"image at {image.path}: epoll file {r.epoll_id} has items but no fd")
        for it in r.items:
            if it.file_id not in held or not 0 <= it.tfd < (1 << 31):
                raise ImageError(f"image at {image.path}: epoll file {r.epoll_id} watches file "
                                 f"{it.file_id} as fd {it.tfd}, which no process of the image holds")
        items[r.epoll_id] = r.items
    try:
        _fill_order(epolls, items)
    except RestoreError as e:
        raise ImageError(f"image at {image.path}: {e}") from None
