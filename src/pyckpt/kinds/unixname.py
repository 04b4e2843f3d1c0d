"""Unix sockets by name: listeners, their connections, clients, bound datagram sockets.

unix.py saves the unnamed unix sockets; this module saves every unix socket
that has a name or is connected to one that has:

- a listening stream or seqpacket socket on a path or an abstract name, with
  its backlog, options (SO_PASSCRED, buffer sizes) and, for a path, the mode
  and owner of its socket file.  At restore it is bound to its name again and
  listens.  A stale socket file at the path (the dead original's, after
  `dump --kill`) is replaced, but only when nothing listens on it: pyckpt
  connects to it first (a live server there sees one connection opened and
  closed), and a live socket there (the original still running, another
  copy) is a `SocketPathInUseError` naming the path; so is a file that is not
  a socket.  An abstract name
  in use is the same error; a copy in `new_netns` has its own abstract names.
  A listener whose socket file had been removed while it ran is bound and its
  file removed again.
- its accepted connections (the server side: its name is the listener's)
  and clients connected to it, with the data queued in each direction,
  shutdown state and options, when both ends are in the image: the client is
  connected to the restored listener and the listener accepts it, in pyckpt,
  before the task exists; so getsockname() on the server side shows the
  listener's name and getpeername() on the client shows it too, as before
  (and a client that was bound to a name of its own is bound to it again).
  A pair whose listener is not in the image (closed since) comes back as an
  unnamed pair: its data and state are kept, getsockname()/getpeername() then
  show an empty name.
- clients still waiting in the accept queue of a listener of the image: they
  are connected again in the same order, so the restored listener accepts
  them as it would have.  A waiting client that had already sent data is
  refused by name (the data sits in a socket no fd holds, which cannot be
  read without accepting it).  Connections from processes outside the image
  that wait to be accepted are dropped: those clients saw their connection
  reset when the original died, as when a server dies.
- a connection whose other end is outside the image (an outside client of a
  listener of the image, or a client of a listener outside the image): it
  comes back as a connection the peer has closed, as after that peer died:
  the data queued for this end is read first, then end-of-file (a write gets
  EPIPE).  A server's end of such a connection still shows the listener's
  name (it is accepted from the restored listener from a throwaway client);
  a client's end shows an empty peer name.
- datagram sockets bound to a path or an abstract name, connected or not,
  with their queued datagrams (message boundaries kept; the sender address
  recvfrom() gives for a datagram queued before the dump is empty after the
  restore), and unnamed datagram sockets connected to a named one with data
  queued or with the named one in the image: connected to that name again.

Copies side by side: a copy restored while the original runs (new_pidns)
cannot bind the original's socket path: restore fails with a
`SocketPathInUseError` naming the path, before any process exists.  The way
to run copies side by side is a mount namespace per copy in which the
socket's directory is a private one, e.g.

    unshare -m --propagation private sh -c \
        'mount -t tmpfs tmpfs /run/app && exec pyckpt restore --new-pidns IMG'

(the copy lives in that namespace: its socket file is there, and the
original's is not seen).  pyckpt does not rename paths: a program keeps the
names it was given.  Abstract names need `new_netns` (each network namespace
has its own).

An image an ordinary user owns (see trust.py) binds only in directories that
user may write, connects only to sockets it may, and its socket files must
be that user's: else an UntrustedImageError, before anything is bound.

Refused: file descriptors in flight (SCM_RIGHTS) in any queue (named, like
every refusal, with the fd), a socket bound to a relative path (its meaning
depends on a directory that may have changed), a client waiting to be
accepted with data sent.  The credentials of queued messages (SCM_CREDENTIALS)
are pyckpt's after a restore.  A restore that fails after binding a path
removes the socket file it made (restorer.py calls `undo`); a stale file it
had replaced stays removed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import termios

from .. import _sock as socket  # (socket's calls without its import: _sock.py)
from .._dataclass import dataclass, field

from ..errors import RestoreError, SocketPathInUseError, UnsupportedFdError
from ..image import padded, record
from ..problems import Fix, needs
from .context import DumpContext, RestoreContext
from .files import DumpedFd, FileKind, file_kind, set_status_flags
from .unix import (RCV_SHUTDOWN, SEND_SHUTDOWN, SO_SNDBUFFORCE, TCP_ESTABLISHED, TCP_LISTEN, TYPE_NAMES,
                   Message, _diag, _fill, _options, _set_options, _set_peek_off, _show_name,
                   peek_queue, sockets_in_image, take)

SETTABLE_FLAGS = os.O_NONBLOCK | getattr(os, "O_ASYNC", 0o20000)
SIOCUNIXFILE = 0x89E0  # an O_PATH fd of the file a unix socket is bound to
SIOCOUTQ = termios.TIOCOUTQ
ROLES = ("listen", "bound", "stream", "dgram")


@record(110, scope="image")
@dataclass
class UnixNamedRecord:
    """One unix socket with a name, or connected to one that has a name."""

    id: int
    ino: int
    type: int  # SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
    # "listen": a listener; "bound": a stream/seqpacket socket bound, not listening nor
    # connected; "stream": a connected stream/seqpacket socket; "dgram": a datagram socket
    role: str
    address: bytes  # its own name (b"": none); an abstract name starts with NUL
    flags: int  # file status flags, without O_CLOEXEC
    shutdown: int
    passcred: bool
    sndbuf: int
    rcvbuf: int
    peek_off: int
    backlog: int = 0  # a listener
    waiting: list[int] = field(default_factory=list)  # a listener: its waiting clients in the image
    peer_ino: int = 0  # the peer, when the image holds it
    peer_address: bytes = b""  # the peer's name (a datagram socket connects to it again)
    peer_outside: bool = False  # connected to a socket outside the image (or gone): peer closed
    listener_ino: int = 0  # "stream": waiting in the accept queue of this listener of the image
    file_mode: int = -1  # a path's socket file: its mode and owner (-1: none)
    file_uid: int = -1
    file_gid: int = -1
    unlinked: bool = False  # the path no longer led to this socket at the dump
    messages: list[Message] = field(default_factory=list)
    length: int = 0
    offset: int = 0
    xxh3: int = 0
    dropped: int = 0  # a listener: connections from outside the image waiting (not restored)

    def stored_runs(self) -> list[tuple[int, int, int]]:
        return [(self.offset, padded(self.length), self.xxh3)] if self.length else []


# --- dump ------------------------------------------------------------------------


def _waiting_at(ctx: DumpContext) -> dict[int, int]:
    """Client inode -> inode of the listener in whose accept queue it waits (any listener)."""
    cached = ctx.objects.get("unix waiting clients")
    if cached is None:
        cached = {c: ino for ino, info in _diag(ctx).items() if info.state == TCP_LISTEN for c in info.icons}
        ctx.objects["unix waiting clients"] = cached
    return cached


def handles(ctx: DumpContext, ino: int) -> bool:
    """Whether this module saves the unix socket `ino` (else unix.py does, which asks)."""
    table = _diag(ctx)
    info = table.get(ino)
    if info is None or info.type not in TYPE_NAMES:
        return False
    if info.state == TCP_LISTEN or info.name or ino in _waiting_at(ctx):
        return True
    peer = table.get(info.peer) if info.peer else None
    if peer is None or not peer.name:
        return False
    if info.type == socket.SOCK_DGRAM and info.peer not in sockets_in_image(ctx) and not info.rqueue:
        return False  # unix.py: a client of a datagram server outside the image, nothing queued
    return True


def _socket_file(f: DumpedFd, path: bytes) -> tuple[int, int, int, bool]:
    """(mode, uid, gid, unlinked) of the socket file of a socket bound to `path`, seen
    from the target's root."""
    try:
        st = os.lstat(f"/proc/{f.pid}/root".encode() + path)
    except OSError:
        return -1, -1, -1, True
    same = stat.S_ISSOCK(st.st_mode)
    if same:
        sock = take(f.pid, f.fd)
        try:
            fd = fcntl.ioctl(sock.fileno(), SIOCUNIXFILE)
        except OSError:
            fd = -1  # an older kernel: the socket file at the path is taken as its own
        finally:
            sock.close()
        if fd >= 0:
            try:
                own = os.fstat(fd)
                same = (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)
            finally:
                os.close(fd)
    if not same:
        return -1, -1, -1, True
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, False


@file_kind
class UnixNamedSocket(FileKind):
    """Unix sockets with a name or connected to one (see the module's docstring)."""

    name = "unix-named"
    records = (UnixNamedRecord,)
    before = ("unix",)  # unix.py takes every other socket, to refuse it by name

    def claims(self, f: DumpedFd) -> bool:
        return False  # unix.py claims every socket and hands these to dump() (see `handles`)

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        table = _diag(ctx)
        info = table[f.st.st_ino]
        kind = f"unix {TYPE_NAMES[info.type]} socket"
        address = info.name or b""
        where = f"{f.link}, {_show_name(address)}" if address else f.link
        if address and address[:1] != b"\0" and not address.startswith(b"/"):
            raise UnsupportedFdError(f.pid, f.fd, f"{kind} bound to a relative path", where)
        in_image = sockets_in_image(ctx)
        flags = f.info.flags & ~os.O_CLOEXEC
        rec = UnixNamedRecord(file_id, f.st.st_ino, info.type, "", address, flags, info.shutdown,
                              *_options(f))
        listener = info.state == TCP_LISTEN
        if address and address[:1] != b"\0" and (listener or info.type == socket.SOCK_DGRAM
                                                 or info.state != TCP_ESTABLISHED):
            # a socket bound to the path itself (an accepted socket only shares its name)
            rec.file_mode, rec.file_uid, rec.file_gid, rec.unlinked = _socket_file(f, address)
        peer = table.get(info.peer) if info.peer else None
        if peer is not None:
            rec.peer_address = peer.name or b""
            if info.peer in in_image:
                rec.peer_ino = info.peer
            else:
                rec.peer_outside = True
        if listener:
            rec.role, rec.backlog = "listen", info.wqueue
            rec.waiting = [c for c in info.icons if c in in_image]
            rec.dropped = max(info.rqueue, len(info.icons)) - len(rec.waiting)
            return [rec]
        waiting_at = _waiting_at(ctx).get(f.st.st_ino)
        if info.type == socket.SOCK_DGRAM:
            rec.role = "dgram"
        elif waiting_at is not None:
            rec.role = "stream"
            if waiting_at in in_image:
                rec.listener_ino = waiting_at
                sent = _sent_unread(f)
                if sent:
                    raise UnsupportedFdError(
                        f.pid, f.fd, f"{kind} waiting to be accepted with data already sent",
                        f"{where}, waiting at {_show_name(table[waiting_at].name or b'')}; "
                        "the listener has not accepted it yet")
            else:
                rec.peer_outside = True
                rec.peer_address = table[waiting_at].name or b""
            return [rec]  # nothing can have been queued for it yet
        elif info.state == TCP_ESTABLISHED or info.peer:
            rec.role = "stream"
            rec.peer_outside = rec.peer_outside or not info.peer  # its peer closed
        else:
            rec.role = "bound"
            return [rec]
        sock = take(f.pid, f.fd)
        try:
            messages = peek_queue(sock, f.pid, f.fd, bool(info.shutdown & RCV_SHUTDOWN))
        finally:
            sock.close()
        data = b"".join(messages)
        if messages:
            rec.messages = [Message(len(m)) for m in messages]
            rec.length = len(data)
            if data:
                rec.offset, rec.xxh3 = ctx.pages.append(data + bytes(padded(len(data)) - len(data)))
        return [rec]

    def open(self, rctx: RestoreContext, rec: UnixNamedRecord) -> int:
        _build(rctx)
        key = ("unix", rec.ino)
        if key not in rctx.passed:  # checking: a plain socket holds its place
            rctx.pass_fd(key, lambda: socket.socket(socket.AF_UNIX, rec.type | socket.SOCK_CLOEXEC).detach())
        return set_status_flags(os.dup(rctx.passed[key]), rec.flags, SETTABLE_FLAGS)

    def describe(self, rec: UnixNamedRecord) -> str:
        kind = f"unix {TYPE_NAMES.get(rec.type, rec.type)} socket:[{rec.ino}]"
        name = _show_name(rec.address) if rec.address else ""
        if rec.role == "listen":
            text = f"{kind} listening on {name} (backlog {rec.backlog}, {len(rec.waiting)} waiting)"
            if rec.dropped:
                text += (f", {rec.dropped} connection(s) from outside the image waiting to be "
                         "accepted (dropped: not restored)")
        elif rec.role == "bound":
            text = f"{kind} bound to {name}"
        else:
            text = f"{kind}{' on ' + name if name else ''}"
            peer = _show_name(rec.peer_address) if rec.peer_address else ""
            if rec.listener_ino:
                text += f", waiting to be accepted at {peer or 'socket:[%d]' % rec.listener_ino}"
            elif rec.peer_ino:
                text += f", peer socket:[{rec.peer_ino}]{' ' + peer if peer else ''}"
            elif rec.peer_outside:
                text += f", peer outside the image{' ' + peer if peer else ''} (restored closed)"
            elif peer:
                text += f", connected to {peer}"
        if rec.unlinked and rec.address[:1] == b"/":
            text += " (socket file removed)"
        return f"{text}, {len(rec.messages)} message(s) / {rec.length} bytes queued"


def _sent_unread(f: DumpedFd) -> int:
    """Buffer memory of what the socket sent and its peer has not read (SIOCOUTQ: the
    buffers' size, not the bytes): 0 when nothing waits."""
    sock = take(f.pid, f.fd)
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0" * 4))[0]
    finally:
        sock.close()


# --- restore ---------------------------------------------------------------------

BUILT = "unixname: built"  # RestoreContext.shared
BOUND = "unixname: socket files bound"  # RestoreContext.shared: (path, dev, ino) made here


def undo(rctx: RestoreContext) -> None:
    """A restore failed: remove the socket files it bound (those still there as it made
    them), so that it leaves nothing behind."""
    for path, dev, ino in rctx.shared.pop(BOUND, []):
        try:
            st = os.lstat(path)
            if (st.st_dev, st.st_ino) == (dev, ino):
                os.unlink(path)
        except OSError:
            pass


def _live(path: bytes, stype: int) -> bool:
    """Whether a socket listens (or a datagram socket is bound) at the socket file `path`."""
    probe = socket.socket(socket.AF_UNIX, stype | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return False
    except OSError as e:
        # EAGAIN: a listener with a full queue; EPROTOTYPE: a live socket of another type
        return e.errno not in (errno.ENOENT,)
    finally:
        probe.close()
    return True


def _taken(rctx: RestoreContext, rec: UnixNamedRecord, address: bytes, why: str) -> SocketPathInUseError:
    shown = _show_name(address)
    if address[:1] == b"\0":
        error = SocketPathInUseError(
            shown, f"unix socket name {shown} is in use{why}: another process holds it (the "
            "original or another copy); stop it, or restore the copy in its own network "
            "namespace (--new-netns), which has its own abstract names")
        return needs(error, Fix("new_netns"))
    return SocketPathInUseError(
        shown, f"unix socket path {shown} is in use{why}: a live socket is there (the original "
        f"or another copy); stop it (dump --kill saves and stops the original), or restore the "
        f"copy in a mount namespace of its own with a private {os.path.dirname(shown)} (see "
        "pyckpt.kinds.unixname: unshare -m, a tmpfs mounted there, then pyckpt restore)")


def _check_name(rctx: RestoreContext, rec: UnixNamedRecord, address: bytes) -> None:
    """Refuse (SocketPathInUseError) a name a live socket holds; a stale socket file
    is fine (it will be replaced)."""
    if address[:1] == b"\0":
        with socket.socket(socket.AF_UNIX, rec.type | socket.SOCK_CLOEXEC) as s:
            try:
                s.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise _taken(rctx, rec, address, "") from None
                raise RestoreError(f"cannot bind a unix socket to {_show_name(address)}: {e.strerror}") from None
        return
    try:
        st = os.lstat(address)
    except FileNotFoundError:
        return
    except OSError as e:
        raise RestoreError(f"cannot bind a unix socket to {_show_name(address)}: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathInUseError(_show_name(address), f"cannot bind a unix socket to "
                                   f"{_show_name(address)}: a file that is not a socket is there; "
                                   "remove it, or restore in a mount namespace of its own")
    if _live(address, rec.type):
        raise _taken(rctx, rec, address, "")


def _bind(rctx: RestoreContext, s: socket.socket, rec: UnixNamedRecord, address: bytes) -> None:
    """Bind `s` to `address`, replacing a stale socket file; the socket file gets its mode
    and owner (one that had been removed is removed again by _make_all, at the end)."""
    _check_name(rctx, rec, address)
    if address[:1] == b"/":
        try:
            if stat.S_ISSOCK(os.lstat(address).st_mode):
                os.unlink(address)  # stale: nothing listens there (_check_name)
        except FileNotFoundError:
            pass
    try:
        s.bind(address)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise _taken(rctx, rec, address, " (taken while restoring)") from None
        hint = (f" (its directory {os.fsdecode(os.path.dirname(address))} is gone: create it, as the "
                "program had it)" if e.errno == errno.ENOENT else "")
        raise RestoreError(f"cannot bind a unix socket to {_show_name(address)} again: "
                           f"{e.strerror}{hint}") from None
    if address[:1] == b"/":
        st = os.lstat(address)
        rctx.shared.setdefault(BOUND, []).append((address, st.st_dev, st.st_ino))
        if rec.file_mode >= 0:
            os.chown(address, rec.file_uid, rec.file_gid)
            os.chmod(address, rec.file_mode)


def _fresh(rec: UnixNamedRecord) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, rec.type | socket.SOCK_CLOEXEC)
    try:
        _set_options(s, rec)
    except BaseException:
        s.close()
        raise
    return s


def _build(rctx: RestoreContext) -> None:
    """Every named unix socket of the image, made at once (the tree shares them) and
    handed to the tasks through rctx.passed; when checking, only the names are checked."""
    if rctx.shared.get(BUILT):
        return
    rctx.shared[BUILT] = True
    reader = getattr(rctx.image, "reader", rctx.image)
    recs = {r.ino: r for r in reader.of_type(UnixNamedRecord)}
    rctx.collect(lambda: _check_trust(rctx, recs))
    if rctx.checking:
        for r in recs.values():
            if r.address and r.role in ("listen", "bound", "dgram"):
                rctx.collect(lambda r=r: _check_name(rctx, r, r.address))
        return
    made: dict[int, socket.socket] = {}
    # should the restore fail, the socket files it bound go; once the processes run,
    # they are theirs and nothing touches them
    rctx.on_undo("unix socket files", lambda: undo(rctx))
    rctx.after_release("unix socket files are the processes'", lambda: rctx.shared.pop(BOUND, None))
    try:
        _make_all(rctx, recs, made)
        for ino, s in made.items():
            rctx.pass_fd(("unix", ino), s.detach)
    finally:
        for s in made.values():
            s.close()


def _check_trust(rctx: RestoreContext, recs: dict[int, UnixNamedRecord]) -> None:
    """An image an ordinary user owns (see trust.py) binds and connects only where that
    user may: the directory of each path bound (where a stale socket file would be
    replaced), each path a datagram socket connects to; and its socket files are
    that user's.  Checked before anything is bound (an UntrustedImageError)."""
    from .. import trust
    from ..restorer import TRUST

    if TRUST not in rctx.shared:
        return
    owner, _ = rctx.shared[TRUST]
    listening = {(r.type, r.address) for r in recs.values() if r.role == "listen"}
    paths, foreign = [], []
    for r in recs.values():
        if r.address[:1] == b"/" and not (r.role == "stream" and (r.type, r.address) in listening):
            path = os.fsdecode(r.address)
            paths.append((os.path.dirname(path) or "/", os.W_OK | os.X_OK,
                          f"as the directory to bind the unix socket {path} in"))
            if r.file_mode >= 0 and (owner.uid is None or r.file_uid != owner.uid
                                     or owner.gids is None or r.file_gid not in owner.gids):
                foreign.append(f"a unix socket file {path} owned by uid {r.file_uid}, gid {r.file_gid}")
        if r.role == "dgram" and r.peer_address[:1] == b"/":
            paths.append((os.fsdecode(r.peer_address), os.W_OK, "as a socket to connect to"))
    wants = foreign + trust.denied_files(owner, {}, paths)
    if wants:
        raise trust.refusal(rctx.image.path, owner, "; ".join(wants))


def _make_all(rctx: RestoreContext, recs: dict[int, UnixNamedRecord], made: dict[int, socket.socket]) -> None:
    listeners = {}  # (type, address) -> the listener's new socket
    for r in recs.values():  # names first: listeners, bound sockets, bound datagram sockets
        if r.role in ("listen", "bound") or (r.role == "dgram" and r.address):
            s = made[r.ino] = _fresh(r)
            _bind(rctx, s, r, r.address)
            if r.role == "listen":
                s.listen(max(r.backlog, 16) + len(recs))  # room to rebuild; set back below
                listeners[(r.type, r.address)] = s
    for r in recs.values():  # datagram sockets: queues, then their peers
        if r.role == "dgram":
            _make_dgram(rctx, r, made)
    for r in recs.values():
        if r.role == "dgram" and r.peer_address:
            _connect_dgram(rctx, r, made[r.ino], recs)
    for r in recs.values():  # connections: pairs, then those whose peer is outside
        if r.role == "stream" and not r.listener_ino and r.ino not in made:
            _make_connection(rctx, r, recs, listeners, made)
    for r in recs.values():  # clients waiting to be accepted, in each queue's order
        if r.role == "listen":
            for c in r.waiting:
                client = recs.get(c)
                if client is None or client.listener_ino != r.ino:
                    raise RestoreError(f"image at {rctx.image.path}: a client socket:[{c}] waiting at "
                                       f"socket:[{r.ino}] is missing (damaged image)")
                s = made[c] = _fresh(client)
                if client.address:
                    _bind(rctx, s, client, client.address)
                s.connect(r.address)
    for r in recs.values():
        if r.role == "listen":
            made[r.ino].listen(r.backlog)
    for r in recs.values():  # once nothing needs to connect by path any more
        if r.unlinked and r.address[:1] == b"/" and r.role in ("listen", "bound", "dgram"):
            os.unlink(r.address)
    for r in recs.values():
        s = made[r.ino]
        _set_peek_off(s, r)
        if r.role in ("stream", "dgram") and r.peer_ino:
            if r.shutdown & SEND_SHUTDOWN:
                s.shutdown(socket.SHUT_WR)
            if r.shutdown & RCV_SHUTDOWN:
                s.shutdown(socket.SHUT_RD)


def _make_dgram(rctx: RestoreContext, r: UnixNamedRecord, made: dict[int, socket.socket]) -> None:
    if r.address:  # bound (made[r.ino], by _make_all): its queue is sent to its name
        if r.messages:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sender:
                sender.connect(r.address)
                _fill(rctx, r, sender)
        return
    # unnamed: its queue comes from the other end of a pair, which is then closed
    a, b = socket.socketpair(socket.AF_UNIX, r.type | socket.SOCK_CLOEXEC)
    try:
        _set_options(a, r)
        if r.length:
            b.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 2 * r.length + 65536)
        _fill(rctx, r, b)
    except BaseException:
        a.close()
        raise
    finally:
        b.close()
    made[r.ino] = a


def _connect_dgram(rctx: RestoreContext, r: UnixNamedRecord, s: socket.socket, recs: dict) -> None:
    name = r.peer_address
    try:
        s.connect(name)
    except OSError as e:
        if r.peer_ino:
            raise RestoreError(f"cannot connect unix datagram socket:[{r.ino}] to "
                               f"{_show_name(name)} again: {e.strerror}") from None
        raise RestoreError(f"cannot connect a unix datagram socket to {_show_name(name)} again: "
                           f"{e.strerror or e} (is the server there?)") from None


def _make_connection(rctx: RestoreContext, r: UnixNamedRecord, recs: dict,
                     listeners: dict, made: dict[int, socket.socket]) -> None:
    """A connected stream/seqpacket socket (and its peer, when the image holds it)."""
    peer = recs.get(r.peer_ino) if r.peer_ino else None
    if r.peer_ino and (peer is None or peer.peer_ino != r.ino):
        raise RestoreError(f"image at {rctx.image.path}: the peer socket:[{r.peer_ino}] of "
                           f"socket:[{r.ino}] is missing (damaged image)")
    # the server side is the one named as a listener of the image is
    server, client = r, peer
    if peer is not None and (r.type, r.address) not in listeners and (peer.type, peer.address) in listeners:
        server, client = peer, r
    listener = listeners.get((server.type, server.address)) if server.address else None
    if listener is not None:
        c = _fresh(client) if client is not None else socket.socket(socket.AF_UNIX, r.type | socket.SOCK_CLOEXEC)
        try:
            if client is not None and client.address:
                _bind(rctx, c, client, client.address)
            c.connect(server.address)
            s, _ = listener.accept()
        except BaseException:
            c.close()
            raise
        s.setblocking(True)
        _set_options(s, server)
    else:  # no listener of the image to accept from: an unnamed pair
        s, c = socket.socketpair(socket.AF_UNIX, r.type | socket.SOCK_CLOEXEC)
        _set_options(s, server)
        if client is not None:
            _set_options(c, client)
    made[server.ino] = s
    if client is not None:
        made[client.ino] = c
        _fill(rctx, server, c)
        _fill(rctx, client, s)
    else:  # the peer is outside the image, or gone: the data, then end-of-file
        try:
            if server.length:
                c.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 2 * server.length + 65536)
            _fill(rctx, server, c)
        finally:
            c.close()


def validate(image) -> None:
    """Roles and queues make sense; peers and waiting clients name records that name
    them back."""
    from ..errors import ImageError

    recs = {r.ino: r for r in getattr(image, "reader", image).of_type(UnixNamedRecord)}
    for r in recs.values():
        bad = (r.type not in TYPE_NAMES or r.role not in ROLES
               or sum(m.length for m in r.messages) != r.length or any(m.length < 0 for m in r.messages)
               or len(r.address) > 108 or len(r.peer_address) > 108
               or (r.address[:1] not in (b"", b"\0", b"/"))
               or (r.role in ("listen", "bound") and not r.address)
               or (r.role == "dgram") != (r.type == socket.SOCK_DGRAM)
               or not 0 <= r.backlog < 1 << 31 or r.file_mode > 0o7777 or r.dropped < 0)
        if bad:
            raise ImageError(f"image at {image.path}: unix socket:[{r.ino}] has a bad name, role or queue")
        if r.peer_ino and (r.peer_ino not in recs or recs[r.peer_ino].peer_ino != r.ino):
            raise ImageError(f"image at {image.path}: unix socket:[{r.ino}] names a peer "
                             f"socket:[{r.peer_ino}] that does not name it back")
        for c in r.waiting:
            if r.role != "listen" or c not in recs or recs[c].listener_ino != r.ino:
                raise ImageError(f"image at {image.path}: unix socket:[{r.ino}] names a waiting client "
                                 f"socket:[{c}] that does not wait there")
        if r.listener_ino and (r.listener_ino not in recs or r.ino not in recs[r.listener_ino].waiting):
            raise ImageError(f"image at {image.path}: unix socket:[{r.ino}] waits at a listener "
                             "that does not list it")
