"""Listening TCP sockets (IPv4 and IPv6): a server waiting for connections.

A listening socket holds no data and no peer, only where it listens and how:
its address and port, its backlog, and the options that decide who may bind
beside it (SO_REUSEADDR, SO_REUSEPORT, IPV6_V6ONLY).  That is what is saved;
restore makes a new socket, binds it to the same address and port and
listens with the same backlog, so clients connect where they did before.

Which sockets listen comes from TCP_INFO's state on the target's socket
itself (`tcp_state`: reading /proc/PID/net/tcp{,6} walks the namespace's
whole TCP table, slow on a busy host); the backlog from sock_diag
(inet_diag).  Connections waiting to be accepted are not
saved: the restored listener's queue is empty.  Their clients see what they
see when a server restarts: with dump --kill the kernel resets them as the
killed listener closes (a client inside the image comes back reset too, see
tcpconn.py); without it they stay the original's.

At restore SO_REUSEADDR is on while binding and set back after: connections
of the dumped process that linger in TIME_WAIT on that port do not stop the
bind when the listener had SO_REUSEADDR (as for the program itself, they do
when it had not).  The port must be free: when the original still runs, or
another copy holds it, restore fails with a RestoreError naming the address.

`RestoreOptions.port_map` ({old: new}, `pyckpt restore --port-map OLD:NEW`)
makes a listener of port `old` listen on `new` instead, on the same address:
a copy beside the original, or one restored where its port is taken, without
a network namespace.  Every socket of the image bound to `old` moves with it
(`mapped`): the connections within the image (both ends, tcpconn.py), a bound
socket that never connected.  A connection to a peer outside the image keeps
its addresses: its peer knows only the old port.  A key of the map that no
listener of the image has is refused (RestoreError, naming the ports it
listens on); UDP sockets are not mapped.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from .. import _sock as socket  # (socket's calls without its import: _sock.py)
from .._dataclass import dataclass

from ..errors import RestoreError
from ..image import record
from ..problems import Fix, needs
from ..proc.net import parse_listening as parse_proc_net_tcp  # noqa: F401 (its parser lives in proc/)
from .context import DumpContext, RestoreContext, restore_hook
from .files import DumpedFd, FileKind, file_kind, set_status_flags
from .unix import NETLINK_SOCK_DIAG, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, SOCK_DIAG_BY_FAMILY, take

TCP_LISTEN = 10
SETTABLE_FLAGS = os.O_NONBLOCK | getattr(os, "O_ASYNC", 0o20000)


@record(101, scope="image")
@dataclass
class TcpListenerRecord:
    id: int
    family: int  # AF_INET or AF_INET6
    address: str
    port: int
    scope: int  # IPv6 scope id (link-local addresses); 0 otherwise
    backlog: int
    flags: int  # file status flags (O_NONBLOCK...), without O_CLOEXEC
    reuseaddr: bool
    reuseport: bool
    v6only: bool


_UNREAD = object()


def tcp_state(f) -> int | None:
    """The TCP state (tcpi_state) of fd `f` (a DumpedFd) when it is a TCP socket, else
    None: a few syscalls on a pidfd_getfd copy, where /proc/PID/net/tcp{,6} costs a walk
    of the network namespace's whole TCP table for every socket asked about.  Read once
    for `f` (three kinds' claims ask, and the one that claims it asks again): every
    kind sees the same state."""
    state = f.__dict__.get("tcp_state", _UNREAD)
    if state is _UNREAD:
        state = f.__dict__["tcp_state"] = _read_tcp_state(f)
    return state


def _read_tcp_state(f) -> int | None:
    return socket_tcp_state(f.pid, f.fd) if stat.S_ISSOCK(f.st.st_mode) else None


def socket_tcp_state(pid: int, fd: int) -> int | None:
    """The TCP state of socket `fd` of `pid` (a pidfd_getfd copy asked), None when it is
    no TCP socket or cannot be asked."""
    try:
        sock = take(pid, fd)
    except OSError:
        return None
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.proto != socket.IPPROTO_TCP:
            return None
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    except OSError:
        return None
    finally:
        sock.close()


def listener_queues(family: int) -> dict[int, tuple[int, int]]:
    """Inode -> (connections waiting to be accepted, backlog) of every listening TCP
    socket of `family` in pyckpt's network namespace (inet_diag)."""
    sockid = bytes(48)
    req = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, 1 << TCP_LISTEN) + sockid
    out: dict[int, tuple[int, int]] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as nl:
        nl.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY,
                            NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + req)
        while True:
            buf = nl.recv(1 << 16)
            pos = 0
            while pos + 16 <= len(buf):
                length, kind, _, _, _ = struct.unpack_from("=IHHII", buf, pos)
                if length < 16:
                    return out
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", buf, pos + 16)
                    raise OSError(-err, f"inet_diag: {os.strerror(-err)}")
                # inet_diag_msg: 4 bytes, sockid (48), expires, rqueue, wqueue, uid, inode
                rqueue, wqueue, _, inode = struct.unpack_from("=IIII", buf, pos + 16 + 4 + 48 + 4)
                out[inode] = (rqueue, wqueue)
                pos += (length + 3) & ~3


@file_kind
class TcpListener(FileKind):
    name = "tcp-listen"
    records = (TcpListenerRecord,)
    before = ("unix",)  # unix.py takes every other socket, to refuse it by name

    def claims(self, f: DumpedFd) -> bool:
        return tcp_state(f) == TCP_LISTEN

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        sock = take(f.pid, f.fd)
        try:
            family = sock.family
            name = sock.getsockname()
            address, port, scope = name[0], name[1], name[3] if len(name) > 3 else 0
            opt = lambda level, name: sock.getsockopt(level, name) != 0  # noqa: E731
            reuseaddr = opt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
            reuseport = opt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            v6only = family == socket.AF_INET6 and opt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        finally:
            sock.close()
        # connections waiting to be accepted are not saved (see the module's docstring)
        queues = ctx.tables.memo(("tcp listener queues", family), lambda: listener_queues(family))  # (one ask a dump)
        _, backlog = queues.get(f.st.st_ino, (0, socket.SOMAXCONN))
        return [TcpListenerRecord(file_id, int(family), address, port, scope, backlog,
                                  f.info.flags & ~os.O_CLOEXEC, reuseaddr, reuseport, v6only)]

    def open(self, rctx: RestoreContext, rec: TcpListenerRecord) -> int:
        from .tcpconn import make_held_reusable

        make_held_reusable(rctx)  # its killed predecessor's connections, held on this port
        check_port_map(rctx)  # a port map naming another port: that problem first
        s = socket.socket(rec.family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            if rec.family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(rec.v6only))
            if rec.reuseport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT leftovers
            port = mapped(rctx, rec.port)
            try:
                s.bind((rec.address, port, 0, rec.scope) if rec.family == socket.AF_INET6
                       else (rec.address, port))
            except OSError as e:
                hint = (" (another process listens there, such as the original or another copy "
                        "of it; or connections of the dumped process linger in TIME_WAIT and the "
                        "listener did not set SO_REUSEADDR: then wait a minute); or listen on "
                        f"another port: --port-map {rec.port}:NEW (API: port_map={{{rec.port}: new}})"
                        if e.errno == errno.EADDRINUSE else "")
                moved = f" (moved from port {rec.port} by the port map)" if port != rec.port else ""
                error = RestoreError(f"cannot listen on {self.describe(rec, port)}{moved} again: "
                                     f"{e.strerror}{hint}")
                in_use = e.errno == errno.EADDRINUSE and on_loopback(rec.address)
                raise (needs(error, Fix("new_netns")) if in_use else error) from None
            if not rctx.checking:  # a check binds (which finds a port in use) but takes no connection
                s.listen(rec.backlog)  # (listen checks the port again: still with SO_REUSEADDR)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(rec.reuseaddr))
            fd = s.detach()
        finally:
            s.close()
        return set_status_flags(fd, rec.flags, SETTABLE_FLAGS)

    def describe(self, rec: TcpListenerRecord, port: int | None = None) -> str:
        host = f"[{rec.address}]" if rec.family == socket.AF_INET6 else rec.address
        return f"TCP {host}:{rec.port if port is None else port}, listening (backlog {rec.backlog})"


def mapped(rctx: RestoreContext, port: int) -> int:
    """The port a socket of the image bound to `port` gets (RestoreOptions.port_map)."""
    return rctx.options.port_map.get(port, port) if port else port


@restore_hook("prepare", "tcp: port map")
def check_port_map(rctx: RestoreContext) -> None:
    """Every port of the port map is one a listener of the image has (once per tree)."""
    port_map = rctx.options.port_map
    if not port_map or rctx.shared.get("tcp port map checked"):
        return
    rctx.shared["tcp port map checked"] = True
    ports = sorted({r.port for r in getattr(rctx.image, "reader", rctx.image).of_type(TcpListenerRecord)})
    unknown = sorted(set(port_map) - set(ports))
    if unknown:
        has = (f"it listens on {', '.join(map(str, ports))}" if ports else "it has no listening TCP socket")
        rctx.note(RestoreError(
            f"--port-map {unknown[0]}:{port_map[unknown[0]]}: no TCP socket of the image at "
            f"{getattr(rctx.image, 'path', '')} listens on port {unknown[0]} ({has}): map only "
            "those ports"))


def on_loopback(address: str) -> bool:
    """Whether `address` exists in a new network namespace (loopback only): there a
    port in use here is free (new_netns)."""
    import ipaddress  # (a refusal's question alone: not in a command's start-up)

    ip = ipaddress.ip_address(address)
    return ip.is_unspecified or ip.is_loopback or (
        isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None
        and (ip.ipv4_mapped.is_loopback or ip.ipv4_mapped.is_unspecified))


def open_all_listeners(rctx: RestoreContext) -> None:
    """Open every listener of the image now (once; the tree shares them): a rebuilt
    connection bound to a listener's port would make the listener's bind fail."""
    for rec in getattr(rctx.image, "reader", rctx.image).of_type(TcpListenerRecord):
        rctx.pass_fd(("file", rec.id), lambda rec=rec: TcpListener().open(rctx, rec))


def validate(image) -> None:
    from ..errors import ImageError

    for r in getattr(image, "reader", image).of_type(TcpListenerRecord):
        if r.family not in (socket.AF_INET, socket.AF_INET6) or not 0 < r.port < 65536 or r.backlog < 0:
            raise ImageError(f"image at {image.path}: a listening TCP socket with a bad address")
