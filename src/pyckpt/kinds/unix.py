"""Unix sockets that are not named: socketpairs and unconnected sockets.

What a Python program holds most often is an unnamed unix socket: every
asyncio event loop has a socketpair (its self-pipe, also the signal wakeup
fd), multiprocessing.Pipe() is one, and so are the channels many runtimes
make between a parent and its children.  This module saves those:

- a connected socket whose peer the image also holds (a socketpair, in one
  process or across processes of a tree): both ends are saved, each with the
  data waiting in its receive queue, and restored as one new socketpair;
- a connected socket whose peer was closed (the peer's inode is gone): the
  data left in its queue is restored, then the other end is closed again, so
  the reader sees that data and then end-of-file, as before;
- an unconnected, unbound socket: a fresh socket of its type;
- a datagram socket connected to a named server outside the image (syslog's
  /dev/log, a daemon's socket) with nothing queued: connected to that name
  again (datagrams carry no connection state; a RestoreError when the
  server is gone).

Identity and links come from the kernel (sock_diag over netlink: inode,
type, state, peer inode, name, shutdown state), never from guesses.  Queued
data is read without consuming it: pyckpt takes the socket itself with
pidfd_getfd and peeks (MSG_PEEK) message by message through SO_PEEK_OFF,
which it sets back afterwards.  Stream data keeps its bytes, datagram and
seqpacket queues keep their message boundaries (empty messages too).  At
restore the other end of the new pair sends the data again before the task
exists, then each end's shutdown state and options (SO_PASSCRED, buffer
sizes, peek offset, O_NONBLOCK) are put back.

Named unix sockets (bound or listening, and sockets connected to one) are
unixname.py's: this module's dump hands them over (`unixname.handles`).
Refused with a clear error: queues holding file descriptors in flight
(SCM_RIGHTS), and every other socket (UDP, netlink, TCP other than that of
tcp.py and tcpconn.py...).  An unnamed
unix socket connected to a process outside the image is external (files.py):
the user passes a replacement at restore.  The credentials of queued
messages (SCM_CREDENTIALS) are those of pyckpt after a restore.  Peeking
leaves one trace: an empty datagram in the queue is marked as peeked, so a
later MSG_PEEK through SO_PEEK_OFF in the target skips it (recv still
returns it).
"""

from __future__ import annotations

import array
import os
import stat
import struct

from .. import _sock as socket  # (socket's calls without its import: _sock.py)
from .._dataclass import dataclass, field

from ..errors import DumpError, RestoreError, UnsupportedFdError
from ..image import padded, record
from .context import DumpContext, RestoreContext
from .files import DumpedFd, ExternalFileRecord, FileKind, file_kind, set_status_flags, take_fd

NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
NLM_F_REQUEST, NLM_F_DUMP, NLMSG_ERROR, NLMSG_DONE = 1, 0x300, 2, 3
UDIAG_SHOW_NAME, UDIAG_SHOW_PEER, UDIAG_SHOW_ICONS, UDIAG_SHOW_RQLEN = 0x01, 0x04, 0x08, 0x10
UNIX_DIAG_NAME, UNIX_DIAG_PEER, UNIX_DIAG_ICONS, UNIX_DIAG_RQLEN, UNIX_DIAG_SHUTDOWN = 0, 2, 3, 4, 6
TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN = 1, 7, 10
SO_PEEK_OFF, SO_DOMAIN, SO_PROTOCOL, SO_SNDBUFFORCE = 42, 39, 38, 32
RCV_SHUTDOWN, SEND_SHUTDOWN = 1, 2
TYPE_NAMES = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "datagram",
              socket.SOCK_SEQPACKET: "seqpacket"}
FAMILY_NAMES = {socket.AF_INET: "TCP/IP (AF_INET)", socket.AF_INET6: "TCP/IP (AF_INET6)",
                socket.AF_NETLINK: "netlink", getattr(socket, "AF_PACKET", 17): "packet"}
MAX_MESSAGES = 1 << 16  # a queue with more messages than this is refused (a sanity bound)
SETTABLE_FLAGS = os.O_NONBLOCK | getattr(os, "O_ASYNC", 0o20000)


@dataclass
class Message:
    length: int  # bytes of this message (stream: one chunk holding the whole queue)


@record(100, scope="image")
@dataclass
class UnixSocketRecord:
    """One unnamed unix socket (a socket has one open file description)."""

    id: int
    ino: int  # at dump time: how its peer names it
    type: int  # SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
    peer_ino: int  # the peer's inode when the image holds it; 0 when unconnected
    orphan: bool  # connected, but the peer was closed: restored closed again
    flags: int  # file status flags (O_NONBLOCK...), without O_CLOEXEC
    shutdown: int  # this end's RCV_SHUTDOWN | SEND_SHUTDOWN bits
    passcred: bool
    sndbuf: int
    rcvbuf: int
    peek_off: int  # -1: off
    # the receive queue: messages in order, their bytes back to back in pages.img
    messages: list[Message] = field(default_factory=list)
    length: int = 0
    offset: int = 0
    xxh3: int = 0
    # a datagram socket connected to a named socket outside the image (a
    # logging daemon's /dev/log...): connected to that name again at restore
    connect_to: str = ""

    def stored_runs(self) -> list[tuple[int, int, int]]:
        return [(self.offset, padded(self.length), self.xxh3)] if self.length else []


# --- what the kernel says: sock_diag ---------------------------------------------


@dataclass
class DiagInfo:
    ino: int
    type: int
    state: int
    peer: int = 0
    name: bytes | None = None
    rqueue: int = 0  # a listener: connections waiting to be accepted
    shutdown: int = 0
    wqueue: int = 0  # a listener: its backlog
    icons: list[int] = field(default_factory=list)  # a listener: the inodes of the clients
    #                                                 waiting in its accept queue, in order


def parse_diag(buf: bytes) -> tuple[list[DiagInfo], bool]:
    """Unix sockets from one netlink reply buffer; and whether NLMSG_DONE was seen."""
    out, done, pos = [], False, 0
    while pos + 16 <= len(buf):
        length, kind, _, _, _ = struct.unpack_from("=IHHII", buf, pos)
        if length < 16:
            break
        if kind == NLMSG_DONE:
            done = True
        elif kind == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", buf, pos + 16)
            raise OSError(-err, f"sock_diag: {os.strerror(-err)}")
        elif kind == SOCK_DIAG_BY_FAMILY:
            _, stype, state, _, ino = struct.unpack_from("=BBBBI", buf, pos + 16)
            info = DiagInfo(ino, stype, state)
            a = pos + 16 + 16  # nlmsghdr + unix_diag_msg
            while a + 4 <= pos + length:
                alen, atype = struct.unpack_from("=HH", buf, a)
                if alen < 4:
                    break
                payload = buf[a + 4: a + alen]
                if atype == UNIX_DIAG_NAME:
                    # a path may come with its terminating NUL; an abstract name starts with one
                    info.name = payload if payload[:1] == b"\0" else payload.rstrip(b"\0")
                elif atype == UNIX_DIAG_PEER:
                    (info.peer,) = struct.unpack_from("=I", payload)
                elif atype == UNIX_DIAG_RQLEN:
                    info.rqueue, info.wqueue = struct.unpack_from("=II", payload)
                elif atype == UNIX_DIAG_ICONS:
                    info.icons = list(struct.unpack_from(f"={len(payload) // 4}I", payload))
                elif atype == UNIX_DIAG_SHUTDOWN:
                    info.shutdown = payload[0]
                a += (alen + 3) & ~3
            out.append(info)
        pos += (length + 3) & ~3
    return out, done


def diag_table() -> dict[int, DiagInfo]:
    """Every unix socket of pyckpt's network namespace, by inode."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as nl:
        req = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0,
                          UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN, 0xFFFFFFFF, 0xFFFFFFFF)
        nl.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY,
                            NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + req)
        table: dict[int, DiagInfo] = {}
        while True:
            infos, done = parse_diag(nl.recv(1 << 16))
            for info in infos:
                table[info.ino] = info
            if done:
                return table


def _diag(ctx: DumpContext) -> dict[int, DiagInfo]:
    """The diag table, read once per dump."""
    cached = ctx.objects.get("unix diag")
    if cached is None:
        cached = ctx.objects["unix diag"] = diag_table()
    return cached


def sockets_in_image(ctx: DumpContext) -> set[int]:
    """Inodes of every socket an fd of the image's processes holds (once per dump):
    a socket's peer is inside the image when its inode is here."""
    held = ctx.objects.get("socket inodes in image")
    if held is None:
        held = set()
        for pid in ctx.tree or [ctx.pid]:
            try:
                fds = ctx.tables.fd_stats(pid)
            except FileNotFoundError:  # (a process gone)
                continue
            held.update(st.st_ino for st in fds.values() if stat.S_ISSOCK(st.st_mode))
        ctx.objects["socket inodes in image"] = held
    return held


# --- dump ------------------------------------------------------------------------


def take(pid: int, fd: int) -> socket.socket:
    """The target's socket itself, as a socket object in pyckpt (pidfd_getfd).

    It shares the target's open file description, so nothing may touch its
    O_NONBLOCK flag: the object is made with SOCK_NONBLOCK in its type, which
    makes Python treat it as non-blocking without an fcntl (socket(fileno=)
    alone would apply socket.setdefaulttimeout() with one); never call
    settimeout()/setblocking() on it."""
    copy = take_fd(pid, fd)
    try:
        # asked through a socket object made with any family (given, none is looked up):
        # its getsockopt is C: a take 30 -> 15 us, than through ctypes
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK, 0, fileno=copy)
        try:
            family, kind, proto = (probe.getsockopt(socket.SOL_SOCKET, opt)
                                   for opt in (SO_DOMAIN, socket.SO_TYPE, SO_PROTOCOL))
        finally:
            probe.detach()
        return socket.socket(family, kind | socket.SOCK_NONBLOCK, proto, fileno=copy)
    except OSError:
        os.close(copy)
        raise


def peek_queue(sock: socket.socket, pid: int, fd: int, shut_for_reading: bool) -> list[bytes]:
    """The messages in `sock`'s receive queue, in order, left in place.

    SO_PEEK_OFF makes each MSG_PEEK start where the last one ended (and skip
    a message already peeked); the socket's own peek offset is set back.
    The head message is peeked with the offset off: an empty datagram the
    target itself peeked at is marked as peeked, and an offset would skip it.
    The end of the queue is EAGAIN, or an empty read where that means end
    of file: always on a stream, and on a seqpacket socket shut for reading
    (where an empty message just before that end cannot be told from it)."""
    eof_reads_empty = sock.type == socket.SOCK_STREAM or (
        sock.type == socket.SOCK_SEQPACKET and shut_for_reading)
    what = f"process {pid}: fd {fd}"
    saved = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
    sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, -1 if sock.type != socket.SOCK_STREAM else 0)
    messages: list[bytes] = []
    try:
        space = socket.CMSG_SPACE(253 * array.array("i").itemsize)
        while True:
            if len(messages) > MAX_MESSAGES:
                raise DumpError(f"{what}: more than {MAX_MESSAGES} messages are queued")
            if len(messages) == 1 and sock.type != socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, len(messages[0]))
            try:
                data, anc, msg_flags, _ = sock.recvmsg(1 << 20, space, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
                    for n in fds:
                        os.close(n)
                    raise UnsupportedFdError(
                        pid, fd, "unix socket with file descriptors in flight (SCM_RIGHTS)",
                        "its queue holds a message that passes fds")
            if msg_flags & socket.MSG_TRUNC:
                raise DumpError(f"{what}: a queued message is larger than 1 MiB")
            if not data and eof_reads_empty:
                break  # end of file: nothing more is queued
            messages.append(data)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, saved)
    return messages


@file_kind
class UnixSocket(FileKind):
    """Unnamed unix sockets; every other socket is refused here with its family named."""

    name = "unix"
    records = (UnixSocketRecord,)

    def claims(self, f: DumpedFd) -> bool:
        return stat.S_ISSOCK(f.st.st_mode)

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        table = _diag(ctx)
        info = table.get(f.st.st_ino)
        if info is None:
            raise UnsupportedFdError(f.pid, f.fd, _family_in_words(f), f.link)
        from . import unixname

        if unixname.handles(ctx, f.st.st_ino):  # named, or connected to a named socket
            return unixname.UnixNamedSocket().dump(ctx, f, file_id)
        kind = f"unix {TYPE_NAMES.get(info.type, info.type)} socket"
        if info.state == TCP_LISTEN:
            raise UnsupportedFdError(f.pid, f.fd, f"listening {kind}", _named(f.link, info))
        if info.name:
            raise UnsupportedFdError(f.pid, f.fd, f"{kind} bound to a name", _named(f.link, info))
        peer = table.get(info.peer) if info.peer else None
        if peer is not None and peer.name:
            if (info.type == socket.SOCK_DGRAM and info.peer not in sockets_in_image(ctx)
                    and not info.rqueue):
                # A client of a datagram server outside the image (syslog's /dev/log):
                # datagrams need no connection state, so connecting again is the same.
                return [UnixSocketRecord(file_id, f.st.st_ino, info.type, 0, False,
                                         f.info.flags & ~os.O_CLOEXEC, info.shutdown, *_options(f),
                                         connect_to=peer.name.decode("utf-8", "surrogateescape"))]
            raise UnsupportedFdError(f.pid, f.fd, f"{kind} connected to a named socket",
                                     f"{f.link}, peer {_show_name(peer.name)}")
        if info.type not in TYPE_NAMES:
            raise UnsupportedFdError(f.pid, f.fd, kind, f.link)
        flags = f.info.flags & ~os.O_CLOEXEC
        connected = info.state == TCP_ESTABLISHED or info.peer != 0
        if peer is not None and info.peer not in sockets_in_image(ctx):
            return [ExternalFileRecord(file_id, f"{f.link} ({kind} connected to a process outside "
                                                "the image)", flags)]
        sock = take(f.pid, f.fd)
        try:
            # An unconnected stream or seqpacket socket has no queue (and refuses a peek).
            readable = connected or info.type == socket.SOCK_DGRAM
            messages = peek_queue(sock, f.pid, f.fd, bool(info.shutdown & RCV_SHUTDOWN)) if readable else []
        finally:
            sock.close()
        opts = _options(f)
        rec = UnixSocketRecord(file_id, f.st.st_ino, info.type, info.peer if peer else 0,
                               connected and peer is None, flags, info.shutdown, *opts)
        data = b"".join(messages)
        if data or messages:
            rec.messages = [Message(len(m)) for m in messages]
            rec.length = len(data)
            if data:
                rec.offset, rec.xxh3 = ctx.pages.append(data + bytes(padded(len(data)) - len(data)))
        return [rec]

    def open(self, rctx: RestoreContext, rec: UnixSocketRecord) -> int:
        end = _connected_again(rctx, rec) if rec.connect_to else _socket(rctx, rec)
        return set_status_flags(os.dup(end), rec.flags, SETTABLE_FLAGS)

    def describe(self, rec: UnixSocketRecord) -> str:
        kind = f"unix {TYPE_NAMES.get(rec.type, rec.type)} socket:[{rec.ino}]"
        link = (f", peer socket:[{rec.peer_ino}]" if rec.peer_ino
                else f", connected to {_show_name(rec.connect_to.encode('utf-8', 'surrogateescape'))}"
                if rec.connect_to else ", peer closed" if rec.orphan else ", not connected")
        return f"{kind}{link}, {len(rec.messages)} message(s) / {rec.length} bytes queued"


def _options(f: DumpedFd) -> tuple[bool, int, int, int]:
    """SO_PASSCRED, SO_SNDBUF, SO_RCVBUF, SO_PEEK_OFF of the target's socket."""
    sock = take(f.pid, f.fd)
    try:
        return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED) != 0,
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF))
    finally:
        sock.close()


def _show_name(name: bytes) -> str:
    return "@" + name[1:].decode(errors="replace") if name[:1] == b"\0" else name.decode(errors="replace")


def _named(link: str, info: DiagInfo) -> str:
    return f"{link}, {_show_name(info.name)}" if info.name else link


def _family_in_words(f: DumpedFd) -> str:
    """What a socket that is not a unix socket is, for the refusal."""
    try:
        sock = take(f.pid, f.fd)
    except OSError:
        return "socket"
    try:
        family = FAMILY_NAMES.get(sock.family, f"family {int(sock.family)}")
        kind = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "datagram",
                socket.SOCK_RAW: "raw"}.get(sock.type, "")
        return f"{family} {kind} socket".replace("  ", " ")
    finally:
        sock.close()


# --- restore ---------------------------------------------------------------------


def _record(rctx: RestoreContext, ino: int) -> UnixSocketRecord | None:
    for r in rctx.image.of_type(UnixSocketRecord):
        if r.ino == ino:
            return r
    return None


def _connected_again(rctx: RestoreContext, rec: UnixSocketRecord) -> int:
    """A datagram socket connected to the named socket outside the image it was connected to."""
    key = ("unix", rec.ino)
    if key not in rctx.passed:
        name = rec.connect_to.encode("utf-8", "surrogateescape")
        s = socket.socket(socket.AF_UNIX, rec.type | socket.SOCK_CLOEXEC)
        try:
            _set_options(s, rec)
            s.connect(name)
        except OSError as e:
            s.close()
            raise RestoreError(f"cannot connect a unix datagram socket to {_show_name(name)} again: "
                               f"{e.strerror or e} (is the server there?)") from None
        rctx.pass_fd(key, s.detach)
    return rctx.passed[key]


def _socket(rctx: RestoreContext, rec: UnixSocketRecord) -> int:
    """The new socket for `rec` in pyckpt (its pair made and filled once)."""
    key = ("unix", rec.ino)
    if key in rctx.passed:
        return rctx.passed[key]
    if not rec.peer_ino and not rec.orphan and not rec.messages:
        s = socket.socket(socket.AF_UNIX, rec.type | socket.SOCK_CLOEXEC)
        _set_options(s, rec)
        _set_peek_off(s, rec)
        return rctx.pass_fd(key, s.detach)
    peer = _record(rctx, rec.peer_ino) if rec.peer_ino else None
    if rec.peer_ino and peer is None:
        raise RestoreError(f"image at {rctx.image.path}: the peer socket:[{rec.peer_ino}] of "
                           f"socket:[{rec.ino}] is missing (damaged image)")
    a, b = socket.socketpair(socket.AF_UNIX, rec.type | socket.SOCK_CLOEXEC)
    try:
        ends = [(rec, a, b)] + ([(peer, b, a)] if peer else [])
        for r, mine, other in ends:
            _set_options(mine, r)
        if peer is None and rec.length:
            # The closed writer's buffer size is not known: make room for the whole queue.
            b.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 2 * rec.length + 65536)
        for r, mine, other in ends:
            _fill(rctx, r, other)
            _set_peek_off(mine, r)
        if peer is None:
            # The peer had been closed (or, for a datagram socket with a queue and no
            # peer, never mattered): the reader gets the data, then EOF.
            b.close()
        else:
            for r, mine, _ in ends:
                if r.shutdown & SEND_SHUTDOWN:
                    mine.shutdown(socket.SHUT_WR)
                if r.shutdown & RCV_SHUTDOWN:
                    mine.shutdown(socket.SHUT_RD)
            rctx.pass_fd(("unix", peer.ino), b.detach)
        return rctx.pass_fd(key, a.detach)
    finally:
        a.close()
        b.close()


def _set_options(s: socket.socket, rec: UnixSocketRecord) -> None:
    if rec.passcred:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    # The kernel doubles what is asked (and keeps a floor): ask half of what it said.
    for opt, want in ((socket.SO_SNDBUF, rec.sndbuf), (socket.SO_RCVBUF, rec.rcvbuf)):
        if s.getsockopt(socket.SOL_SOCKET, opt) != want:
            s.setsockopt(socket.SOL_SOCKET, opt, want // 2)


def _set_peek_off(s: socket.socket, rec: UnixSocketRecord) -> None:
    if rec.peek_off != -1:  # once the queue is back, which it counts into
        s.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, rec.peek_off)


def _fill(rctx: RestoreContext, rec: UnixSocketRecord, sender: socket.socket) -> None:
    """Send `rec`'s saved queue from the other end, so that `rec`'s end receives it."""
    if rec.messages:
        data = rctx.image.read_blob(rec.offset, rec.length, f"the queue of unix socket {rec.ino}")
        sender.setblocking(False)
        try:
            pos = 0
            for m in rec.messages:
                chunk = data[pos: pos + m.length]
                if rec.type == socket.SOCK_STREAM:
                    while chunk:
                        chunk = chunk[sender.send(chunk):]
                elif sender.send(chunk) != m.length:
                    raise OSError("a message was cut short")
                pos += m.length
        except OSError as e:
            raise RestoreError(
                f"cannot queue the {rec.length} saved bytes of unix socket:[{rec.ino}] again: "
                f"{e.strerror or e} (see net.unix.max_dgram_qlen and the socket buffer sizes)") from None
        finally:
            sender.setblocking(True)


def validate(image) -> None:
    """Queues add up; peers name records of the image and name them back."""
    from ..errors import ImageError

    recs = {r.ino: r for r in getattr(image, "reader", image).of_type(UnixSocketRecord)}
    for r in recs.values():
        if r.type not in TYPE_NAMES or sum(m.length for m in r.messages) != r.length or \
                any(m.length < 0 for m in r.messages):
            raise ImageError(f"image at {image.path}: unix socket:[{r.ino}] has a bad type or queue")
        if r.peer_ino and (r.peer_ino not in recs or recs[r.peer_ino].peer_ino != r.ino):
            raise ImageError(f"image at {image.path}: unix socket:[{r.ino}] names a peer "
                             f"socket:[{r.peer_ino}] that does not name it back")
