"""UDP sockets (issue 11, item 3): a UDP echo server bound to a port and a client
connected to a peer, IPv4 and IPv6, with their options; queued datagrams are
dropped (and counted); a copy restored in its own network namespace; a port
taken at restore is a PortInUseError naming it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

import pyckpt
from conftest import Target, check, reap_dumped
from pyckpt.cli import _dump_summary

# argv: server port, the client's peer port, "4" or "6", "reuse" or "noreuse" (whether
# the server sets SO_REUSEADDR and the client SO_REUSEPORT).  The server echoes every
# datagram; on SIGUSR1 the target checks its sockets' options and flags, and its
# connected client sends one datagram to its peer.
TARGET = r"""
import fcntl, os, select, signal, socket, sys
port, peer_port, v, reuse = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "reuse"
fam, host = (socket.AF_INET6, "::1") if v == "6" else (socket.AF_INET, "127.0.0.1")
srv = socket.socket(fam, socket.SOCK_DGRAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse))
srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
if v == "6":
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    srv.setsockopt(socket.IPPROTO_IPV6, 67, 0x20)  # IPV6_TCLASS
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 33)
else:
    srv.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x20)
    srv.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 33)
srv.bind((host, port))
srv.setblocking(False)
cli = socket.socket(fam, socket.SOCK_DGRAM)
cli.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
cli.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
cli.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse))
cli.connect((host, peer_port))
def options():
    out = {}
    for name, s in (("srv", srv), ("cli", cli)):
        for opt in ("SO_REUSEADDR", "SO_REUSEPORT", "SO_BROADCAST", "SO_RCVBUF", "SO_SNDBUF"):
            out[name, opt] = s.getsockopt(socket.SOL_SOCKET, getattr(socket, opt))
        if v == "6":
            for opt in (socket.IPV6_V6ONLY, 67, socket.IPV6_UNICAST_HOPS):
                out[name, opt] = s.getsockopt(socket.IPPROTO_IPV6, opt)
        else:
            for opt in (socket.IP_TOS, socket.IP_TTL):
                out[name, opt] = s.getsockopt(socket.IPPROTO_IP, opt)
        out[name, "nonblock"] = bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)
        out[name, "local"] = s.getsockname()[:2]
    out["cli", "peer"] = cli.getpeername()[:2]
    return out
before = options()
asked = False
def on_usr1(*a):
    global asked
    asked = True
signal.signal(signal.SIGUSR1, on_usr1)
print("READY", cli.getsockname()[1], flush=True)
n = 0
while True:
    n += 1
    try:
        ready, _, _ = select.select([srv], [], [], 0.02)
    except InterruptedError:
        ready = []
    if ready:
        try:
            data, addr = srv.recvfrom(2048)
            srv.sendto(b"echo:" + data, addr)
        except BlockingIOError:
            pass
    if asked:
        asked = False
        now = options()
        bad = [f"{k}: {now[k]} was {before[k]}" for k in before if now[k] != before[k]]
        cli.send(b"hello from the client %d" % n)
        print(f"CHECK FAIL {'; '.join(bad)}" if bad else f"CHECK ok counter={n}", flush=True)
"""


def _host(v: str) -> tuple[int, str]:
    return (socket.AF_INET6, "::1") if v == "6" else (socket.AF_INET, "127.0.0.1")


def _free_udp_port(v: str) -> int:
    fam, host = _host(v)
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _echo(v: str, port: int, payload: bytes) -> bytes:
    fam, host = _host(v)
    with socket.socket(fam, socket.SOCK_DGRAM) as c:
        c.settimeout(5)
        c.sendto(payload, (host, port))
        data, addr = c.recvfrom(2048)
        assert addr[1] == port
        return data


def _start(spawn, python_exe, v: str, reuse: str = "reuse"):
    """The target, and the peer its client is connected to (a socket of this test)."""
    fam, host = _host(v)
    peer = socket.socket(fam, socket.SOCK_DGRAM)
    peer.bind((host, 0))
    peer.settimeout(5)
    port = _free_udp_port(v)
    t = spawn([python_exe, "-c", TARGET, str(port), str(peer.getsockname()[1]), v, reuse], name=f"udp{v}")
    client_port = int(t.wait_for(r"^READY (\d+)").group(1))
    assert _echo(v, port, b"before") == b"echo:before"
    return t, peer, port, client_port


@pytest.mark.parametrize("v", ["4", "6"], ids=["ipv4", "ipv6"])
def test_echo_server_and_connected_client_come_back(spawn, python_exe, tmp_path, v):
    t, peer, port, client_port = _start(spawn, python_exe, v)
    fam, host = _host(v)
    with peer:
        check(t)
        data, addr = peer.recvfrom(2048)
        assert data.startswith(b"hello from the client") and addr[1] == client_port
        # two datagrams wait in the client's queue at the dump: they are dropped
        peer.sendto(b"lost 1", (host, client_port))
        peer.sendto(b"lost 22", (host, client_port))
        img = tmp_path / "img"
        image = pyckpt.dump(t.pid, img, kill=True)
        reap_dumped(t)
        # the dump's summary line (printed when stderr is a terminal) says so
        line = _dump_summary(SimpleNamespace(dir=str(img), kill=True), image)
        assert line.endswith("; 2 UDP datagrams queued at the dump will be dropped, as a network may "
                             "drop them"), line
        fds = {f["what"] for f in pyckpt.open_image(img).summary()["fds"] if f["kind"] == "udp"}
        where = f"[{host}]" if v == "6" else host
        assert fds == {f"UDP {where}:{port}",
                       f"UDP {where}:{client_port}, connected to {where}:{peer.getsockname()[1]}, "
                       "2 datagrams (13 bytes) queued at the dump, dropped at restore"}, fds
        r = subprocess.run([sys.executable, "-m", "pyckpt", "show", str(img)], capture_output=True,
                           text=True, timeout=60)
        assert "dropped at restore" in r.stdout, r.stdout

        p = pyckpt.restore(img)
        spawn.track(p.pid)
        t.popen = None
        assert _echo(v, port, b"after") == b"echo:after"  # an outside client
        check(t)  # the options as they were; the client sends to its peer
        data, addr = peer.recvfrom(2048)
        assert data.startswith(b"hello from the client") and addr[1] == client_port


def test_copy_in_new_netns_and_port_in_use(spawn, python_exe, tmp_path):
    # Without SO_REUSEADDR/SO_REUSEPORT (with them, a copy here would share the ports,
    # as a second instance of the program would)
    t, peer, port, client_port = _start(spawn, python_exe, "4", "noreuse")
    with peer:
        img = tmp_path / "img"
        pyckpt.dump(t.pid, img)  # the original runs on, holding its ports
        # beside the original, in this network namespace: the port is taken
        with pytest.raises(pyckpt.PortInUseError, match=rf"UDP port {port} \(127\.0\.0\.1:{port}\) is in "
                                                         r"use.*--new-netns") as e:
            spawn.track(pyckpt.restore(img, new_pidns=True, fds={1: str(tmp_path / "x.log")}).ppid())
        assert (e.value.port, e.value.protocol, e.value.address) == (port, "UDP", "127.0.0.1")
        problems = pyckpt.open_image(img).check_restore(new_pidns=True, fds={1: str(tmp_path / "x.log")})
        assert [type(p.error) for p in problems] == [pyckpt.PortInUseError, pyckpt.PortInUseError]
        assert all(pyckpt.Fix("new_netns") in p.fixes for p in problems)

        log = tmp_path / "copy.log"
        p = pyckpt.restore(img, new_pidns=True, new_netns=True, fds={1: str(log)})
        spawn.track(p.ppid())
        copy = Target(p.pid, log)
        with pyckpt.network_namespace(p.pid):
            outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peer2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peer2.bind(peer.getsockname())  # the copy's client's peer, in the copy's network
        with outside, peer2:
            outside.settimeout(5)
            peer2.settimeout(5)
            outside.sendto(b"to the copy", ("127.0.0.1", port))
            assert outside.recvfrom(2048)[0] == b"echo:to the copy"
            check(copy)
            data, addr = peer2.recvfrom(2048)
            assert data.startswith(b"hello from the client") and addr == ("127.0.0.1", client_port)
        # the original still serves here, and its client still sends to its peer here
        assert _echo("4", port, b"original") == b"echo:original"
        check(t)
        assert peer.recvfrom(2048)[0].startswith(b"hello from the client")
        os.kill(t.pid, 9)
        t.reap()


def test_untrusted_image_may_not_bind_a_privileged_udp_port(spawn, python_exe, tmp_path):
    """An image an ordinary user owns restores only with that user's rights: a UDP port
    below net.ipv4.ip_unprivileged_port_start is named as what it asks for beyond them."""
    from test_trust import NOBODY, give

    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        start = int(f.read())
    if start <= 1:
        pytest.skip("every port is unprivileged here")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for low in range(start - 1, 0, -1):  # a free privileged port
        try:
            s.bind(("127.0.0.1", low))
            break
        except OSError:
            continue
    s.close()
    code = ("import socket, selfcheck\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.bind(('127.0.0.1', {low}))\n"
            "print('READY', flush=True)\n"
            "selfcheck.serve(lambda: [])\n")
    t = spawn([python_exe, "-c", code])
    t.wait_for("^READY")
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    give(img, NOBODY)
    problems = pyckpt.open_image(img).check_restore()
    untrusted = [p.error for p in problems if isinstance(p.error, pyckpt.UntrustedImageError)]
    assert untrusted and f"UDP port {low}, below net.ipv4.ip_unprivileged_port_start" in str(untrusted[0]), problems


PENDING = r"""
import signal, socket, sys, selfcheck
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", int(sys.argv[1])))
signal.signal(signal.SIGUSR2, lambda *a: s.send(b"to a closed port"))
def check():
    saw = []
    for _ in range(2):
        try:
            saw.append(s.recv(100, socket.MSG_DONTWAIT).decode())
        except OSError as e:
            saw.append(type(e).__name__)
    print("SAW", *saw, flush=True)
    return []
selfcheck.listen()
print("READY", s.getsockname()[1], flush=True)
selfcheck.serve(check)
"""


def test_dump_leaves_a_pending_socket_error_to_the_process(spawn, python_exe, tmp_path):
    """A connected socket with an ICMP port unreachable pending and a datagram queued:
    the dump takes neither (poll, no read), and says the queue was not counted."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    t = spawn([python_exe, "-c", PENDING, str(peer.getsockname()[1])])
    port = int(t.wait_for(r"^READY (\d+)").group(1))
    peer.sendto(b"queued", ("127.0.0.1", port))
    peer.close()
    os.kill(t.pid, signal.SIGUSR2)  # it sends to the closed port: ECONNREFUSED pending
    deadline = time.monotonic() + 5
    while not any(f[1].endswith(f":{port:04X}") and int(f[4].partition(":")[2], 16)  # rx_queue
                  for f in (line.split() for line in open(f"/proc/{t.pid}/net/udp").readlines()[1:])):
        assert time.monotonic() < deadline, "the datagram is not queued"
        time.sleep(0.02)
    time.sleep(0.2)  # the ICMP error arrives (on loopback: at once)
    img = tmp_path / "img"
    image = pyckpt.dump(t.pid, img)
    [what] = [f["what"] for f in image.summary()["fds"] if f["kind"] == "udp"]
    assert what.endswith("datagrams queued at the dump (not counted), dropped at restore"), what
    line = _dump_summary(SimpleNamespace(dir=str(img), kill=False), image)
    assert "; at least 1 UDP datagram queued at the dump will be dropped" in line, line
    after = len(t.lines())
    os.kill(t.pid, signal.SIGUSR1)
    assert t.wait_for(r"^SAW .*$", after=after).group(0) == "SAW ConnectionRefusedError queued"


GROUP, SSM_GROUP = "239.255.77.77", "232.1.2.3"
MULTICAST = r"""
import socket, struct, sys, select
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
lo = socket.inet_aton("127.0.0.1")
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(sys.argv[2]) + lo)
# a source-specific membership: only datagrams from 127.0.0.1 (struct ip_mreq_source)
s.setsockopt(socket.IPPROTO_IP, 39, socket.inet_aton(sys.argv[3]) + lo + lo)  # IP_ADD_SOURCE_MEMBERSHIP
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, lo)
print("READY", flush=True)
while True:
    if select.select([s], [], [], 0.05)[0]:
        data, addr = s.recvfrom(2048)
        s.sendto(b"echo:" + data, addr)
"""


def _multicast(port: int, group: str, payload: bytes, netns_of: int | None = None) -> bytes:
    """Send `payload` to `group` on lo; the answer (unicast) from the member."""
    if netns_of is None:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        with pyckpt.network_namespace(netns_of):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with c:
        c.settimeout(5)
        c.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        c.sendto(payload, (group, port))
        return c.recvfrom(2048)[0]


def test_multicast_memberships_come_back(spawn, python_exe, tmp_path):
    port = _free_udp_port("4")
    t = spawn([python_exe, "-c", MULTICAST, str(port), GROUP, SSM_GROUP])
    t.wait_for("^READY")
    assert _multicast(port, GROUP, b"a") == b"echo:a"
    assert _multicast(port, SSM_GROUP, b"b") == b"echo:b"
    img = tmp_path / "img"
    image = pyckpt.dump(t.pid, img)
    [what] = [f["what"] for f in image.summary()["fds"] if f["kind"] == "udp"]
    assert sorted(what.split(", ")) == sorted([f"UDP 0.0.0.0:{port}", f"member of {GROUP} on lo",
                                               f"member of {SSM_GROUP} on lo (only from 127.0.0.1)"]), what
    # a copy in its own network (its lo) is a member there
    copy = pyckpt.restore(img, new_pidns=True, new_netns=True)
    spawn.track(copy.ppid())
    assert _multicast(port, GROUP, b"c", netns_of=copy.pid) == b"echo:c"
    assert _multicast(port, SSM_GROUP, b"d", netns_of=copy.pid) == b"echo:d"
    # in place
    os.kill(t.pid, signal.SIGKILL)
    t.reap()
    p = pyckpt.restore(img)
    spawn.track(p.pid)
    assert _multicast(port, GROUP, b"e") == b"echo:e"
    assert _multicast(port, SSM_GROUP, b"f") == b"echo:f"
    with open(f"/proc/{p.pid}/net/igmp") as f:
        assert "4D4DFFEF" in f.read()  # 239.255.77.77 joined on lo again
