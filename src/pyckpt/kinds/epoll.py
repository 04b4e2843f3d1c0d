"""epoll instances and their items.

Dump: the epoll description itself is only its status flags (`EpollRecord`,
by the file kind).  Its items are found once the whole fd table is known
(`EpollTable`, a table hook): each `tfd:` line of the epoll's fdinfo gives
the fd number the item was added under, its event mask and its data; which
open file description the item watches is asked of the kernel with
kcmp(KCMP_EPOLL_TFD) against one fd of every description of the table,
because the number may have been closed (the file living on through a dup)
or even reused for another file since.  An item whose file is held by no fd
of the process (only by another process) cannot be re-created: dump refuses.

Restore: the epoll instance is created in pyckpt (epoll_create1) and
inherited by the task.  Its items can only be added from inside the task,
where the numbers mean the right files, once every fd exists: a deferred
step injects `epoll_ctl(EPOLL_CTL_ADD)` for each item, filling watched
epoll sets before the sets that watch them.  The kernel keys an item by
(file, fd number), so an item whose number is no longer an fd of its file
is added through a temporary dup3 of its file to that number (moving aside
and back whatever the number holds now).  That step runs before any other
deferred step: it closes fd numbers for a moment, which would drop POSIX
locks already set on those files.

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
from dataclasses import dataclass

from ..errors import RestoreError, UnsupportedError, UnsupportedFdError
from ..image import record
from ..proc.anon_fdinfo import EpollItemInfo, parse_epoll_items, read_fdinfo_text
from .context import DumpContext, RestoreContext
from .files import DumpedFd, FdRecord, FileKind, TableHook, file_kind, table_hook

O_CLOEXEC = os.O_CLOEXEC
O_NONBLOCK = os.O_NONBLOCK
O_ASYNC = 0o20000
SYS_kcmp, KCMP_EPOLL_TFD = 312, 7
SYS_epoll_wait, SYS_epoll_ctl, SYS_fcntl, SYS_dup3, SYS_close = 232, 233, 72, 292, 3
EPOLL_CTL_ADD, EPOLL_CTL_MOD = 1, 3
F_DUPFD_CLOEXEC = 1030
EPOLLIN, EPOLLPRI, EPOLLOUT, EPOLLRDHUP = 0x1, 0x2, 0x4, 0x2000
EPOLLEXCLUSIVE, EPOLLWAKEUP, EPOLLONESHOT, EPOLLET = 1 << 28, 1 << 29, 1 << 30, 1 << 31
PRIVATE_BITS = EPOLLEXCLUSIVE | EPOLLWAKEUP | EPOLLONESHOT | EPOLLET  # the kernel's EP_PRIVATE_BITS
EVENT_SIZE = 12  # struct epoll_event is packed on x86-64: u32 events, u64 data
WAIT_BATCH = 64

_libc = ctypes.CDLL(None, use_errno=True)


class _KcmpEpollSlot(ctypes.Structure):
    _fields_ = [("efd", ctypes.c_uint32), ("tfd", ctypes.c_uint32), ("toff", ctypes.c_uint32)]


@record(83)
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


@record(84)
@dataclass
class EpollItemsRecord:
    epoll_id: int
    items: list[EpollItem]


@file_kind
class Epoll(FileKind):
    name = "epoll"
    records = (EpollRecord,)
    priority = 50

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

def item_file(pid: int, epfd: int, item: EpollItemInfo, candidates: list[int]) -> int | None:
    """The fd among `candidates` whose description is the one item `item` watches."""
    slot = _KcmpEpollSlot(epfd, item.tfd, item.toff)
    for fd in candidates:
        r = _libc.syscall(SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, fd, ctypes.byref(slot))
        if r == 0:
            return fd
        if r < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"kcmp(KCMP_EPOLL_TFD) on epoll fd {epfd}, item fd {item.tfd}, "
                               f"fd {fd} of process {pid}: {os.strerror(err)}")
    return None


@table_hook
class EpollTable(TableHook):
    def dump(self, ctx: DumpContext, table: list) -> list:
        fdrecs = [r for r in table if isinstance(r, FdRecord)]
        id_of = {r.fd: r.file_id for r in fdrecs}
        one_fd: dict[int, int] = {}  # file id -> one fd of it
        for r in fdrecs:
            one_fd.setdefault(r.file_id, r.fd)
        out = []
        for ep in (r for r in table if isinstance(r, EpollRecord)):
            epfd = one_fd[ep.id]
            items = []
            for info in parse_epoll_items(read_fdinfo_text(ctx.pid, epfd)):
                # The number it was added under first: usually it still holds the file.
                first = [info.tfd] if info.tfd in id_of else []
                fd = item_file(ctx.pid, epfd, info, first + [f for f in one_fd.values() if f != info.tfd])
                if fd is None:
                    raise UnsupportedError(
                        f"process {ctx.pid}: epoll fd {epfd} watches a file added as fd {info.tfd} "
                        "that no fd of the process holds any more (another process keeps it open); "
                        "pyckpt cannot re-create that item — remove it (EPOLL_CTL_DEL) or keep the "
                        "file open in the process", pid=ctx.pid)
                items.append(EpollItem(info.tfd, id_of[fd], info.events, info.data))
            out.append(EpollItemsRecord(ep.id, items))
        return out

    def prepare(self, rctx: RestoreContext) -> None:
        if rctx.image.of_type(EpollItemsRecord):
            # First of the deferred steps: adding an item under a number that holds
            # another file closes that number for a moment, and any close of a file
            # drops the process's POSIX locks on it, so locks must be set after this.
            rctx.deferred.insert(0, lambda: restore_items(rctx))


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


def restore_items(rctx: RestoreContext) -> None:
    image = rctx.image
    epolls = {r.id: r for r in image.of_type(EpollRecord)}
    items: dict[int, list[EpollItem]] = {}
    for r in image.of_type(EpollItemsRecord):
        if r.epoll_id not in epolls:
            raise RestoreError(f"image: epoll items of file {r.epoll_id}, which is not an epoll")
        items[r.epoll_id] = r.items
    fds_of: dict[int, list[FdRecord]] = {}
    at_number: dict[int, FdRecord] = {}
    for r in image.of_type(FdRecord):
        fds_of.setdefault(r.file_id, []).append(r)
        at_number[r.fd] = r
    for ep_id in _fill_order(epolls, items):
        if ep_id not in fds_of:
            raise RestoreError(f"image: epoll file {ep_id} has no fd")
        epfd = fds_of[ep_id][0].fd
        its = items.get(ep_id, [])
        for it in its:
            if it.file_id not in fds_of:
                raise RestoreError(f"image: epoll fd {epfd} watches file {it.file_id}, which has no fd")
        disarmed = [it for it in its if it.events & EPOLLONESHOT and not it.events & ~PRIVATE_BITS]
        for it in disarmed:  # first, while nothing else in the set can be ready
            _add_disarmed(rctx, epfd, it, fds_of, at_number)
        for it in its:
            if not any(it is d for d in disarmed):
                _add(rctx, epfd, it, it.events, fds_of, at_number)


def _ctl(rctx: RestoreContext, epfd: int, op: int, it: EpollItem, events: int) -> None:
    rctx.inj.write(rctx.scratch, struct.pack("<IQ", events & 0xFFFFFFFF, it.data))
    what = "EPOLL_CTL_ADD" if op == EPOLL_CTL_ADD else "EPOLL_CTL_MOD"
    rctx.inj.check(SYS_epoll_ctl, epfd, op, it.tfd, rctx.scratch,
                   what=f"{what} of fd {it.tfd} (events {events:#x}) to epoll fd {epfd}")


def _with_number(rctx: RestoreContext, epfd: int, it: EpollItem, fds_of, at_number, action) -> None:
    """Run action(epfd) while fd number it.tfd holds the item's file in the task."""
    holders = fds_of[it.file_id]
    if any(h.fd == it.tfd for h in holders):
        action(epfd)
        return
    inj = rctx.inj
    occupant = at_number.get(it.tfd)
    saved = None
    if occupant is not None:  # the number now holds another file: move it aside
        saved = inj.check(SYS_fcntl, it.tfd, F_DUPFD_CLOEXEC, rctx.lowest_passed,
                          what=f"moving fd {it.tfd} aside")
    inj.check(SYS_dup3, holders[0].fd, it.tfd, O_CLOEXEC,
              what=f"dup3 of fd {holders[0].fd} to fd {it.tfd} for an epoll item")
    action(saved if epfd == it.tfd else epfd)
    if saved is None:
        inj.check(SYS_close, it.tfd, what=f"closing temporary fd {it.tfd}")
    else:
        inj.check(SYS_dup3, saved, it.tfd, O_CLOEXEC if occupant.cloexec else 0,
                  what=f"putting fd {it.tfd} back")
        inj.check(SYS_close, saved, what=f"closing temporary fd {saved}")


def _add(rctx, epfd, it, events, fds_of, at_number) -> None:
    _with_number(rctx, epfd, it, fds_of, at_number,
                 lambda e: _ctl(rctx, e, EPOLL_CTL_ADD, it, events))


def _add_disarmed(rctx, epfd, it, fds_of, at_number) -> None:
    """Add a one-shot item that had already fired, disarmed as it was.

    Added armed for input and output, it fires at once if its file is ready
    (nothing else is in the set yet), and an injected epoll_wait disarms it.
    If it does not fire, it is set to its flag bits only, which the kernel
    turns into EPOLLERR|EPOLLHUP + flags (it always adds those two).
    """
    _add(rctx, epfd, it, it.events | EPOLLIN | EPOLLOUT | EPOLLPRI, fds_of, at_number)
    buf = rctx.scratch + 16
    n = rctx.inj.check(SYS_epoll_wait, epfd, buf, WAIT_BATCH, 0,
                       what=f"epoll_wait on epoll fd {epfd} (disarming one-shot fd {it.tfd})")
    data = rctx.inj.read(buf, n * EVENT_SIZE) if n else b""
    if any(struct.unpack_from("<IQ", data, i * EVENT_SIZE)[1] == it.data for i in range(n)):
        return
    _with_number(rctx, epfd, it, fds_of, at_number,
                 lambda e: _ctl(rctx, e, EPOLL_CTL_MOD, it, it.events))
