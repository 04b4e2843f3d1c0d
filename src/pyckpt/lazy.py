"""Lazy restore: the process runs before its memory is filled (userfaultfd).

`restore(path, lazy=True)` / `pyckpt restore --lazy`.  In the PAGES stage,
instead of reading its private anonymous pages, each restored process (by
injected calls) creates a userfaultfd; pyckpt takes a copy (pidfd_getfd), the
process closes its own, and pyckpt registers every private anonymous VMA that
has stored pages (MISSING mode, with the fork, remove, unmap and remap events)
and starts the handler.  Other pages (private file mappings' copy-on-write
pages) are read as in a copying restore, and so are VMAs with runs kept in a
parent image (an incremental dump: the handler maps this pages.img only).
The restore then goes on as usual; anything that touches a missing page
meanwhile (pyckpt's writes, the kernel's) waits for the handler as the process
will.

The handler (C, ck_lazy_start in _native/ck.c) is a process forked twice from
pyckpt — not its child, in a session of its own, holding only the uffd,
pages.img, a pidfd of the process and its guards' sockets, so it outlives the
caller (`pyckpt restore --lazy` exits at once); it is reparented to init, or to
the caller's child subreaper (pytest's, bench's), which then reaps it.  It answers each fault with
UFFDIO_COPY of the window around it (WINDOW, the faulting page first) straight
from a read-only mapping of pages.img, i.e. from the page cache; in between it
copies the rest in order (CHUNK at a time) unless `lazy="touch"` (then one
page a second, which also tells it when the memory is gone: an exec); a page
where the image has none is given a zero page.  It follows:
  - fork: the child gets its own uffd, whose missing pages are the image's too
    (pushed to it as to its parent: the child ends up with its own copy of
    what it had not touched, not a copy-on-write share);
  - MADV_DONTNEED / munmap: those pages are never filled from the image (they
    read zeros / are gone); mremap: what was to come at the old place comes at
    the new one;
  - a process that exits (or execs) before all its pages are in: dropped.
When every page of every process it serves is in, it exits; later faults are
the kernel's (zero pages where the image had none, as in any process).

Failure story.  The image was verified in full (every page's checksum) before
any process was made, as for a copying restore, and pages.img is held open: its
removal changes nothing.  The handler has two guards, its children each in a
session of its own, each holding a copy of every uffd (so none is closed while a
process waits on it: the last close of a uffd would let later faults fill zeros
silently) and a pidfd of every process it serves.  If the handler ends before it
is done — killed, or a copy failed (pages.img cut shorter: a read error) — each
guard SIGKILLs every one of those processes, waits until they are gone, and
exits (status 1): a process is never left running with missing memory.  On a
failed copy the handler itself also SIGKILLs them and waits until they are gone
before it exits with status 3 (and says why if its stderr is a terminal).

The handler watches its guards: it polls its sockets to them with the uffds (a
guard never writes: any event is its end), and when a guard ends first (killed)
it reaps it and forks a new one at once, which holds every uffd and pidfd from
the instant it exists (they are in the handler's fd table; nothing is sent
again).  Meanwhile the other guard still guards: a guard killed and then the
handler, however soon after, leaves the processes killed, never running on.
The first guard is forked before `restore()` returns (its PID is in `Handler`),
the second right after.  While a guard is missing because it could not be
started (fork or socketpair failed) the handler pushes every remaining page at
once (as with `lazy=True`, whatever the mode), tries again every 10 ms, and
exits when all are in.  Still possible, after which a later fault reads zeros:
  - both guards and then the handler SIGKILLed before the handler has forked a
    new guard (measured: ~4 ms from the kill of a guard to the new one's fork,
    mostly the killed guard's own exit and the fork of the handler's address
    space), or all three at once (a kill of all, the OOM killer), or the handler
    and its first guard at once within the moment before the second exists;
  - no new guard possible, and the guard left and the handler killed before
    every page is pushed;
and a child forked while lazy whose parent exited before the handler saw it
among the parent's children (looked for right after the fork event, then every
10 ms): no guard knows it, none kills it.  Other processes forked while lazy get
a pidfd sent to the guards, so they are killed with the rest.

Each restored process has its own handler and guards; `restore()` returns them
in the process's `lazy_handlers` (a list of `Handler`: the guard it started
first; the second, and any started in place of one, are the handler's children
too).  A handler serves at most
1024 processes (its own and those forked while lazy) and 4096 faults waiting at
once on pending events; beyond that it gives up, and the guard kills them.  A dump
of a process whose pages are still coming is refused (kinds/memory.py: a VMA
with the "um" flag; its missing pages are not in pagemap).
"""

from __future__ import annotations

import array
import itertools
import os
from typing import NamedTuple

from ._native._ck import ffi, lib
from .arch import PAGE
from .errors import RestoreError
from .inject import nr

WINDOW = 1 << 20  # copied around a fault (aligned), the faulting page first
CHUNK = 2 << 20  # copied at a time in the background, between faults
O_CLOEXEC, O_NONBLOCK = 0o2000000, 0o4000
HANDLERS = "lazy handlers"  # RestoreContext.shared: [Handler] of this restore


class Handler(NamedTuple):
    pid: int  # the restored process it serves (and the children that process forks)
    handler: int  # PID of the handler process
    guard: int  # PID of its first guard (the others are the handler's children too)


def restore_pages(rctx, vmas) -> set[int]:
    """Register the private anonymous VMAs of `vmas` that have stored pages with a
    userfaultfd of the task and start their handler; returns the id()s of the VMAs
    it serves (restore_pages reads the others)."""
    from .kinds.files import take_fd

    lazy, runs = _lazy_runs(vmas)
    if not lazy:
        return set()
    inj = rctx.inj
    fd = inj.call(nr.userfaultfd, O_CLOEXEC | O_NONBLOCK)
    if fd < 0:
        raise RestoreError(f"lazy restore of process {rctx.image_pid}: userfaultfd() failed: "
                           f"{os.strerror(-fd)} (it needs CAP_SYS_PTRACE, or "
                           "vm.unprivileged_userfaultfd=1); restore without lazy instead")
    try:
        uffd = take_fd(rctx.pid, fd)
    finally:
        inj.check(nr.close, fd, what="close of the task's userfaultfd")
    pidfd = -1
    try:
        ranges = ffi.new("unsigned long[]", [x for v in lazy for x in (v.start, v.end - v.start)])
        r = lib.ck_lazy_register(uffd, ranges, len(lazy))
        if r < 0:
            raise RestoreError(f"lazy restore of process {rctx.image_pid}: registering its memory "
                               f"with userfaultfd failed: {os.strerror(-r)}; restore without lazy instead")
        runs.sort()
        flat = ffi.from_buffer("unsigned long[]", array.array("Q", itertools.chain.from_iterable(runs)))
        pidfd = os.pidfd_open(rctx.pid)
        guard = ffi.new("long *")
        prefetch = rctx.options.lazy != "touch"
        h = lib.ck_lazy_start(uffd, rctx.passed["pages"], pidfd, rctx.pid, flat, len(runs), int(prefetch),
                              WINDOW, CHUNK, guard)
        if h < 0:
            raise RestoreError(f"lazy restore of process {rctx.image_pid}: the page handler did not "
                               f"start: {os.strerror(-h)}")
    finally:
        os.close(uffd)
        if pidfd >= 0:
            os.close(pidfd)
    rctx.shared.setdefault(HANDLERS, []).append(Handler(rctx.pid, int(h), int(guard[0])))
    return {id(v) for v in lazy}


def _lazy_runs(vmas):
    """The VMAs served lazily — private anonymous with stored pages, none of them kept in a
    parent image (an incremental dump: the handler maps this image's pages.img only) — and
    their runs (address, length, offset in pages.img), touching ones merged within a VMA
    (one UFFDIO_COPY fills one VMA); zero runs left out (a touch gets a zero page)."""
    lazy, runs = [], []
    for v in vmas:
        if v.kind != "anon" or v.shared or not v.pages:
            continue
        mine: list[list[int]] = []
        for p in v.pages:
            if p.zero:
                continue
            if p.image:
                break
            addr, length, offset = p.addr, p.npages * PAGE, p.offset
            if mine and mine[-1][0] + mine[-1][1] == addr and mine[-1][2] + mine[-1][1] == offset:
                mine[-1][1] += length
            else:
                mine.append([addr, length, offset])
        else:
            if mine:
                lazy.append(v)
                runs += mine
    return lazy, runs
