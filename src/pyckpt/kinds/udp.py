"""UDP sockets (IPv4 and IPv6): bound, connected, or both, with their options.

What is saved: the local address and port (a socket that connect()ed without
bind() has the port the kernel gave it, which is kept too: the peer sees the
same source), the peer of a connected socket, the file status flags
(O_NONBLOCK...), and the options a program sets on a UDP socket:
SO_REUSEADDR, SO_REUSEPORT, SO_BROADCAST, SO_RCVBUF/SO_SNDBUF (set again only
where they differ from a new socket's, so an untouched buffer keeps the
kernel's default), IP_TOS and IP_TTL, or for IPv6 IPV6_TCLASS,
IPV6_UNICAST_HOPS and IPV6_V6ONLY, and the multicast sending options
(IP_MULTICAST_TTL/LOOP/IF, IPV6_MULTICAST_HOPS/LOOP/IF), and the multicast
groups it joined, each with its interface and source filter.  At restore a new
socket is made with them, bound to the same address and port, joined to the
same groups and connected to the same peer, so a server answers on its port
and a client still sends to its peer.

Group memberships cannot be listed per socket, but each can be asked for:
the groups joined on the interfaces of the target's network (from
/proc/PID/net/igmp{,6}, read once per dump and namespace) are the candidates,
and getsockopt(MCAST_MSFILTER) says for each whether the socket is a member
and with which source filter (it changes nothing).  They are joined again on
the interface of the same name (a copy in `new_netns` has only `lo`: a group
joined on another interface is a RestoreError naming both).

**Queued datagrams are dropped**, as the network may drop any datagram:
neither the datagrams waiting to be read at the dump nor corked data not yet
sent come back.  A program using UDP copes with loss by design.  The dump
counts them (`pyckpt show`; the dump's summary line says how many are
dropped).  Nor does an error pending on the socket (an ICMP port unreachable
reported to a connected socket, which its next read or send would return):
poll sees it without taking it, and the queue is then not counted, since a
read would hand the error to pyckpt instead of the process.

Refused by name: UDP-Lite and other datagram protocols (unix.py names them);
a source filter longer than net.ipv4.igmp_max_msf (net.ipv6.mld_max_msf).

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
import ctypes
import os
import select
import stat
import struct

from .. import _sock as socket  # (socket's calls without its import: _sock.py)
from .._dataclass import dataclass, field

from ..arch import libc as _libc
from ..errors import ImageError, PortInUseError, RestoreError, UnsupportedFdError
from ..image import record
from ..problems import Fix, needs
from .context import DumpContext, RestoreContext
from .files import DumpedFd, FileKind, file_kind, set_status_flags
from .unix import take

SETTABLE_FLAGS = os.O_NONBLOCK | getattr(os, "O_ASYNC", 0o20000)
SO_PEEK_OFF = 42
MCAST_JOIN_GROUP, MCAST_MSFILTER, MCAST_EXCLUDE, MCAST_INCLUDE = 42, 48, 0, 1
LEVEL = {socket.AF_INET: socket.IPPROTO_IP, socket.AF_INET6: socket.IPPROTO_IPV6}
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
        ("mcast_if", socket.IPPROTO_IP, socket.IP_MULTICAST_IF),  # the interface's address
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
        ("mcast_if", socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF),  # the interface's index
    ),
}


@dataclass
class UdpMembership:
    """A multicast group the socket joined, with its source filter."""

    group: str
    interface: str  # the device's name (joined again by name: indexes differ between networks)
    exclude: bool  # filter mode: EXCLUDE (any source but `sources`) or INCLUDE (only `sources`)
    sources: list[str]


@record(140, scope="image")
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
    memberships: list[UdpMembership] = field(default_factory=list)


def _proto(f: DumpedFd) -> bytes:
    try:
        return os.getxattr(f.proc_path, "system.sockprotoname").rstrip(b"\0")
    except OSError:
        return b""


def _queues(ctx: DumpContext, pid: int) -> dict[int, tuple[int, int]]:
    """Inode -> (receive queue, send queue) in bytes of every UDP socket in `pid`'s
    network namespace, from /proc/PID/net/udp{,6}: read once per dump and namespace."""
    table = ctx.tables.net(pid, "udp", "udp6")
    return ctx.tables.memo(("udp queues", id(table)),
                           lambda: {s.inode: (s.rx_queue, s.tx_queue) for s in table.values()})


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


def _groups(ctx: DumpContext, pid: int, family: int) -> list[tuple[str, int, str]]:
    """(group, interface index, device) of every multicast group joined on an interface
    of `pid`'s network namespace (/proc/PID/net/igmp or igmp6, read once per dump and
    namespace): the candidates a socket may have joined."""
    return ctx.tables.groups(pid, family)


def _sockaddr(family: int, address: str) -> bytes:
    """A struct sockaddr_storage holding `address` (port 0)."""
    if family == socket.AF_INET6:
        raw = struct.pack("=HHI16sI", family, 0, 0, socket.inet_pton(family, address), 0)
    else:
        raw = struct.pack("=HH4s", family, 0, socket.inet_pton(family, address))
    return raw.ljust(128, b"\0")


def _group_filter(family: int, ifindex: int, group: str, mode: int, sources: list[str], room: int = 0) -> bytes:
    """struct group_filter (MCAST_MSFILTER) with `sources`, or room for `room` of them."""
    head = struct.pack("=I4x", ifindex) + _sockaddr(family, group)
    return (head + struct.pack("=II", mode, room or len(sources))
            + b"".join(_sockaddr(family, s) for s in sources) + bytes(128 * room))


def _max_sources(ctx: DumpContext, family: int) -> int:
    name = "ipv6/mld_max_msf" if family == socket.AF_INET6 else "ipv4/igmp_max_msf"
    try:
        return max(1, int(ctx.tables.sys(f"net/{name}")))
    except (OSError, ValueError):
        return 10


def _membership(ctx: DumpContext, f: DumpedFd, sock: socket.socket, group: str, ifindex: int,
                dev: str) -> UdpMembership | None:
    """The socket's membership of `group` on interface `ifindex` with its source filter
    (getsockopt MCAST_MSFILTER, which reads without changing anything), or None."""
    family, room = sock.family, _max_sources(ctx, sock.family)
    buf = ctypes.create_string_buffer(_group_filter(family, ifindex, group, 0, [], room))
    size = ctypes.c_uint(len(buf))
    if _libc.getsockopt(sock.fileno(), LEVEL[family], MCAST_MSFILTER, buf, ctypes.byref(size)) != 0:
        err = ctypes.get_errno()
        if err in (errno.EADDRNOTAVAIL, errno.EINVAL, errno.ENODEV):
            return None  # not a member (EINVAL: the family's socket cannot be one)
        raise OSError(err, f"getsockopt(MCAST_MSFILTER) for {group}: {os.strerror(err)}")
    mode, count = struct.unpack_from("=II", buf.raw, 136)
    if count > room:
        raise UnsupportedFdError(f.pid, f.fd, "UDP socket with a large multicast source filter",
                                 f"{f.link}: {count} sources for {group} on {dev}")
    sources = []
    for i in range(count):
        at = 144 + 128 * i
        raw = buf.raw[at + 8:at + 24] if family == socket.AF_INET6 else buf.raw[at + 4:at + 8]
        sources.append(socket.inet_ntop(family, raw))
    return UdpMembership(group, dev, mode == MCAST_EXCLUDE, sources)


def _join(s: socket.socket, rec: UdpSocketRecord, m: UdpMembership, what: str) -> None:
    """Join `m` on the device of its name in this network namespace, with its filter."""
    try:
        ifindex = socket.if_nametoindex(m.interface)
    except OSError:
        raise RestoreError(f"{what}: it was a member of multicast group {m.group} on interface "
                           f"{m.interface}, which this network namespace does not have") from None
    level = LEVEL[rec.family]
    try:
        s.setsockopt(level, MCAST_JOIN_GROUP, struct.pack("=I4x", ifindex) + _sockaddr(rec.family, m.group))
        if not m.exclude or m.sources:
            s.setsockopt(level, MCAST_MSFILTER, _group_filter(
                rec.family, ifindex, m.group, MCAST_EXCLUDE if m.exclude else MCAST_INCLUDE, m.sources))
    except OSError as e:
        raise RestoreError(f"{what}: cannot join multicast group {m.group} on {m.interface} again: "
                           f"{e.strerror}") from None


def _where(family: int, address: str, port: int) -> str:
    return f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}"


@file_kind
class UdpSocket(FileKind):
    name = "udp"
    records = (UdpSocketRecord,)
    before = ("unix",)  # unix.py takes every other socket, to refuse it by name

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
            memberships = [m for group, ifindex, dev in _groups(ctx, f.pid, family)
                           if (m := _membership(ctx, f, sock, group, ifindex, dev)) is not None]
        finally:
            sock.close()
        return [UdpSocketRecord(
            file_id, int(family), name[0], name[1], name[3] if len(name) > 3 else 0,
            peer[0], peer[1], peer[3] if len(peer) > 3 else 0, f.info.flags & ~os.O_CLOEXEC,
            options, rcvbuf, sndbuf, queued, queued_bytes, memberships)]

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
            for m in rec.memberships:
                _join(s, rec, m, self.describe(rec))
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
            import ipaddress  # (here and in validate: not in a dump's start-up)

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
        for m in rec.memberships:
            text += f", member of {m.group} on {m.interface}"
            if not m.exclude or m.sources:
                text += f" ({'only from' if not m.exclude else 'not from'} {', '.join(m.sources) or 'nobody'})"
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
                or len(options) != len(r.options)
                or not all(-(1 << 31) <= v < 1 << 31 for v in options.values())
                or not 0 <= r.rcvbuf < 1 << 31 or not 0 <= r.sndbuf < 1 << 31 or r.queued < -1):
            raise ImageError(f"image at {image.path}: UDP socket #{r.id} has a bad address or option")
        import ipaddress

        try:
            for a in (r.address, *((r.peer_address,) if r.peer_port else ())):
                ip = ipaddress.ip_address(a)
                if (ip.version == 6) != (r.family == socket.AF_INET6):
                    raise ValueError(a)
            for m in r.memberships:
                group = ipaddress.ip_address(m.group)
                if (not group.is_multicast or (group.version == 6) != (r.family == socket.AF_INET6)
                        or not 0 < len(m.interface) < 16 or "\0" in m.interface or "/" in m.interface
                        or len(m.sources) > 1024):
                    raise ValueError(m.group)
                for src in m.sources:
                    if (ipaddress.ip_address(src).version == 6) != (r.family == socket.AF_INET6):
                        raise ValueError(src)
        except ValueError:
            raise ImageError(f"image at {image.path}: UDP socket #{r.id} has a bad address") from None
