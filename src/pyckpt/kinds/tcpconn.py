"""Established TCP connections whose two ends are both in the image.

A program often talks TCP to itself: a server and a client in one process
tree, or one process connected to its own listener (an ipykernel does).
When the image holds both ends, the connection can be rebuilt exactly
without the network being involved: the two sockets are re-created with
TCP_REPAIR (connect() in repair mode makes a socket ESTABLISHED without a
handshake), bound to the same addresses and ports, with sequence numbers
that fit each other, the negotiated options (MSS, window scaling, SACK,
timestamps), and each end's unread data put straight back into its receive
queue; repair mode is then left.  A connection to a process outside the
image is refused (its peer would see the connection break).

Dump reads without disturbing anything: the 4-tuple and state come from the
target's /proc/PID/net/tcp{,6} (the peer is the socket with the reversed
tuple, found among the image's fds), unread data is peeked (MSG_PEEK through
SO_PEEK_OFF, set back after) on the socket itself (pidfd_getfd), the options
from TCP_INFO (each end's advertised MSS becomes its peer's clamp).  Data sent but not yet acknowledged
(SIOCOUTQ > 0 once a delayed ACK had its time) is refused rather than
guessed at: on loopback that only lasts while the receiver's window is full.

With kill=True the dumped ends are closed with SO_LINGER 0 just before the
kill (a reset, no FIN exchange): no TIME_WAIT is left on the 4-tuple the
restore needs again.  Restore needs CAP_NET_ADMIN (TCP_REPAIR).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import secrets
import socket
import stat
import struct
import termios
import time
from dataclasses import dataclass

from ..errors import RestoreError, UnsupportedFdError
from ..image import PAGES_FILE, padded, record
from ..problems import Fix, needs
from .context import DumpContext, RestoreContext
from .files import DumpedFd, FileKind, file_kind, set_status_flags
from .tcp import on_loopback, open_all_listeners
from .unix import SO_PEEK_OFF, sockets_in_image, take

TCP_ESTABLISHED_HEX = "01"
TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, TCP_REPAIR_OPTIONS = 19, 20, 21, 22
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2
TCPOPT_MSS, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP = 2, 3, 4, 8
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4
TCPI_ADVMSS = 84  # offset of tcpi_advmss in struct tcp_info
SIOCOUTQ = termios.TIOCOUTQ
SETTABLE_FLAGS = os.O_NONBLOCK | getattr(os, "O_ASYNC", 0o20000)


@record(102)
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

    def stored_runs(self) -> list[tuple[int, int, int]]:
        return [(self.offset, padded(self.length), self.xxh3)] if self.length else []


def proc_address(text: str) -> tuple[str, int]:
    """(address, port) from /proc/net/tcp{,6} hex ("0100007F:1F90"); an IPv4-mapped
    IPv6 address as plain IPv4, so both files name one connection alike."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # host-order words
    ip = ipaddress.ip_address(words)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def parse_established(text: str) -> dict[int, tuple[tuple[str, int], tuple[str, int]]]:
    """Inode -> (local, remote) addresses of the established sockets in /proc/net/tcp{,6} text."""
    out = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) > 9 and f[3] == TCP_ESTABLISHED_HEX and f[9] != "0":
            out[int(f[9])] = (proc_address(f[1]), proc_address(f[2]))
    return out


def _connections(ctx: DumpContext, pid: int) -> tuple[dict, dict]:
    """(inode -> (local, remote) of established sockets, (local, remote) -> inode), once per dump."""
    cached = ctx.objects.get("tcp connections")
    if cached is None:
        by_ino: dict[int, tuple[str, str]] = {}
        for name in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{pid}/net/{name}") as f:
                    by_ino.update(parse_established(f.read()))
            except FileNotFoundError:
                pass
        cached = ctx.objects["tcp connections"] = (by_ino, {v: k for k, v in by_ino.items()})
    return cached


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
    priority = 56  # before unix.py, which refuses every other socket

    def claims(self, f: DumpedFd) -> bool:
        if not stat.S_ISSOCK(f.st.st_mode):
            return False
        for name in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{f.pid}/net/{name}") as fh:
                    if f.st.st_ino in parse_established(fh.read()):
                        return True
            except FileNotFoundError:
                pass
        return False

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        by_ino, by_tuple = _connections(ctx, f.pid)
        local, remote = by_ino.get(f.st.st_ino, (None, None))
        sock = take(f.pid, f.fd)
        try:
            here, there = sock.getsockname(), sock.getpeername()
            peer = by_tuple.get((remote, local)) if local else None
            if peer is None or peer not in sockets_in_image(ctx):
                raise UnsupportedFdError(
                    f.pid, f.fd, "TCP connection to a process outside the image",
                    f"{f.link}, {_where(sock.family, here)} -> {_where(sock.family, there)}")
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


def before_kill(objects: dict) -> None:
    """SO_LINGER 0 on every dumped connection: the kill that follows resets them
    instead of leaving TIME_WAIT on the 4-tuples a restore needs again."""
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


def _queue(rctx: RestoreContext, rec: TcpConnectionRecord) -> bytes:
    if not rec.length:
        return b""
    with open(rctx.image.open_pages(), "rb", buffering=0) as f:
        data = os.pread(f.fileno(), rec.length, rec.offset)
    if len(data) != rec.length:
        raise RestoreError(f"image at {rctx.image.path}: {PAGES_FILE} is short (damaged image)")
    return data


def _reconnect(rctx: RestoreContext, a_rec: TcpConnectionRecord,
               b_rec: TcpConnectionRecord) -> tuple[int, int]:
    """Both ends again, connected to each other in repair mode; fds in pyckpt."""
    qa, qb = _queue(rctx, a_rec), _queue(rctx, b_rec)
    x, y = secrets.randbits(32), secrets.randbits(32)
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
            try:
                s.bind(_local(rec))
                s.connect(_remote(rec))
            except OSError as e:
                error = RestoreError(
                    f"cannot re-create TCP connection {_where(rec.family, _local(rec))} -> "
                    f"{_where(rec.family, _remote(rec))}: {e.strerror} (does the original still run?)")
                in_use = e.errno == errno.EADDRINUSE and on_loopback(rec.local_address)
                raise (needs(error, Fix("new_netns")) if in_use else error) from None
            other = b_rec if rec is a_rec else a_rec
            opts = [(TCPOPT_MSS, other.advmss)]
            if rec.options & TCPI_OPT_WSCALE:
                opts.append((TCPOPT_WINDOW, rec.snd_wscale | rec.rcv_wscale << 16))
            if rec.options & TCPI_OPT_SACK:
                opts.append((TCPOPT_SACK_PERM, 0))
            if rec.options & TCPI_OPT_TIMESTAMPS:
                opts.append((TCPOPT_TIMESTAMP, 0))
            s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_OPTIONS, b"".join(struct.pack("II", *o) for o in opts))
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
        for s in socks:
            s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 0)
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
