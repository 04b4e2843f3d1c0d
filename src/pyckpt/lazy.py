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
pages.img, a pidfd of the process, its guards' sockets and the report socket
(and stderr if it is a terminal or a regular file), so it outlives the
caller (`pyckpt restore --lazy` exits at once); it is reparented to init, or to
the caller's child subreaper (pytest's, bench's), which then reaps it.  It answers each fault with
UFFDIO_COPY (each piece checked first: see Checks) of the window around it (WINDOW, the faulting page first) straight
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

Checks: what changed in the promise.  A copying restore checks every page's
checksum before any process exists.  A lazy restore checks everything else
before any process exists — the records (every byte of records.img), the place
of every stored run in pages.img, the checksums of the pages it reads as a
copying restore does (private file mappings' copy-on-write pages, a parent
image's runs, the contents of deleted files...) — and fixes pages.img's
identity (held open since PREPARE, its inode and size those the image was
opened with; the handler refuses to start on another size).  The pages it serves
lazily are checked by the handler instead, piece by piece (a stored run's
checksummed pieces: PIECE of addresses, PageRun.chunks), the first time any byte
of a piece is to be copied, before the UFFDIO_COPY — whether for a fault, the
background push, a forked child or a moved range (one check per piece; the
check is by offset in pages.img).  With `lazy=True`, once the processes run
(pyckpt says so on the report socket after the release, or is gone), a thread of
the handler checks the pieces ahead of the push on the other CPU; one it finds
bad is not copied either: the handler acts when it is to be served.  No process
ever runs on a page that is not the image's: a piece that fails its checksum is
never copied.  But a lazily
restored process may be killed later, after it has run a while, if the image
turns out corrupted (where an eager restore refuses before any process exists):
the handler SIGKILLs every process it serves, waits until they are gone, and
exits with status 6.  If that happens while pyckpt is still restoring, the
restore fails, undone, with an ImageError saying it (as an eager restore would,
only later).  The handler checks with python-xxhash's own XXH3 function (the one
that made the checksums, found loaded in pyckpt and first compared with xxhash's
digests: memory.hash_fn); if it cannot be found, a lazy restore checks every page
before any process exists, as a copying restore does.  (As for a copying
restore, a writer of pages.img between the check and the copy is not guarded
against: the file is the image's, opened once.)

Why the processes were killed is said once, by the first of the handler and its
guards to see it: on the report socket pyckpt holds (`Handler.wait()` returns it;
the restore's ImageError, if it is still restoring), on the handler's stderr if
that is a terminal or a regular file (`pyckpt restore --lazy` leaves its stderr
to it; a pipe is not kept, so a reader sees its end when the command exits), and
in the kernel log (/dev/kmsg: `dmesg`, the journal).

Failure story.  pages.img is held open: its removal changes nothing.  The
handler has two guards, its children each in a
session of its own, each holding a copy of every uffd (so none is closed while a
process waits on it: the last close of a uffd would let later faults fill zeros
silently) and a pidfd of every process it serves.  If the handler ends before it
is done — killed, or a copy failed (pages.img cut shorter: a read error, or
SIGBUS checking a piece) — each guard SIGKILLs every one of those processes,
waits until they are gone, says so (unless the handler did) and exits (status
1): a process is never left running with missing memory.  On a failed copy the
handler itself also SIGKILLs them and waits until they are gone before it exits
with status 3, saying why.

The handler watches its guards: it polls its sockets to them with the uffds (a
guard never writes: any event is its end), and when a guard ends first (killed)
it reaps it and forks a new one at once, which holds every uffd and pidfd from
the instant it exists (they are in the handler's fd table; nothing is sent
again).  Meanwhile the other guard still guards: a guard killed and then the
handler, however soon after, leaves the processes killed, never running on.
The first guard is forked as soon as the handler has said it runs, while the
restore goes on (on the other CPU), and before the process is released: pyckpt
waits for its PID (in `Handler`) in the DEFERRED stage, and fails the restore
without it; the second is forked right after.  While a guard is missing because
it could not be started (fork or socketpair failed) the handler pushes every remaining page at
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
too; `Handler.wait()` waits until it is done and says why it killed the processes,
if it did).  A handler serves at most
1024 processes (its own and those forked while lazy) and 4096 faults waiting at
once on pending events; beyond that it gives up, and the guard kills them.  A dump
of a process whose pages are still coming is refused (kinds/memory.py: a VMA
with the "um" flag; its missing pages are not in pagemap).
"""

from __future__ import annotations

import _socket  # (not socket: selectors, enums; nor typing: re — a command's start-up)
import array
import collections
import itertools
import os

from ._native._ck import ffi, lib
from .arch import PAGE
from .errors import ImageError, RestoreError
from .inject import nr
from .kinds.memory import PIECE, hash_fn

WINDOW = 1 << 20  # copied around a fault (aligned), the faulting page first
CHUNK = 2 << 20  # copied at a time in the background, between faults
O_CLOEXEC, O_NONBLOCK = 0o2000000, 0o4000
HANDLERS = "lazy handlers"  # RestoreContext.shared: [Handler] of this restore
# RestoreContext.shared: (address of the checksum function the handlers check pieces
# with, or 0 when every piece was checked before any process existed; the id()s of the
# VMA records whose pieces are left to them)
CHECKED_WHEN_SERVED = "lazy: checked when served"
ESTALE = 116

# The report socket of each handler this process started, by handler PID, until what
# it said is read (Handler.wait; or swept at the next lazy restore), then what it said.
_REPORTS: dict[int, _socket.socket] = {}
_SAID: dict[int, str | None] = {}


class Handler(collections.namedtuple("Handler", "pid handler guard")):
    """pid: the restored process it serves (and the children that process forks);
    handler: PID of the handler process; guard: PID of its first guard (the others are
    the handler's children too)."""

    __slots__ = ()

    def wait(self, timeout: float | None = None) -> str | None:
        """Wait until the handler is done (at most `timeout` s, else TimeoutError): None
        once every page came in (or the processes it served ended), else why they were
        killed, in one line: a piece of pages.img that failed its checksum when it was
        first to be served (the image is corrupted), a failed read of pages.img, or the
        handler killed before it was done.  Only in the process that restored them
        (LookupError otherwise)."""
        if self.handler in _SAID:
            return _SAID[self.handler]
        sock = _REPORTS.get(self.handler)
        if sock is None:
            raise LookupError(f"lazy page handler {self.handler} was not started by this process")
        sock.settimeout(timeout)
        try:
            data = _recv(sock)
        except TimeoutError:
            raise TimeoutError(f"lazy page handler {self.handler} of process {self.pid} is still "
                               f"serving after {timeout} s") from None
        return _said(self.handler, data)


def _recv(sock: _socket.socket, flags: int = 0) -> bytes:
    """What the handler said (b"": nothing, it is done).  A handler that ended with our
    'R' unread resets the connection: said once, before what it sent, which is kept."""
    for _ in range(2):
        try:
            return sock.recv(4096, flags)
        except ConnectionResetError:
            continue
    return b""


def _said(handler: int, data: bytes) -> str | None:
    sock = _REPORTS.pop(handler, None)
    if sock is not None:
        sock.close()
    said = data[1:].decode(errors="replace").strip() or None  # (after its kind: I or E)
    if said is not None or handler not in _SAID:  # (another thread's read may have had it)
        _SAID[handler] = said
    while len(_SAID) > 1024:  # the oldest forgotten
        del _SAID[next(iter(_SAID))]
    return _SAID[handler]


def _sweep() -> None:
    """Read (and close) the report sockets of handlers that are done."""
    for handler, sock in list(_REPORTS.items()):
        try:
            data = _recv(sock, _socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        _said(handler, data)


def _running(handler: int) -> None:
    """Tell the handler its processes run: it checks pieces ahead of its push on the
    other CPU from now on (lazy=True; not while the restore needs it)."""
    sock = _REPORTS.get(handler)
    if sock is not None:
        try:
            sock.send(b"R", _socket.MSG_DONTWAIT)
        except OSError:
            pass  # it is done, or gone: nothing to check ahead


def _undo(rctx, handler: int) -> None:
    """The restore failed: its processes were killed, so the handler ends at once — or it
    killed them itself because of the image (a piece of pages.img failed its checksum, or
    could not be read, while restoring): what it said then is kept for the restore's
    error (SAID: an ImageError)."""
    sock = _REPORTS.pop(handler, None)
    if sock is None:
        return
    try:
        sock.settimeout(2.0)
        data = _recv(sock)
    except OSError:
        data = b""
    finally:
        sock.close()
    if data[:1] == b"I":
        rctx.shared.setdefault(SAID, data[1:].decode(errors="replace").strip())


SAID = "lazy: said by a handler"  # RestoreContext.shared: why a handler killed the processes


def checked_up_front(image, views, shared: dict) -> tuple[list[tuple[int, int, int]], int]:
    """Lazy restore's VALIDATE: the stored runs (offset, length, xxh3) of `image` to check
    before any process exists — those of every record but the lazily served VMAs of
    `views` (the processes), whose pieces their handler checks when it first serves
    them (their place in pages.img is checked here) — and how many bytes are left to
    the handlers.  With no checksum function for the handlers (memory.hash_fn), every run."""
    from .kinds import stored_runs
    from .kinds.memory import VmaRecord

    fn = hash_fn()
    shared[CHECKED_WHEN_SERVED] = (fn, frozenset())
    if not fn:
        return stored_runs(image), 0
    later = {id(v): v for view in views for v in _lazy_runs(view.of_type(VmaRecord))[0]}
    size, left = image.pages_size, 0
    for v in later.values():
        for p in v.pages:
            if p.zero or p.image:
                continue
            length = p.npages * PAGE
            if p.offset < 0 or length <= 0 or p.offset % PAGE or p.offset + length > size:
                raise ImageError(f"image at {image.where}: a page run lies outside pages.img", path=image.where)
            left += length
    runs = []
    for rec in image.records:
        method = getattr(rec, "stored_runs", None)
        if method is not None and id(rec) not in later:
            runs += method()
    shared[CHECKED_WHEN_SERVED] = (fn, frozenset(later))
    return runs, left


def restore_pages(rctx, vmas) -> set[int]:
    """Register the private anonymous VMAs of `vmas` that have stored pages with a
    userfaultfd of the task and start their handler; returns the id()s of the VMAs
    it serves (restore_pages reads the others)."""
    from .kinds.files import take_fd

    lazy, runs = _lazy_runs(vmas)
    fn, later = rctx.shared.get(CHECKED_WHEN_SERVED, (0, frozenset()))
    served = {id(v) for v in lazy}
    if any(id(v) in later and id(v) not in served for v in vmas):  # never: one rule decides both
        raise RestoreError(f"lazy restore of process {rctx.image_pid}: pages left to the handler's "
                           "checks would be read unchecked (a bug)")
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
    ours = theirs = None
    try:
        ranges = ffi.new("unsigned long[]", [x for v in lazy for x in (v.start, v.end - v.start)])
        r = lib.ck_lazy_register(uffd, ranges, len(lazy))
        if r < 0:
            raise RestoreError(f"lazy restore of process {rctx.image_pid}: registering its memory "
                               f"with userfaultfd failed: {os.strerror(-r)}; restore without lazy instead")
        runs.sort()
        flat = ffi.from_buffer("unsigned long[]", array.array("Q", itertools.chain.from_iterable(runs)))
        # every piece it serves, checked by the handler when first served (fn 0: all were
        # checked before any process existed)
        stored, digests = _stored(lazy) if fn else ([], array.array("Q"))
        flat_stored = ffi.from_buffer("unsigned long[]", array.array("Q", itertools.chain.from_iterable(stored)))
        pidfd = os.pidfd_open(rctx.pid)
        status = ffi.new("int *")
        prefetch = rctx.options.lazy != "touch"
        _sweep()
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        h = lib.ck_lazy_start(uffd, rctx.passed["pages"], pidfd, rctx.pid, flat, len(runs), flat_stored,
                              len(stored), ffi.from_buffer("unsigned long[]", digests), len(digests), PIECE,
                              fn, rctx.image.pages_size, theirs.fileno(), int(prefetch), WINDOW, CHUNK, status)
        if h == -ESTALE:
            raise ImageError(f"image at {rctx.image.where}: pages.img was changed since the image was "
                             "opened (its size differs)", path=rctx.image.where)
        if h < 0:
            raise RestoreError(f"lazy restore of process {rctx.image_pid}: the page handler did not "
                               f"start: {os.strerror(-h)}")
    except BaseException:
        if ours is not None:
            ours.close()
        raise
    finally:
        os.close(uffd)
        if pidfd >= 0:
            os.close(pidfd)
        if theirs is not None:
            theirs.close()
    h = int(h)
    _REPORTS[h] = ours
    pending = [status[0]]  # its first guard's PID, to be read before the release

    def first_guard():
        g = lib.ck_lazy_guard(pending.pop())
        if g < 0:
            raise RestoreError(f"lazy restore of process {rctx.image_pid}: the guard of its page "
                               f"handler {h} did not start: {os.strerror(-g)}")
        rctx.shared.setdefault(HANDLERS, []).append(Handler(rctx.pid, h, int(g)))

    def undo():
        for fd in pending:
            os.close(fd)
        _undo(rctx, h)

    rctx.on_undo(f"lazy report {h}", undo)
    rctx.defer(f"lazy: the first guard of {h}", first_guard)  # (forked meanwhile)
    rctx.after_release(f"lazy: running {h}", lambda: _running(h))
    return {id(v) for v in lazy}


def _stored(lazy) -> tuple[list[tuple[int, int, int, int, int]], array.array]:
    """The stored runs of the VMAs `lazy` for the handler's checks, sorted by offset in
    pages.img — (offset, length, address, digests, index of the first in the digests) —
    and the digests: a run's own (one piece), or those of its pieces (PageRun.chunks,
    on the PIECE grid of addresses, which the handler computes)."""
    stored, digests = [], array.array("Q")
    for v in lazy:
        for p in v.pages:
            if not p.zero and not p.image:
                stored.append((p.offset, p.npages * PAGE, p.addr, len(p.chunks) or 1, len(digests)))
                digests.extend(p.chunks or (p.xxh3,))
    stored.sort()
    return stored, digests


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
