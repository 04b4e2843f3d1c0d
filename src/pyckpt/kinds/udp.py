"""UDP sockets (IPv4 and IPv6): bound, connected, or both, with their options.

What is saved: the local address and port (a socket that connect()ed without
bind() has the port the kernel gave it, which is kept too: the peer sees the
same source), the peer of a connected socket, the file status flags
(O_NONBLOCK...), and the options a program sets on a UDP socket:
SO_REUSEADDR, SO_REUSEPORT, SO_BROADCAST, SO_RCVBUF/SO_SNDBUF (set again only
where they differ from a new socket's, so an untouched buffer keeps the
kernel's default), IP_TOS and IP_TTL, or for IPv6 IPV6_TCLASS,
IPV6_UNICAST_HOPS and IPV6_V6ONLY, and the multicast sending options
(IP_MULTICAST_TTL/LOOP, IPV6_MULTICAST_HOPS/LOOP).  At restore a new socket is
made with them, bound to the same address and port and connected to the same
peer, so a server answers on its port and a client still sends to its peer.

**Queued datagrams are dropped**, as the network may drop any datagram:
neither the datagrams waiting to be read at the dump nor corked data not yet
sent come back.  A program using UDP copes with loss by design.  The dump
counts them (`pyckpt show`; the dump's summary line says how many are
dropped).  Nor does an error pending on the socket (an ICMP port unreachable
reported to a connected socket, which its next read or send would return):
poll sees it without taking it, and the queue is then not counted, since a
read would hand the error to pyckpt instead of the process.

Refused by name: a socket bound to a multicast group address (what it joined
cannot be read back from the kernel per socket); UDP-Lite and other
datagram protocols (unix.py names them).  Group memberships
(IP_ADD_MEMBERSHIP) of a socket bound to a wildcard address are not visible
per socket either: they are not restored (the socket still receives unicast).

Identity: a socket is UDP by its protocol name (the socket's
"system.sockprotoname" attribute, one getxattr per socket fd); the queue
counts come from the target's /proc/PID/net/udp{,6}, read once per dump and
network namespace.  A port taken at restore (the original, or another copy,
still holds it) is a `PortInUseError` naming it; a copy restored beside the
original on a loopback or wildcard address needs its own network namespace
(`new_netns`).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import stat
from dataclasses import dataclass

from ..errors import ImageError, PortInUseError, RestoreError, UnsupportedFdError
from ..image import record
from ..problems import Fix, needs
from .context import DumpContext, RestoreContext
from .files import DumpedFd, FileKind, file_kind, set_status_flags
from .unix import take

SETTABLE_FLAGS = os.O_NONBLOCK | getattr(os, "O_ASYNC", 0o20000)
SO_PEEK_OFF = 42
IPV6_TCLASS = getattr(socket, "IPV6_TCLASS", 67)
MAX_COUNTED = 1 << 16  # datagrams counted (for show) at most
# (level, option) of each integer option saved, by family; set at restore where it
# differs from a new socket's value
OPTIONS = {
    socket.AF_INET: (
        ("reuseaddr", socket.SOL_SOCKET, socket.SO_REUSEADDR),
        ("reuseport", socket.SOL_SOCKET, socket.SO_REUSEPORT),
        ("broadcast", socket.SOL_SOCKET, socket.SO_BROADCAST),
        ("tos", socket.IPPROTO_IP, socket.IP_TOS),
        ("ttl", socket.IPPROTO_IP, socket.IP_TTL),
        ("mcast_ttl", socket.IPPROTO_IP, socket.IP_MULTICAST_TTL),
        ("mcast_loop", socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP),
    ),
    socket.AF_INET6: (
        ("reuseaddr", socket.SOL_SOCKET, socket.SO_REUSEADDR),
        ("reuseport", socket.SOL_SOCKET, socket.SO_REUSEPORT),
        ("broadcast", socket.SOL_SOCKET, socket.SO_BROADCAST),
        ("v6only", socket.IPPROTO_IPV6, socket.IPV6_V6ONLY),
        ("tclass", socket.IPPROTO_IPV6, IPV6_TCLASS),
        ("hops", socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS),
        ("mcast_hops", socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS),
        ("mcast_loop", socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP),
    ),
}


@record(140)
@dataclass
class UdpSocketRecord:
    id: int
    family: int  # AF_INET or AF_INET6
    address: str  # local address ("0.0.0.0"/"::" when bound to any)
    port: int  # local port; 0: never bound
    scope: int  # IPv6 scope id of the local address (link-local); 0 otherwise
    peer_address: str  # "" when not connected
    peer_port: int
    peer_scope: int
    flags: int  # file status flags (O_NONBLOCK...), without O_CLOEXEC
    options: list[tuple[str, int]]  # (name (see OPTIONS), value) for the socket's family
    rcvbuf: int  # SO_RCVBUF/SO_SNDBUF as getsockopt says (twice what was set)
    sndbuf: int
    queued: int  # datagrams waiting to be read at the dump (dropped at restore); -1: some,
    #              not counted (an error was pending on the socket: a read would take it)
    queued_bytes: int  # their payload


def _proto(f: DumpedFd) -> bytes:
    try:
        return os.getxattr(f.proc_path, "system.sockprotoname").rstrip(b"\0")
    except OSError:
        return b""


def _queues(ctx: DumpContext, pid: int) -> dict[int, tuple[int, int]]:
    """Inode -> (receive queue, send queue) in bytes of every UDP socket in `pid`'s
    network namespace, from /proc/PID/net/udp{,6}: read once per dump and namespace."""
    netns = os.stat(f"/proc/{pid}/ns/net").st_ino
    cache = ctx.objects.setdefault("udp queues", {})
    if netns not in cache:
        table: dict[int, tuple[int, int]] = {}
        for name in ("udp", "udp6"):
            try:
                with open(f"/proc/{pid}/net/{name}") as f:
                    text = f.read()
            except FileNotFoundError:
                continue
            table.update(parse_proc_net_udp(text))
        cache[netns] = table
    return cache[netns]


def parse_proc_net_udp(text: str) -> dict[int, tuple[int, int]]:
    """Inode -> (rx_queue, tx_queue) of /proc/net/udp{,6} text."""
    out = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9:
            tx, _, rx = fields[4].partition(":")
            out[int(fields[9])] = (int(rx, 16), int(tx, 16))
    return out


def _error_pending(sock: socket.socket) -> bool:
    """Whether the socket has an error to report (a connected socket's ICMP port
    unreachable...): poll says POLLERR without taking it, where a read or SO_ERROR
    would hand it to pyckpt instead of the process."""
    p = select.poll()
    p.register(sock, 0)
    return bool(dict(p.poll(0)).get(sock.fileno(), 0) & select.POLLERR)


def _count_queued(sock: socket.socket) -> tuple[int, int]:
    """(datagrams, payload bytes) waiting in `sock`'s receive queue, left in place:
    peeked one after the other with SO_PEEK_OFF, which is set back."""
    saved = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
    count = size = 0
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
        while count < MAX_COUNTED:
            try:
                data = sock.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not data:  # an empty datagram: the offset cannot step past it
                count += 1
                break
            count += 1
            size += len(data)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, saved)
    return count, size


def _where(family: int, address: str, port: int) -> str:
    return f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}"


@file_kind
class UdpSocket(FileKind):
    name = "udp"
    records = (UdpSocketRecord,)
    priority = 58  # before unix.py, which refuses every other socket

    def claims(self, f: DumpedFd) -> bool:
        return stat.S_ISSOCK(f.st.st_mode) and _proto(f) in (b"UDP", b"UDPv6")

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        sock = take(f.pid, f.fd)
        try:
            family = sock.family
            name = sock.getsockname()
            try:
                peer = sock.getpeername()
            except OSError as e:
                if e.errno != errno.ENOTCONN:
                    raise
                peer = ("", 0, 0, 0)
            options = [(key, sock.getsockopt(level, opt)) for key, level, opt in OPTIONS[family]]
            rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            rx, _ = _queues(ctx, f.pid).get(f.st.st_ino, (1, 0))
            queued, queued_bytes = (0, 0) if not rx else (-1, 0) if _error_pending(sock) else \
                _count_queued(sock)
        finally:
            sock.close()
        address, port = name[0], name[1]
        if address and ipaddress.ip_address(address.partition("%")[0]).is_multicast:
            raise UnsupportedFdError(
                f.pid, f.fd, "UDP socket bound to a multicast group",
                f"{f.link} on {_where(family, address, port)}; its group memberships cannot be read "
                "back from the kernel")
        return [UdpSocketRecord(
            file_id, int(family), address, port, name[3] if len(name) > 3 else 0,
            peer[0], peer[1], peer[3] if len(peer) > 3 else 0, f.info.flags & ~os.O_CLOEXEC,
            options, rcvbuf, sndbuf, queued, queued_bytes)]

    def open(self, rctx: RestoreContext, rec: UdpSocketRecord) -> int:
        s = socket.socket(rec.family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.IPPROTO_UDP)
        try:
            saved = dict(rec.options)
            for key, level, opt in OPTIONS[rec.family]:
                if key in saved and s.getsockopt(level, opt) != saved[key]:
                    s.setsockopt(level, opt, saved[key])
            for opt, force, value in ((socket.SO_RCVBUF, 33, rec.rcvbuf), (socket.SO_SNDBUF, 32, rec.sndbuf)):
                if s.getsockopt(socket.SOL_SOCKET, opt) != value:
                    try:  # SO_RCVBUFFORCE/SO_SNDBUFFORCE: past net.core.[rw]mem_max, as root may
                        s.setsockopt(socket.SOL_SOCKET, force, value // 2)
                    except PermissionError:
                        s.setsockopt(socket.SOL_SOCKET, opt, value // 2)
            if rec.port:
                self._bind(rctx, s, rec)
            if rec.peer_port:
                try:
                    s.connect((rec.peer_address, rec.peer_port, 0, rec.peer_scope)
                              if rec.family == socket.AF_INET6 else (rec.peer_address, rec.peer_port))
                except OSError as e:
                    raise RestoreError(f"cannot connect the UDP socket {self.describe(rec)} to its peer "
                                       f"again: {e.strerror}") from None
            fd = s.detach()
        finally:
            s.close()
        return set_status_flags(fd, rec.flags, SETTABLE_FLAGS)

    def _bind(self, rctx: RestoreContext, s: socket.socket, rec: UdpSocketRecord) -> None:
        address = rec.address
        if rec.family == socket.AF_INET6 and not dict(rec.options).get("v6only", 1):
            ip = ipaddress.IPv6Address(address.partition("%")[0])
            if not ip.is_unspecified and ip.ipv4_mapped is None:
                # Binding to such an address sets IPV6_V6ONLY (and it cannot be unset
                # after): this one was bound to any address, and connect() made the
                # address its own — as it will again.
                address = "::"
        try:
            s.bind((address, rec.port, 0, rec.scope) if rec.family == socket.AF_INET6
                   else (address, rec.port))
        except OSError as e:
            where = _where(rec.family, rec.address, rec.port)
            if e.errno != errno.EADDRINUSE:
                raise RestoreError(f"cannot bind the UDP socket to {where} again: {e.strerror}") from None
            from .tcp import on_loopback

            copy = "" if rctx.options.new_netns else (
                "; a copy beside the original needs its own network namespace: --new-netns "
                "(API: new_netns=True)" if on_loopback(rec.address) else "")
            error = PortInUseError("UDP", rec.address, rec.port, (
                f"UDP port {rec.port} ({where}) is in use: another socket holds it, such as the "
                f"original process or another copy of it; end that one{copy}"))
            raise (needs(error, Fix("new_netns")) if copy else error) from None

    def describe(self, rec: UdpSocketRecord) -> str:
        local = _where(rec.family, rec.address, rec.port) if rec.port else "unbound"
        text = f"UDP {local}"
        if rec.peer_port:
            text += f", connected to {_where(rec.family, rec.peer_address, rec.peer_port)}"
        if rec.queued < 0:
            text += ", datagrams queued at the dump (not counted), dropped at restore"
        elif rec.queued:
            text += (f", {rec.queued} datagram{'s' if rec.queued != 1 else ''} ({rec.queued_bytes} bytes) "
                     "queued at the dump, dropped at restore")
        return text


def dropped(image) -> str:
    """For the dump's summary line: the datagrams queued at the dump in the whole
    image, which restore drops ('' when there are none)."""
    recs = getattr(image, "reader", image).of_type(UdpSocketRecord)
    n = sum(r.queued for r in recs if r.queued > 0)
    if not n and not any(r.queued < 0 for r in recs):
        return ""
    n = max(n, 1)  # a queue not counted holds one at least
    some = f"{'at least ' if any(r.queued < 0 for r in recs) else ''}{n} UDP datagram{'s' if n != 1 else ''}"
    return f"{some} queued at the dump will be dropped, as a network may drop them"


def validate(image) -> None:
    for r in getattr(image, "reader", image).of_type(UdpSocketRecord):
        known = {key for key, _, _ in OPTIONS.get(r.family, ())}
        options = dict(r.options)
        if (r.family not in OPTIONS or not 0 <= r.port < 65536 or not 0 <= r.peer_port < 65536
                or (r.peer_port and not r.peer_address) or not set(options) <= known
                or len(options) != len(r.options) or not all(-1 <= v < 1 << 31 for v in options.values())
                or not 0 <= r.rcvbuf < 1 << 31 or not 0 <= r.sndbuf < 1 << 31 or r.queued < -1):
            raise ImageError(f"image at {image.path}: UDP socket #{r.id} has a bad address or option")
        try:
            for a in (r.address, *((r.peer_address,) if r.peer_port else ())):
                ip = ipaddress.ip_address(a)
                if (ip.version == 6) != (r.family == socket.AF_INET6):
                    raise ValueError(a)
        except ValueError:
            raise ImageError(f"image at {image.path}: UDP socket #{r.id} has a bad address") from None
