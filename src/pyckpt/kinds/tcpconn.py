"""TCP connections: both ends in the image, or one end and a peer outside it.

Both ends in the image.  A program often talks TCP to itself: a server and a
client in one process tree, or one process connected to its own listener
(an ipykernel does).  When the image holds both ends, the connection is
rebuilt exactly without the network being involved: the two sockets are
re-created with TCP_REPAIR (connect() in repair mode makes a socket
ESTABLISHED without a handshake), bound to the same addresses and ports
(those the restore's port map moves, both ends' alike: see tcp.py),
with sequence numbers that fit each other, the negotiated options (MSS,
window scaling, SACK, timestamps), and each end's unread data put straight
back into its receive queue; repair mode is then left.  The state comes from
TCP_INFO, the 4-tuples from getsockname/getpeername on the sockets
themselves, once per dump (the peer is the socket with the reversed tuple in
the same network namespace, found among the image's fds; /proc/PID/net/tcp
would cost a walk of the namespace's whole TCP table), unread data is peeked
(MSG_PEEK through SO_PEEK_OFF, set back after) on the socket itself
(pidfd_getfd), the options from TCP_INFO (each end's advertised MSS becomes
its peer's clamp), and each end's SO_REUSEADDR (an accepted end has its
listener's), set again once repair mode is left, which clears it: an end a
later kill leaves in TIME_WAIT on a listener's port then does not keep the
next restore of the image from listening there.  Data sent but not yet acknowledged (SIOCOUTQ > 0 once a
delayed ACK had its time) is refused rather than guessed at: on loopback
that only lasts while the receiver's window is full.  With kill=True these
ends are closed with SO_LINGER 0 just before the kill (a reset, no FIN
exchange): no TIME_WAIT is left on the 4-tuple the restore needs again.

A peer outside the image (a client of a server, a client's server, on this
host or another) is saved too (TcpOutsideRecord): state, addresses, options
(TCP_NODELAY, keepalive, SO_REUSEADDR, SO_LINGER, MSS, window scaling,
SACK, timestamps) and unread data; for an ESTABLISHED one also, read in
repair mode on the target's own socket (a pidfd_getfd copy; repair mode is
per socket, so it is entered, read and left at once, without a window probe,
SO_REUSEADDR set back, while the target is frozen), the sequence numbers,
the window (TCP_REPAIR_WINDOW), the timestamp clock and the send queue
(sent but unacknowledged, then unsent).  A dump without kill leaves the
connection as it was: the peer notices nothing.  Half-closed ones
(CLOSE-WAIT, LAST-ACK, CLOSING: the peer sent its FIN; FIN-WAIT-1/2: this
end did) are saved the same way, without the repair-mode part (the kernel
allows repair mode on ESTABLISHED sockets only).  A connection whose two
ends are in the image but one is half-closed is saved as two such ends.

What a restore makes of them:
- By default, a connection the peer has reset, which is what a process sees
  when a client vanishes: its unread data, then ECONNRESET on the next read
  or write, and epoll reports EPOLLIN|EPOLLERR|EPOLLHUP|EPOLLRDHUP; servers
  drop it, clients reconnect.  It is made over loopback in the task's
  network namespace: a stand-in peer pyckpt connects, sends the unread data
  into it and closes with SO_LINGER 0 (a real RST), so the socket is one
  the kernel itself reset (state CLOSE, sk_err ECONNRESET); its own address
  is then a loopback one (getpeername fails, as on any reset socket).  A
  socket that had shut down writing has again.  CLOSE-WAIT/LAST-ACK/CLOSING
  come back as they were instead: unread data, then end of file (the
  stand-in peer sent its FIN), and writing is then reset (EPIPE), as with a
  vanished client.
- With `tcp_established=True` (`--tcp-established`), after an in-place
  `dump --kill` on the same host while the peer holds its end, the very
  same connection is given back to the process.  The gap between the kill
  and the restore must not let the kernel answer the peer with a reset
  (which it does for any segment to a 4-tuple no socket has).  Neither
  nftables nor iptables is installed here; the lightest lock there is is no
  lock: just before the kill, dump hands each outside connection to a
  holder process (a `python -S` that sleeps, started in its own session,
  the sockets passed as inherited fds; their inodes are listed under
  /run/pyckpt/tcp-held/).  The kill then closes none of them: the kernel
  keeps each one open as it was, acknowledging what the peer sends (it
  queues for the restore; measured: a peer's send during the gap was
  acknowledged after 42 ms, a delayed ACK as from any socket, and read by
  the restored process), so the peer sees no reset, no end of file, only a
  pause.  The restore takes the socket from
  the holder (pidfd_getfd, checked by inode and the holder's start time),
  and once the restored processes run, ends the holder.  Every state
  (half-closed ones too) comes back exactly so.  When no holder has it (a
  dump without kill: the original still holds it; or after HOLD_SECONDS),
  an ESTABLISHED connection is re-created from the image with TCP_REPAIR
  (sequence numbers, window, timestamps, both queues; the unsent part of
  the send queue sent normally after) if its peer is not known to be gone
  (a peer on this host is gone when no socket holds the reversed 4-tuple);
  otherwise, or when that fails, it comes back reset and the restore says
  so: the returned process's `restore_warnings`, a warning line of
  `pyckpt restore`.  With new_netns it always comes back reset.
- The holder is released on every path: a restore that succeeds (either
  mode) ends it (SIGKILL), in the default mode after setting SO_LINGER 0 on
  the held sockets, so that its close resets the peer at once and the
  client reconnects to the restored server; a failed restore leaves it
  holding for a later attempt; after HOLD_SECONDS (600 s) without a restore
  it sets SO_LINGER 0 and exits: the peers see a reset.  Killing it by hand
  closes them (a FIN, or a reset with unread data).  Should the kill that
  follows the hand-over fail (a dumped process still runs: same PID, same
  start time), the holder lets go at once without touching the sockets, so
  the running process is left as it was.  A restore killed after its release
  but before it ended the holder leaves the holder until its timeout (the
  restored process then holds the socket too: the holder's close is not the
  last, but the socket's SO_LINGER becomes 0) and its files under
  /run/pyckpt/tcp-held/ until it exits.
  Before any listener of the image binds again, the held sockets get
  SO_REUSEADDR (the accepted connections of the killed listener are bound to
  its port); the one handed over gets its own value back after the release.
  A held socket is used only when its inode and addresses are the record's,
  and never for an image an ordinary user owns (it could name another
  image's connection).

Other TCP sockets no kind above takes are saved here too: one reset by its
peer (or timed out) that the program has not closed yet (state CLOSE, not
in /proc/net/tcp, but it received segments) comes back reset the same way
(its unread data, then ECONNRESET — the original may have read the error
already); a connect() in progress (SYN-SENT) comes back refused, as by a
server that is down (a non-blocking connect to a closed loopback port:
SO_ERROR is ECONNREFUSED; a socket refused that way reads ECONNREFUSED, not
a reset, which is why resets need the stand-in peer); one never connected
comes back new with its options, bound where it was (PortInUseError when
that port is taken).

Restore needs CAP_NET_ADMIN (TCP_REPAIR) for connections within the image
and for re-creating outside ones.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import _signal as signal  # (signal's calls without its enums' import)
import stat
import struct
import termios
import time
from .. import _sock as socket  # (socket's calls without its import: _sock.py)
from .._dataclass import dataclass

from ..errors import PortInUseError, RestoreError, UnsupportedFdError
from .. import proc
from ..image import padded, record
from ..inject import nr
from ..problems import Fix, needs
from .context import DumpContext, RestoreContext
from .files import DumpedFd, FileKind, file_kind, set_status_flags
from .tcp import TCP_LISTEN, mapped, on_loopback, open_all_listeners, socket_tcp_state, tcp_state
from .unix import SO_PEEK_OFF, sockets_in_image, take

TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, TCP_REPAIR_OPTIONS = 19, 20, 21, 22
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2
TCPOPT_MSS, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP = 2, 3, 4, 8
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4
TCPI_ADVMSS = 84  # offset of tcpi_advmss in struct tcp_info
SIOCOUTQ = termios.TIOCOUTQ
SETTABLE_FLAGS = os.O_NONBLOCK | getattr(os, "O_ASYNC", 0o20000)


@record(102, scope="image")
@dataclass
class TcpConnectionRecord:
    id: int
    ino: int
    peer_ino: int
    family: int
    local_address: str
    local_port: int
    local_scope: int  # IPv6 scope id (link-local addresses); 0 otherwise
    remote_address: str
    remote_port: int
    remote_scope: int
    flags: int  # file status flags, without O_CLOEXEC
    nodelay: bool
    keepalive: list[int]  # SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT
    advmss: int  # the MSS this end advertised (TCP_INFO): its peer's MSS clamp at restore
    options: int  # TCPI_OPT_* bits from TCP_INFO
    snd_wscale: int
    rcv_wscale: int
    length: int = 0  # unread bytes, at `offset` of pages.img (padded)
    offset: int = 0
    xxh3: int = 0
    # SO_REUSEADDR (an accepted end inherits its listener's); images written before
    # it was saved get none, as restores then gave
    reuseaddr: bool = False

    def stored_runs(self) -> list[tuple[int, int, int]]:
        return [(self.offset, padded(self.length), self.xxh3)] if self.length else []


def _connections(ctx: DumpContext, pid: int) -> tuple[dict, dict]:
    """(inode -> (local, remote), (local, remote) -> inode) of the ESTABLISHED TCP sockets
    the image's processes hold, each end an (network namespace, address, port), once per
    dump.  From the sockets themselves (a pidfd_getfd copy: TCP_INFO's state,
    getsockname, getpeername), where /proc/PID/net/tcp{,6} would walk the namespace's
    whole TCP table: 4.3 ms each on this VM (262,144 hash buckets), for two sockets or
    two hundred.  A peer outside the image is not indexed: it is not looked for."""
    def index():
        by_ino: dict[int, tuple] = {}
        for p in ctx.tree or [ctx.pid]:
            try:
                netns = os.stat(f"/proc/{p}/ns/net").st_ino
                fds = ctx.tables.fd_stats(p)
            except FileNotFoundError:
                continue
            for fd, st in fds.items():
                if not stat.S_ISSOCK(st.st_mode) or st.st_ino in by_ino:
                    continue
                try:
                    sock = take(p, fd)
                except OSError:
                    continue
                try:
                    if sock.family not in (socket.AF_INET, socket.AF_INET6) or \
                            sock.proto != socket.IPPROTO_TCP or \
                            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != TCP_ESTABLISHED:
                        continue
                    by_ino[st.st_ino] = ((netns, *_plain(sock.getsockname())),
                                         (netns, *_plain(sock.getpeername())))
                except OSError:
                    continue
                finally:
                    sock.close()
        return by_ino, {v: k for k, v in by_ino.items()}
    return ctx.tables.memo("tcp connections", index)


def _plain(addr: tuple) -> tuple[str, int]:
    """(address, port) of a socket name, an IPv4-mapped IPv6 address as plain IPv4: the
    two ends of a connection a dual-stack listener accepted name it alike."""
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, addr[1]


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes sent and not yet acknowledged, after giving a delayed ACK its time.

    On loopback the peer has the data the moment it is sent, but may
    acknowledge it up to ~40 ms later (delayed ACK, which the kernel sends
    while the processes are stopped): wait for it rather than refuse."""
    deadline = time.monotonic() + 0.5
    while True:
        outq = struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0" * 4))[0]
        if not outq or time.monotonic() > deadline:
            return outq
        time.sleep(0.002)


def _peek_stream(sock: socket.socket) -> bytes:
    """Every unread byte of a stream socket, left in place."""
    want = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    saved = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
    sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
    chunks, got = [], 0
    try:
        while got < want:
            try:
                chunk = sock.recv(want - got, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, saved)
    return b"".join(chunks)


@file_kind
class TcpConnection(FileKind):
    name = "tcp"
    records = (TcpConnectionRecord,)
    before = ("unix",)  # unix.py takes every other socket, to refuse it by name

    def claims(self, f: DumpedFd) -> bool:
        return tcp_state(f) == TCP_ESTABLISHED

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        by_ino, by_tuple = _connections(ctx, f.pid)
        local, remote = by_ino.get(f.st.st_ino, (None, None))
        sock = take(f.pid, f.fd)
        try:
            here, there = sock.getsockname(), sock.getpeername()
            peer = by_tuple.get((remote, local)) if local else None
            if peer is None or peer not in sockets_in_image(ctx):
                return dump_outside(ctx, f, file_id, sock, TCP_ESTABLISHED)
            outq = _unacknowledged(sock)
            if outq:
                raise UnsupportedFdError(
                    f.pid, f.fd, f"TCP connection with {outq} bytes sent but not yet acknowledged",
                    f"{f.link}, {_where(sock.family, here)} -> {_where(sock.family, there)}")
            data = _peek_stream(sock)
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            ka = [sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                  sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                  sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                  sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)]
            rec = TcpConnectionRecord(
                file_id, f.st.st_ino, peer, int(sock.family), *_endpoint(here), *_endpoint(there),
                f.info.flags & ~os.O_CLOEXEC, sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0,
                ka, struct.unpack_from("I", info, TCPI_ADVMSS)[0], info[5], info[6] & 0xF,
                info[6] >> 4)
            rec.reuseaddr = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        finally:
            sock.close()
        if data:
            rec.length = len(data)
            rec.offset, rec.xxh3 = ctx.pages.append(data + bytes(padded(len(data)) - len(data)))
        ctx.objects.setdefault("tcp to reset on kill", []).append((f.pid, f.fd))
        return [rec]

    def open(self, rctx: RestoreContext, rec: TcpConnectionRecord) -> int:
        key = ("tcp", rec.ino)
        if key not in rctx.passed:
            peer = next((r for r in rctx.image.of_type(TcpConnectionRecord) if r.ino == rec.peer_ino), None)
            if peer is None or peer.peer_ino != rec.ino:
                raise RestoreError(f"image at {rctx.image.path}: the other end of TCP connection "
                                   f"socket:[{rec.ino}] is missing (damaged image)")
            open_all_listeners(rctx)
            a, b = _reconnect(rctx, rec, peer)
            rctx.pass_fd(("tcp", peer.ino), lambda: b)
            rctx.pass_fd(key, lambda: a)
        return set_status_flags(os.dup(rctx.passed[key]), rec.flags, SETTABLE_FLAGS)

    def describe(self, rec: TcpConnectionRecord) -> str:
        return (f"TCP {_where(rec.family, _local(rec))} -> {_where(rec.family, _remote(rec))}, "
                f"established, {rec.length} bytes unread")


def _endpoint(addr: tuple) -> tuple[str, int, int]:
    """(address, port, scope id) of a getsockname()/getpeername() result."""
    return addr[0], addr[1], addr[3] if len(addr) > 3 else 0


def _local(rec: TcpConnectionRecord) -> tuple:
    return _sockaddr(rec.family, rec.local_address, rec.local_port, rec.local_scope)


def _remote(rec: TcpConnectionRecord) -> tuple:
    return _sockaddr(rec.family, rec.remote_address, rec.remote_port, rec.remote_scope)


def _sockaddr(family: int, address: str, port: int, scope: int) -> tuple:
    return (address, port, 0, scope) if family == socket.AF_INET6 else (address, port)


def _where(family: int, addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def before_freeze(pid: int) -> None:
    """Make the repair guard (a fork of pyckpt, then a wait for the middle process:
    ~6 ms here, more from a big process such as a Jupyter server) before the freeze
    instead of inside it, when `pid` holds a TCP connection: its queues are read in
    repair mode.  Nothing when this process has its guard already."""
    guard = _RepairGuard._current
    if guard is not None and guard.pid == os.getpid():
        return
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return  # (the dump says what is wrong with the process)
    for name in names:
        try:
            if not stat.S_ISSOCK(os.stat(f"/proc/{pid}/fd/{name}").st_mode):
                continue
        except OSError:
            continue
        if socket_tcp_state(pid, int(name)) not in (None, TCP_LISTEN, TCP_CLOSE):
            _RepairGuard.get()
            return


def before_kill(objects: dict) -> None:
    """SO_LINGER 0 on every dumped connection within the image: the kill that follows
    resets them instead of leaving TIME_WAIT on the 4-tuples a restore needs again.
    Connections to outside peers are handed to a holder (see _hold), once the repair
    guard holds no copy of them."""
    guard = _RepairGuard._current
    if guard is not None and guard.pid == os.getpid():
        guard.settle()
    _hold(objects)
    for pid, fd in objects.get("tcp to reset on kill", []):
        try:
            sock = take(pid, fd)
        except OSError:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # best effort: at worst a TIME_WAIT delays the restore of this connection
        finally:
            sock.close()


def _repair_options(s: socket.socket, rec, mss: int) -> None:
    """The options the handshake had negotiated (MSS, window scaling, SACK, timestamps),
    set on a socket in repair mode (its peer's MSS `mss`)."""
    opts = [(TCPOPT_MSS, mss)]
    if rec.options & TCPI_OPT_WSCALE:
        opts.append((TCPOPT_WINDOW, rec.snd_wscale | rec.rcv_wscale << 16))
    if rec.options & TCPI_OPT_SACK:
        opts.append((TCPOPT_SACK_PERM, 0))
    if rec.options & TCPI_OPT_TIMESTAMPS:
        opts.append((TCPOPT_TIMESTAMP, 0))
    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_OPTIONS, b"".join(struct.pack("II", *o) for o in opts))


def _queue(rctx: RestoreContext, rec: TcpConnectionRecord) -> bytes:
    return rctx.image.read_blob(rec.offset, rec.length, f"the receive queue of TCP socket {rec.ino}")


def _reconnect(rctx: RestoreContext, a_rec: TcpConnectionRecord,
               b_rec: TcpConnectionRecord) -> tuple[int, int]:
    """Both ends again, connected to each other in repair mode; fds in pyckpt."""
    qa, qb = _queue(rctx, a_rec), _queue(rctx, b_rec)
    # initial sequence numbers from the kernel's random source (os.urandom, as the secrets
    # module would, without its hmac/hashlib imports: 5-6 ms of a command's restore)
    x, y = struct.unpack("II", os.urandom(8))
    # a sends from x (and b has received up to x); b sends from y. Each end's unread
    # data counts as received: its peer's send sequence starts after it.
    seqs = {id(a_rec): (x + len(qb), y), id(b_rec): (y + len(qa), x)}
    socks = []
    try:
        for rec, data in ((a_rec, qa), (b_rec, qb)):
            s = socket.socket(rec.family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            socks.append(s)
            snd, rcv = seqs[id(rec)]
            try:
                s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
            except PermissionError:
                raise RestoreError("restoring a TCP connection needs CAP_NET_ADMIN (TCP_REPAIR)") from None
            s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
            s.setsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, struct.pack("I", snd & 0xFFFFFFFF))
            s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
            s.setsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, struct.pack("I", rcv & 0xFFFFFFFF))
            # both ends' ports through the port map (a listener moved: its connections too)
            local = _sockaddr(rec.family, rec.local_address, mapped(rctx, rec.local_port), rec.local_scope)
            remote = _sockaddr(rec.family, rec.remote_address, mapped(rctx, rec.remote_port),
                               rec.remote_scope)
            try:
                s.bind(local)
                s.connect(remote)
            except OSError as e:
                error = RestoreError(
                    f"cannot re-create TCP connection {_where(rec.family, local)} -> "
                    f"{_where(rec.family, remote)}: {e.strerror} (does the original still run?)")
                in_use = e.errno == errno.EADDRINUSE and on_loopback(rec.local_address)
                raise (needs(error, Fix("new_netns")) if in_use else error) from None
            other = b_rec if rec is a_rec else a_rec
            _repair_options(s, rec, other.advmss)
            if data:
                s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
                view = memoryview(data)
                while view:
                    view = view[s.send(view):]
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(rec.nodelay))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, rec.keepalive[0])
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, rec.keepalive[1])
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, rec.keepalive[2])
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, rec.keepalive[3])
        for s, rec in zip(socks, (a_rec, b_rec)):
            s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 0)
            # leaving repair mode cleared it: without it, the end a kill leaves in TIME_WAIT
            # on a listener's port keeps the next restore from listening there for a minute
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(rec.reuseaddr))
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks[0].detach(), socks[1].detach()


def validate(image) -> None:
    from ..errors import ImageError

    recs = {r.ino: r for r in getattr(image, "reader", image).of_type(TcpConnectionRecord)}
    for r in recs.values():
        if r.family not in (socket.AF_INET, socket.AF_INET6) or r.length < 0 or \
                r.peer_ino not in recs or recs[r.peer_ino].peer_ino != r.ino:
            raise ImageError(f"image at {image.path}: TCP connection socket:[{r.ino}] is damaged")
    for r in getattr(image, "reader", image).of_type(TcpOutsideRecord):
        if r.family not in (socket.AF_INET, socket.AF_INET6) or r.state not in STATE_NAMES or \
                min(r.length, r.sent_length, r.unsent, r.mss, r.advmss) < 0 or \
                not 0 <= r.local_port < 65536 or not 0 <= r.remote_port < 65536 or \
                len(r.keepalive) != 4 or len(r.linger) != 2 or len(r.window) not in (0, 5) or \
                not all(0 <= x < 1 << 32 for x in [r.snd_seq, r.rcv_seq, r.timestamp, *r.window]) or \
                not 0 <= r.snd_wscale <= 14 or not 0 <= r.rcv_wscale <= 14:
            raise ImageError(f"image at {image.path}: TCP connection socket:[{r.ino}] (peer outside "
                             "the image) is damaged")


# --- connections to peers outside the image ----------------------------------------------

TCP_ESTABLISHED, TCP_SYN_SENT, TCP_FIN_WAIT1, TCP_FIN_WAIT2 = 1, 2, 4, 5
TCP_CLOSE, TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING = 7, 8, 9, 11
TCP_NOT_CONNECTED = 0  # a TCP socket never connected (bound or not): not a kernel state
STATE_NAMES = {TCP_NOT_CONNECTED: "not connected", TCP_SYN_SENT: "SYN-SENT (connect() in progress)",
               TCP_CLOSE: "closed by a reset or a timeout (not yet closed by the program)",
               TCP_ESTABLISHED: "established", TCP_FIN_WAIT1: "FIN-WAIT-1 (this end shut down writing)",
               TCP_FIN_WAIT2: "FIN-WAIT-2 (this end shut down writing)",
               TCP_CLOSE_WAIT: "CLOSE-WAIT (the peer shut down writing)",
               TCP_LAST_ACK: "LAST-ACK (both ends shut down writing)",
               TCP_CLOSING: "CLOSING (both ends shut down writing)"}
HALF_CLOSED = (TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING)
PEER_SENT_FIN = (TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING)
WE_SENT_FIN = (TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_LAST_ACK, TCP_CLOSING)
TCP_REPAIR_WINDOW, TCP_TIMESTAMP = 29, 24
TCP_REPAIR_OFF_NO_WP = -1  # leave repair mode without sending a window probe
SIOCOUTQNSD = 0x894B
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # (Linux; the socket module names neither)
SO_LINGER_ZERO = struct.pack("ii", 1, 0)
HOLD_SECONDS = 600  # dump --kill: how long the outside connections are held for a restore
HELD_DIR = "/run/pyckpt/tcp-held"  # one file per held socket (its inode): "holder-pid fd start-time"


@record(103, scope="image")
@dataclass
class TcpOutsideRecord:
    """A TCP connection whose peer is not in the image (another process, another host)."""

    id: int
    ino: int
    state: int  # TCP_ESTABLISHED or one of HALF_CLOSED
    family: int
    local_address: str
    local_port: int
    local_scope: int
    remote_address: str
    remote_port: int
    remote_scope: int
    flags: int  # file status flags, without O_CLOEXEC
    nodelay: bool
    keepalive: list[int]  # SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT
    reuseaddr: bool
    linger: list[int]  # SO_LINGER: on, seconds
    advmss: int
    options: int  # TCPI_OPT_* bits
    snd_wscale: int
    rcv_wscale: int
    mss: int  # TCP_MAXSEG (the MSS in use)
    # read in repair mode (ESTABLISHED only; else 0 / []): the sequence numbers after the
    # send queue and after the receive queue, the window (TCP_REPAIR_WINDOW: snd_wl1,
    # snd_wnd, max_window, rcv_wnd, rcv_wup) and the timestamp clock (TCP_TIMESTAMP)
    snd_seq: int
    rcv_seq: int
    window: list[int]
    timestamp: int
    unsent: int  # bytes at the end of the send queue not sent yet
    length: int = 0  # unread bytes, at `offset` of pages.img (padded)
    offset: int = 0
    xxh3: int = 0
    sent_length: int = 0  # the send queue (sent and not acknowledged, then unsent)
    sent_offset: int = 0
    sent_xxh3: int = 0

    def stored_runs(self) -> list[tuple[int, int, int]]:
        runs = [(self.offset, padded(self.length), self.xxh3)] if self.length else []
        if self.sent_length:
            runs.append((self.sent_offset, padded(self.sent_length), self.sent_xxh3))
        return runs


def socket_states(pid: int) -> dict[int, tuple[int, tuple[str, int], tuple[str, int]]]:
    """Inode -> (state, local, remote) of every TCP socket of `pid`'s network namespace."""
    return {s.inode: (s.state, s.local, s.remote) for s in proc.read_net_sockets(pid, "tcp", "tcp6")}


def _int(sock: socket.socket, level: int, name: int) -> int:
    return sock.getsockopt(level, name)


def _ioctl_int(sock: socket.socket, request: int) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0" * 4))[0]


def _read_in_repair(sock: socket.socket) -> tuple[int, int, list[int], int, bytes, bytes]:
    """(write_seq, rcv_nxt, window, timestamp, send queue, receive queue) of an established
    socket of the target, read in repair mode, which is left at once (no window probe)
    with SO_REUSEADDR set back (leaving repair mode clears it)."""
    reuse = _int(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR)
    with _peek_offset_off(sock):
        return _read_queues_in_repair(sock, reuse)


@contextlib.contextmanager
def _peek_offset_off(sock: socket.socket):
    """SO_PEEK_OFF disabled for pyckpt's own peeks (a program may use it: each peek
    would start at, and move, its offset), set back after."""
    try:
        saved = _int(sock, socket.SOL_SOCKET, SO_PEEK_OFF)
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, -1)
    except OSError:  # TCP has peek offsets since Linux 6.8; before, peeks ignore it
        yield
        return
    try:
        yield
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, saved)


class _RepairGuard:
    """Never harm the target: a socket of the target that pyckpt puts in repair mode
    stays in it (its reads then fail with EPERM) if pyckpt is killed before it leaves
    it.  So before each one, pyckpt hands a copy of the socket to this guard, a
    process of its own (forked twice: nobody's child to reap); should pyckpt die
    while the guard holds a socket, the guard sees its end of the pair close and
    takes the socket out of repair mode (no window probe), then exits.  It exits
    as well once pyckpt lets go of it, holding nothing.  One per process (made at
    the first outside connection read in repair mode)."""

    _current: "_RepairGuard | None" = None

    @classmethod
    def get(cls) -> "_RepairGuard":
        if cls._current is None or cls._current.pid != os.getpid():
            cls._current = cls()
        return cls._current

    def __init__(self):
        self.pid = os.getpid()
        self.unanswered = 0  # let_go()s whose answer has not been read
        self.ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.set_inheritable(False)
        middle = os.fork()
        if middle == 0:  # pragma: no cover -- runs in the guard
            try:
                if os.fork() == 0:
                    self.ours.close()
                    _guard(theirs)
            finally:
                os._exit(0)
        os.waitpid(middle, 0)
        theirs.close()

    def hold(self, sock: socket.socket) -> None:
        socket.send_fds(self.ours, [b"h"], [sock.fileno()])

    def let_go(self) -> None:
        """The socket is out of repair mode: the guard closes its copy, and answers
        once it has.  The answer is waited for only before a kill (`settle`: a copy
        left open would keep the target's socket from closing when the target is
        killed, and its peer would see no reset); waiting for each here cost a switch
        to the guard and back per connection, ~1 ms each on a loaded machine, for a
        Jupyter kernel's six.  The guard reads in order: a later hold is not undone."""
        self.ours.send(b"l")
        self.unanswered += 1
        self._answers(wait=False)

    def settle(self) -> None:
        """Every socket let go of is closed in the guard."""
        self._answers(wait=True)

    def _answers(self, wait: bool) -> None:
        while self.unanswered:
            try:
                self.ours.recv(1, 0 if wait else socket.MSG_DONTWAIT)  # b"": the guard is gone
            except BlockingIOError:
                return
            self.unanswered -= 1


def _guard(conn: socket.socket) -> None:  # pragma: no cover -- runs in the guard
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    # Nothing of pyckpt's: a copy of a target's socket (or of pyckpt's stdout) held
    # here would keep it open after its owners closed it.
    keep = conn.fileno()
    null = os.open(os.devnull, os.O_RDWR)
    for n in (0, 1, 2):
        os.dup2(null, n)
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 20)
    held: list[int] = []
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(conn, 16, 4)
        except OSError:
            msg, fds = b"", []
        held += fds
        if msg == b"l":
            for fd in held:
                os.close(fd)
            held = []
            conn.send(b"k")
        elif not msg:  # pyckpt is gone (or done with the guard)
            for fd in held:
                s = socket.socket(fileno=fd)
                try:
                    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
                except OSError:
                    pass
            return


def _read_queues_in_repair(sock: socket.socket, reuse: int) -> tuple[int, int, list[int], int, bytes, bytes]:
    guard = _RepairGuard.get()
    guard.hold(sock)  # before repair mode: should pyckpt die in it, the guard leaves it
    try:
        return _read_queues_held(sock, reuse)
    finally:
        guard.let_go()


def _read_queues_held(sock: socket.socket, reuse: int) -> tuple[int, int, list[int], int, bytes, bytes]:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    except PermissionError:
        raise UnsupportedFdError(0, 0, "TCP connection (reading it needs CAP_NET_ADMIN for TCP_REPAIR)",
                                 "") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
        snd = struct.unpack("I", sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0]
        sendq = _peek_all(sock, _ioctl_int(sock, SIOCOUTQ))
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        rcv = struct.unpack("I", sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0]
        recvq = _peek_all(sock, _ioctl_int(sock, termios.FIONREAD))
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, 0)
        window = list(struct.unpack("5I", sock.getsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, 20)))
        ts = struct.unpack("I", sock.getsockopt(socket.IPPROTO_TCP, TCP_TIMESTAMP, 4))[0]
    finally:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
    return snd, rcv, window, ts, sendq, recvq


def _peek_all(sock: socket.socket, size: int) -> bytes:
    """The queue chosen with TCP_REPAIR_QUEUE (about `size` bytes), left in place."""
    try:
        return sock.recv(size + (1 << 16), socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def _unhashed_state(f: DumpedFd) -> int:
    """A TCP socket in state CLOSE: TCP_CLOSE when it was connected (reset, or its
    connection timed out, and the program has not closed it yet: it received
    segments), TCP_NOT_CONNECTED when it never was (bound or not)."""
    sock = take(f.pid, f.fd)
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 144)
        return TCP_CLOSE if len(info) >= 144 and struct.unpack_from("I", info, 140)[0] else TCP_NOT_CONNECTED
    except OSError:
        return TCP_NOT_CONNECTED
    finally:
        sock.close()


def dump_outside(ctx: DumpContext, f: DumpedFd, file_id: int, sock: socket.socket,
                 state: int, remote: tuple[str, int] | None = None) -> list:
    """The record of a connection to a peer outside the image (`sock`: the target's own)."""
    here = sock.getsockname()
    try:
        there = sock.getpeername()
    except OSError:  # SYN-SENT (the address from /proc/net/tcp), closed, never connected
        any_address = "::" if sock.family == socket.AF_INET6 else "0.0.0.0"
        there = remote if remote is not None and state == TCP_SYN_SENT else (any_address, 0)
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    snd = rcv = ts = unsent = 0
    window: list[int] = []
    sendq = b""
    if state == TCP_ESTABLISHED:
        unsent = _ioctl_int(sock, SIOCOUTQNSD)
        try:
            snd, rcv, window, ts, sendq, data = _read_in_repair(sock)
        except UnsupportedFdError as e:
            raise UnsupportedFdError(f.pid, f.fd, e.kind, f"{f.link}, {_where(sock.family, here)} -> "
                                     f"{_where(sock.family, there)}") from None
    else:
        data = _peek_stream(sock)
    rec = TcpOutsideRecord(
        file_id, f.st.st_ino, state, int(sock.family), *_endpoint(here), *_endpoint(there),
        f.info.flags & ~os.O_CLOEXEC, _int(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0,
        [_int(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE),
         _int(sock, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
         _int(sock, socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
         _int(sock, socket.IPPROTO_TCP, socket.TCP_KEEPCNT)],
        _int(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0,
        list(struct.unpack("ii", sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))),
        struct.unpack_from("I", info, TCPI_ADVMSS)[0], info[5], info[6] & 0xF, info[6] >> 4,
        _int(sock, socket.IPPROTO_TCP, socket.TCP_MAXSEG), snd, rcv, window, ts, unsent)
    if data:
        rec.length = len(data)
        rec.offset, rec.xxh3 = ctx.pages.append(data + bytes(padded(len(data)) - len(data)))
    if sendq:
        rec.sent_length = len(sendq)
        rec.sent_offset, rec.sent_xxh3 = ctx.pages.append(sendq + bytes(padded(len(sendq)) - len(sendq)))
    if state not in (TCP_CLOSE, TCP_NOT_CONNECTED):  # a socket the kernel still has a 4-tuple for
        ctx.objects.setdefault("tcp outside to hold on kill", []).append((f.pid, f.fd, f.st.st_ino))
    return [rec]


@file_kind
class TcpOutside(FileKind):
    """Half-closed TCP connections (any peer: a half-closed pair is not rebuilt as a
    pair) and, through TcpConnection.dump, established ones to outside peers."""

    name = "tcp-outside"
    records = (TcpOutsideRecord,)
    before = ("unix",)  # unix.py takes every other socket, to refuse it by name

    def claims(self, f: DumpedFd) -> bool:
        state = tcp_state(f)
        return state in HALF_CLOSED or state in (TCP_SYN_SENT, TCP_CLOSE)

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        state = tcp_state(f)
        remote = None
        if state == TCP_SYN_SENT:  # getpeername() fails while connecting: /proc/net/tcp has it
            found = ctx.tables.net(f.pid, "tcp", "tcp6").get(f.st.st_ino)
            remote = found.remote if found else None
        elif state == TCP_CLOSE:
            state = _unhashed_state(f)
        sock = take(f.pid, f.fd)
        try:
            return dump_outside(ctx, f, file_id, sock, state, remote)
        finally:
            sock.close()

    def open(self, rctx: RestoreContext, rec: TcpOutsideRecord) -> int:
        key = ("tcp outside", rec.ino)
        if key not in rctx.passed:
            open_all_listeners(rctx)
            rctx.pass_fd(key, lambda: _open_outside(rctx, rec))
        return set_status_flags(os.dup(rctx.passed[key]), rec.flags, SETTABLE_FLAGS)

    def describe(self, rec: TcpOutsideRecord) -> str:
        if rec.state == TCP_NOT_CONNECTED:
            return f"TCP {_where(rec.family, _local(rec))}, not connected"
        return (f"TCP {_where(rec.family, _local(rec))} -> {_where(rec.family, _remote(rec))}, "
                f"{STATE_NAMES.get(rec.state, rec.state)}, peer outside the image, "
                f"{rec.length} bytes unread, {rec.sent_length} bytes unacknowledged or unsent; "
                f"restore: {restore_plan(rec)}")


def restore_plan(rec: TcpOutsideRecord) -> str:
    """What a restore does with the connection, in words."""
    if rec.state == TCP_NOT_CONNECTED:
        return "a new socket with its options" + (", bound to the same address" if rec.local_port else "")
    if rec.state == TCP_SYN_SENT:
        return "the connect() refused (ECONNREFUSED), as by a server that is down"
    if rec.state == TCP_CLOSE:
        return "reset (unread data, then ECONNRESET)"
    if rec.state in PEER_SENT_FIN:
        return "as it was (unread data then end of file; writing to it is then reset)"
    return ("reset by the peer (unread data, then ECONNRESET), or kept with --tcp-established "
            "after an in-place dump --kill")


def outside_summary(image) -> dict:
    """How many outside connections the image holds, and what restore will do with them."""
    recs = [r for r in getattr(image, "reader", image).of_type(TcpOutsideRecord)
            if r.state != TCP_NOT_CONNECTED]
    return {"count": len(recs),
            "established": sum(r.state == TCP_ESTABLISHED for r in recs),
            "half_closed": sum(r.state in HALF_CLOSED for r in recs),
            "closed": sum(r.state in (TCP_CLOSE, TCP_SYN_SENT) for r in recs),  # reset, connecting
            "restore": ("a restore resets them as if the peer had (--tcp-established keeps them after an "
                        "in-place dump --kill, while the peers hold their ends)") if recs else ""}


# --- restore of outside connections --------------------------------------------------------

def _warn(rctx: RestoreContext, text: str) -> None:
    rctx.warn(text)


def _after_release(rctx: RestoreContext, step) -> None:
    rctx.after_release("tcp: let the held connections go", step)


def _tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def _until(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RestoreError(f"re-creating a TCP connection: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.0005)


def _emulated(rctx: RestoreContext, rec: TcpOutsideRecord, data: bytes) -> int:
    """The connection as this end saw it, made over loopback with a stand-in peer that
    pyckpt drops at once: the unread data is queued again, then the peer's end of
    file (CLOSE-WAIT, LAST-ACK, CLOSING) or its reset (the others); a socket that had
    shut down writing has again.  The socket's own addresses are loopback ones."""
    if rec.state == TCP_NOT_CONNECTED:
        return _unconnected(rec, mapped(rctx, rec.local_port))
    if rctx.checking:
        return socket.socket(rec.family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC).detach()
    if rec.state == TCP_SYN_SENT:
        return _refused(rec)
    hosts = ["127.0.0.1"] if rec.family == socket.AF_INET else ["::1", "::ffff:127.0.0.1"]
    last: OSError | None = None
    for host in hosts:
        try:
            return _emulated_on(rec, data, host)
        except OSError as e:
            last = e
    raise RestoreError(f"cannot re-create TCP connection {_where(rec.family, _local(rec))} -> "
                       f"{_where(rec.family, _remote(rec))} as reset: no loopback ({last})")


def _emulated_on(rec: TcpOutsideRecord, data: bytes, host: str) -> int:
    kind = socket.SOCK_STREAM | socket.SOCK_CLOEXEC
    with socket.socket(rec.family, kind) as listener, socket.socket(rec.family, kind) as mine:
        if rec.family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind((host, 0))
        listener.listen(1)
        if len(data) > 1 << 16:
            mine.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 2 * len(data) + (1 << 16))
        mine.connect(listener.getsockname())
        peer, _ = listener.accept()
        with peer:
            peer.settimeout(5)
            peer.sendall(data)
            _until(lambda: _ioctl_int(mine, termios.FIONREAD) >= len(data), "queueing the unread data")
            if rec.state in WE_SENT_FIN:
                mine.shutdown(socket.SHUT_WR)
                _until(lambda: _tcp_state(peer) in (TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING, TCP_CLOSE),
                       "the end of file reaching the stand-in peer")
            if rec.state in PEER_SENT_FIN:
                peer.shutdown(socket.SHUT_WR)
                _until(lambda: _tcp_state(mine) in PEER_SENT_FIN + (TCP_CLOSE, 6), "the peer's end of file")
            else:
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, SO_LINGER_ZERO)
        if rec.state not in PEER_SENT_FIN:
            _until(lambda: _tcp_state(mine) == TCP_CLOSE, "the peer's reset")
        _set_options(mine, rec)
        return mine.detach()


def _unconnected(rec: TcpOutsideRecord, port: int) -> int:
    """A TCP socket that was never connected: new, with its options, bound where it was
    (to `port`: its own, or where the port map moved it)."""
    s = socket.socket(rec.family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        _set_options(s, rec)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(rec.reuseaddr))
        if rec.local_port:
            local = _sockaddr(rec.family, rec.local_address, port, rec.local_scope)
            try:
                s.bind(local)
            except OSError as e:
                error = PortInUseError(
                    "TCP", rec.local_address, port,
                    f"cannot bind a TCP socket to {_where(rec.family, local)} again: {e.strerror}")
                in_use = e.errno == errno.EADDRINUSE and on_loopback(rec.local_address)
                raise (needs(error, Fix("new_netns")) if in_use else error) from None
        return s.detach()
    finally:
        s.close()


def _refused(rec: TcpOutsideRecord) -> int:
    """A connect() in progress (SYN-SENT) comes back refused: a non-blocking connect to a
    loopback port nobody listens on (a server that is down), its error ECONNREFUSED
    pending, as the program's SO_ERROR check after EPOLLOUT reads it."""
    host = "127.0.0.1" if rec.family == socket.AF_INET else "::1"
    with socket.socket(rec.family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as free:
        free.bind((host, 0))
        port = free.getsockname()[1]  # closed again at once: nobody listens there
    s = socket.socket(rec.family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    try:
        _set_options(s, rec)
        try:
            s.connect((host, port))
        except BlockingIOError:
            pass
        except ConnectionRefusedError:  # refused at once: the error is reported, not pending
            raise RestoreError(f"cannot re-create the TCP connect() in progress to "
                               f"{_where(rec.family, _remote(rec))}: loopback refused synchronously") from None
        _until(lambda: _tcp_state(s) == TCP_CLOSE, "the refusal")
        return s.detach()
    finally:
        s.close()


def _set_options(s: socket.socket, rec) -> None:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(rec.nodelay))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, rec.keepalive[0])
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, rec.keepalive[1])
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, rec.keepalive[2])
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, rec.keepalive[3])


def _sent_queue(rctx: RestoreContext, rec: TcpOutsideRecord) -> bytes:
    return rctx.image.read_blob(rec.sent_offset, rec.sent_length, f"the send queue of TCP socket {rec.ino}")


def _open_outside(rctx: RestoreContext, rec: TcpOutsideRecord) -> int:
    data = _queue(rctx, rec)
    what = f"TCP connection {_where(rec.family, _local(rec))} -> {_where(rec.family, _remote(rec))}"
    held = None if rctx.checking or rctx.options.new_netns else _held(rec, rctx)
    if held is not None:  # dump --kill left it held: let it go once the restore stands
        _after_release(rctx, lambda: _let_go(rec, held))  # noqa: B023
    if not rctx.options.tcp_established or rctx.checking:
        return _emulated(rctx, rec, data)
    if held is not None:
        try:
            fd = _pidfd_getfd(held.pidfd, held.fd)
        except OSError:
            fd = -1
        if fd >= 0:
            s = socket.socket(fileno=fd)
            if os.fstat(fd).st_ino == rec.ino:
                if _tcp_state(s) == TCP_CLOSE and rec.state not in (TCP_CLOSE, TCP_NOT_CONNECTED):
                    _warn(rctx, f"{what}: the peer reset it while it was held; it is restored reset")
                held.handed_over = True
                return s.detach()
            s.close()
    if rec.state not in (TCP_ESTABLISHED, *WE_SENT_FIN):
        return _emulated(rctx, rec, data)  # as it was (but for its addresses), or refused
    why = ("restored in a new network namespace" if rctx.options.new_netns else
           "no pyckpt dump --kill holds it (the original's end is gone)")
    if rec.state == TCP_ESTABLISHED and rec.window and not rctx.options.new_netns:
        try:
            return _recreate(rctx, rec, data)
        except OSError as e:
            why = f"re-creating it with TCP_REPAIR failed: {e.strerror}"
        except _PeerGone:
            why = "its peer is gone"
    _warn(rctx, f"{what} not kept as --tcp-established asked: {why}; it is restored as reset by the peer")
    return _emulated(rctx, rec, data)


class _PeerGone(Exception):
    pass


def _recreate(rctx: RestoreContext, rec: TcpOutsideRecord, data: bytes) -> int:
    """The connection rebuilt from the image with TCP_REPAIR (when no held socket is left:
    the peer must still hold its end, and nothing may have reached this end since)."""
    if _local_peer_gone(rec):
        raise _PeerGone()
    sent = _sent_queue(rctx, rec)
    s = socket.socket(rec.family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
        s.setsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ,
                     struct.pack("I", (rec.snd_seq - len(sent)) & 0xFFFFFFFF))
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        s.setsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, struct.pack("I", (rec.rcv_seq - len(data)) & 0xFFFFFFFF))
        s.bind(_local(rec))  # repair mode forces the reuse of the port (SO_REUSEADDR would undo it)
        s.connect(_remote(rec))
        _repair_options(s, rec, rec.mss)
        if rec.options & TCPI_OPT_TIMESTAMPS:
            s.setsockopt(socket.IPPROTO_TCP, TCP_TIMESTAMP, struct.pack("I", rec.timestamp))
        if data:
            s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
            _send_all(s, data)
        # after the receive queue: the kernel checks the window against rcv_nxt, which it moved
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, struct.pack("5I", *rec.window))
        unsent = min(rec.unsent, len(sent))
        if len(sent) > 1 << 16:  # room for the whole queue, sent without waiting on the peer
            s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 2 * len(sent) + (1 << 16))
        if len(sent) - unsent:
            s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
            _send_all(s, sent[:len(sent) - unsent])
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, 0)
        _set_options(s, rec)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", *rec.linger))
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 0)  # a window probe tells the peer
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(rec.reuseaddr))
        if unsent:  # queued as the program had, sent when the peer's window opens
            s.setblocking(False)
            _send_all(s, sent[len(sent) - unsent:])
        return s.detach()
    finally:
        s.close()


def _send_all(s: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[s.send(view):]


def _local_peer_gone(rec: TcpOutsideRecord) -> bool:
    """Whether the peer's address is one of this host's and no socket of this network
    namespace holds the other end (then the peer is surely gone)."""
    try:
        with socket.socket(rec.family, socket.SOCK_DGRAM) as probe:
            probe.bind(_sockaddr(rec.family, rec.remote_address, 0, rec.remote_scope))
    except OSError:
        return False  # another host's: nothing tells from here
    # (/proc/net/tcp6 names an IPv4-mapped address as IPv4: proc/net.address)
    local = (_unmapped(rec.local_address), rec.local_port)
    remote = (_unmapped(rec.remote_address), rec.remote_port)
    return not any(l == remote and r == local and st in (TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2)
                   for st, l, r in socket_states(os.getpid()).values())


def _unmapped(address: str) -> str:
    """An IPv4-mapped IPv6 address ("::ffff:127.0.0.1", as getsockname() gives it) as
    IPv4; any other as it is."""
    return address[7:] if address.startswith("::ffff:") and "." in address else address


# --- holding the connections of a killed process until its restore --------------------------

HOLDER = """
import os, signal, socket, sys, time
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
    signal.signal(s, signal.SIG_IGN)
deadline = time.monotonic() + float(sys.argv[1])
originals = [tuple(int(x) for x in item.split(":")) for item in sys.argv[2].split(",")]
fds = [int(x) for x in sys.argv[3].split(",")]
keep = {0, 1, 2, *fds}  # nothing else of pyckpt's (its inheritable fds: a caller's pipe)
for name in os.listdir("/proc/self/fd"):
    if int(name) not in keep:
        try:
            os.close(int(name))
        except OSError:
            pass

def running(pid, start):
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
        fields = text[text.rindex(")") + 2:].split()
        return fields[0] not in "ZX" and int(fields[19]) == start
    except (OSError, ValueError, IndexError):
        return False

reset = True
while time.monotonic() < deadline:
    time.sleep(0.5)
    if any(running(pid, start) for pid, start in originals):
        reset = False  # the kill failed: let go quietly, the processes keep their sockets
        break
if reset:  # nobody restored them in time: the peers see a reset
    for fd in fds:
        try:
            socket.socket(fileno=fd).setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\1\\0\\0\\0\\0\\0\\0\\0")
        except OSError:
            pass
for path in sys.argv[4:]:
    try:
        os.unlink(path)
    except OSError:
        pass
"""


def _hold(objects: dict) -> None:
    """dump --kill: the outside connections are handed to a small holder process before the
    kill, so that the kill closes none of them: the kernel keeps each one open as it was
    (acknowledging what the peer sends, which queues up for the restore), the peer sees
    no reset and no end of file.  A restore takes them from the holder (pidfd_getfd) and
    ends it; after HOLD_SECONDS without one the holder exits, and its closes reset them
    (SO_LINGER 0, set then), as a default restore does.  Should the kill fail (a dumped
    process still runs, same PID and start time, half a second later or any time
    after), the holder lets go at once without touching the sockets."""
    socks = []
    try:
        originals = set()
        for pid, fd, ino in objects.get("tcp outside to hold on kill", []):
            try:
                s = take(pid, fd)
                originals.add((pid, _start_time(pid)))
            except (OSError, ValueError, IndexError):
                continue
            socks.append((ino, s))
        if not socks:
            return
        os.makedirs(HELD_DIR, mode=0o700, exist_ok=True)
        paths = [os.path.join(HELD_DIR, str(ino)) for ino, _ in socks]
        fds = [s.fileno() for _, s in socks]
        holder = _spawn_holder([str(HOLD_SECONDS), ",".join(f"{pid}:{start}" for pid, start in sorted(originals)),
                                ",".join(map(str, fds)), *paths], fds)
        start = _start_time(holder)
        for path, fd in zip(paths, fds):
            tmp = f"{path}.{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(f"{holder} {fd} {start}\n")
            os.replace(tmp, path)
    except OSError:
        pass  # best effort: without a holder the kill closes them (the peers see it)
    finally:
        for _, s in socks:
            s.close()


_HOLDERS: list[int] = []  # pidfds of the holders this process started, reaped once ended


def _spawn_holder(args: list[str], fds: list[int]) -> int:
    """Start HOLDER with `args`, holding `fds`, in a session of its own, its stdio
    /dev/null; its PID.  By posix_spawn, not subprocess (whose import, with signal's
    and enum's, took ~5 ms of the freeze of a dump --kill), and free to run where
    pyckpt ran before the dump pinned it to the target's CPU (there the holder's
    start would hold up the rest of the dump).  `fds` stay close-on-exec in pyckpt
    (another thread's child must not get them): a dup2 of each onto itself clears
    that in the holder alone (glibc 2.29 on).  Every other inheritable fd of
    pyckpt's is closed by HOLDER itself; `-I` keeps the caller's directory off its
    sys.path (a socket.py there would run as the holder)."""
    import sys

    for pidfd in list(_HOLDERS):  # (a long-lived caller's earlier holders that ended since;
        try:  # by pidfd: a restore may have reaped one, and its PID be another's now)
            if os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG) is None:
                continue
        except ChildProcessError:
            pass
        _HOLDERS.remove(pidfd)
        os.close(pidfd)
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0), (os.POSIX_SPAWN_DUP2, 1, 2)]
    actions += [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in fds]
    from ..seize import unpinned_cpus

    wide = unpinned_cpus()
    pinned = os.sched_getaffinity(0) if wide else None
    try:
        if pinned is not None:
            os.sched_setaffinity(0, wide)  # (what the holder inherits)
    except OSError:
        pinned = None
    try:
        pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", "-c", HOLDER, *args], os.environ,
                             file_actions=actions, setsid=True)
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, pinned)
    try:
        _HOLDERS.append(os.pidfd_open(pid))
    except OSError:
        pass
    return pid


def _start_time(pid: int) -> int:
    return proc.read_stat(pid).start_time


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    import ctypes

    from ..arch import libc

    copy = libc.syscall(nr.pidfd_getfd, pidfd, fd, 0)
    if copy < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_getfd of fd {fd}: {os.strerror(err)}")
    return copy


@dataclass
class _Held:
    """A socket a dump --kill left with a holder process."""

    pidfd: int
    fd: int
    handed_over: bool = False  # the restored process has it (--tcp-established)


def _held(rec: TcpOutsideRecord, rctx: RestoreContext | None = None) -> _Held | None:
    """The holder of this very socket (same inode, and the same addresses while it has a
    peer) when a dump --kill left one, else None.  Never for an image an ordinary user
    owns (restorer's trust check): it could name another image's connection."""
    if rctx is not None and any(str(key).startswith("trust:") for key in rctx.shared):
        return None
    path = os.path.join(HELD_DIR, str(rec.ino))
    try:
        with open(path) as f:
            pid, fd, start = (int(x) for x in f.read().split())
        pidfd = os.pidfd_open(pid)
    except (OSError, ValueError):
        return None
    try:
        if _start_time(pid) == start:
            with socket.socket(fileno=_pidfd_getfd(pidfd, fd)) as copy:
                if os.fstat(copy.fileno()).st_ino == rec.ino and _same_addresses(copy, rec):
                    return _Held(pidfd, fd)
    except (OSError, ValueError, IndexError):
        pass
    os.close(pidfd)
    return None


def make_held_reusable(rctx: RestoreContext) -> None:
    """Before a listener of the image binds its port again: the held sockets (the accepted
    connections of the killed listener are bound to that port) get SO_REUSEADDR, so that
    the bind does not conflict with them even when the original listener had not set it
    (the one handed over gets its own value back after the release).  Once per restore."""
    if rctx.checking or rctx.options.new_netns or "tcp held reusable" in rctx.shared:
        return
    rctx.shared["tcp held reusable"] = True
    for rec in getattr(rctx.image, "reader", rctx.image).of_type(TcpOutsideRecord):
        held = _held(rec, rctx)
        if held is None:
            continue
        try:
            with socket.socket(fileno=_pidfd_getfd(held.pidfd, held.fd)) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        except OSError:
            pass
        finally:
            os.close(held.pidfd)


def _same_addresses(s: socket.socket, rec: TcpOutsideRecord) -> bool:
    try:
        here, there = s.getsockname(), s.getpeername()
    except OSError:  # reset meanwhile: no peer address left to compare
        return True
    return (_endpoint(here)[:2] == (rec.local_address, rec.local_port) and
            _endpoint(there)[:2] == (rec.remote_address, rec.remote_port))


def _let_go(rec: TcpOutsideRecord, held: _Held) -> None:
    """After the release, end the holder: its close resets the connection (SO_LINGER 0),
    unless the restored process has the socket now (--tcp-established), which gets the
    original's SO_LINGER back first."""
    try:
        try:
            with socket.socket(fileno=_pidfd_getfd(held.pidfd, held.fd)) as s:
                if held.handed_over:  # the restored process's own values back
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", *rec.linger))
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(rec.reuseaddr))
                else:  # the holder's close is the last: a reset, which the peer sees at once
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, SO_LINGER_ZERO)
        except OSError:
            pass
        try:
            signal.pidfd_send_signal(held.pidfd, signal.SIGKILL)
            os.waitid(os.P_PIDFD, held.pidfd, os.WEXITED)  # reaped when this process started it
        except OSError:
            pass  # ChildProcessError: another's child (a pyckpt dump command's), reaped by init
    finally:
        os.close(held.pidfd)
        try:
            os.unlink(os.path.join(HELD_DIR, str(rec.ino)))
        except OSError:
            pass
