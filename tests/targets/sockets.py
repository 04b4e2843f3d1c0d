"""Unnamed unix sockets, checked from inside.  Usage: sockets.py MODE

pairs:   in one process, socketpairs of every type with data queued in them
         (10 KB one way and 3 bytes the other on a stream pair; datagrams of
         3, 0 and 500 bytes; two seqpackets and then a shutdown), a stream
         whose peer was closed after sending "bye", an unconnected datagram
         socket, a non-blocking end with SO_PASSCRED and a peek offset.
         The check leaves every queue as it found it (it reads and sends the
         data back, or peeks), and sends a fresh message through each pair.
asyncio: an asyncio event loop (its self-pipe and signal wakeup fd are a
         socketpair) ticking every 20 ms; SIGUSR1 reaches it through
         loop.add_signal_handler, so a CHECK line proves the wakeup works.
tree:    a parent and a forked child talking over a socketpair (as
         multiprocessing.Pipe does): the check sends a number and waits for
         the child's answer.
listen:  TCP servers: one on 127.0.0.1 (non-blocking, SO_REUSEADDR), one on
         ::1 (IPV6_V6ONLY, backlog 7); the check connects to each, accepts,
         and sends a line both ways: the ports are the ones they had.
tcp:     TCP connections to itself: over 127.0.0.1 (5000 bytes unread one way,
         7 the other, keepalive tuned) and over ::1 (TCP_NODELAY), plus one
         to a child process; the check reads the queues, puts them back,
         and sends fresh bytes each way through every connection.
refuse-*: holds one thing pyckpt refuses (see the tests) and just ticks.
"""

import array
import asyncio
import os
import signal
import socket
import sys

import selfcheck

SO_PEEK_OFF = 42
MODE = sys.argv[1]


def peek_all(s: socket.socket) -> list[bytes]:
    """Every queued message, left in place (through SO_PEEK_OFF)."""
    s.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
    out = []
    try:
        while True:
            try:
                m = s.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not m and s.type != socket.SOCK_DGRAM:
                out.append(b"<eof>")
                break
            out.append(m)
    finally:
        s.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, -1)
    return out


def pairs() -> None:
    a, b = socket.socketpair()
    big = bytes(range(256)) * 40  # 10240 bytes
    b.send(big)
    a.send(b"abc")
    c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgrams = [b"one", b"", b"three" * 100]
    for m in dgrams:
        d.send(m)
    e, f = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    f.send(b"p1")
    f.send(b"p22")
    f.shutdown(socket.SHUT_WR)
    g, h = socket.socketpair()
    h.send(b"bye")
    h.close()
    u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # unconnected: nothing to peek
    usp = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    g2, h2 = socket.socketpair()  # an orphan whose writer had a big buffer
    h2.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    big2 = os.urandom(300_000)
    h2.sendall(big2)
    h2.close()
    pc, pd = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    pd.send(b"")
    pd.send(b"x")
    pc.recv(1, socket.MSG_PEEK)  # the target itself peeks: the empty head is marked peeked
    n, m2 = socket.socketpair()
    n.setblocking(False)
    n.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    m2.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    m2.send(b"0123456789")
    n.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 4)
    sndbuf = m2.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)

    def check():
        bad = []
        # stream pair: read both queues whole, put them back, then a round trip
        got = b""
        while len(got) < len(big):
            got += a.recv(len(big) - len(got))
        if got != big:
            bad.append(f"stream: {len(got)} bytes, not the 10240 sent")
        b.send(got)
        if b.recv(3) != b"abc":
            bad.append("stream: the 3 bytes the other way are lost")
        a.send(b"abc")
        # datagrams keep their boundaries, the empty one too (read, then sent again)
        d.send(b"fresh")
        got = [c.recv(2000) for _ in range(len(dgrams) + 1)]
        if got != dgrams + [b"fresh"]:
            bad.append(f"datagrams: {got!r}")
        for m in dgrams:
            d.send(m)
        # seqpacket: two messages, then end of file (the writer shut it)
        if peek_all(e) != [b"p1", b"p22", b"<eof>"]:
            bad.append(f"seqpacket: {peek_all(e)!r}")
        try:
            f.send(b"x")
            bad.append("seqpacket: the shut end can still send")
        except BrokenPipeError:
            pass
        # a stream whose peer is gone: its data, then EOF; sending fails
        if peek_all(g) != [b"bye", b"<eof>"]:
            bad.append(f"orphan stream: {peek_all(g)!r}")
        try:
            g.send(b"x", socket.MSG_NOSIGNAL)
            bad.append("orphan stream: sending worked")
        except BrokenPipeError:
            pass
        if u.type != socket.SOCK_DGRAM or u.getsockname() not in ("", b""):
            bad.append("the unconnected socket changed")
        if us.type != socket.SOCK_STREAM or usp.type != socket.SOCK_SEQPACKET:
            bad.append("the unconnected stream and seqpacket sockets changed")
        if b"".join(peek_all(g2)) != big2 + b"<eof>":
            bad.append("the orphan's 300000 bytes are not all there")
        got = [pc.recv(10), pc.recv(10)]
        if got != [b"", b"x"]:
            bad.append(f"the peeked-at empty datagram: {got!r}")
        pd.send(b"")
        pd.send(b"x")
        pc.recv(1, socket.MSG_PEEK)
        # options and flags
        if n.getblocking():
            bad.append("O_NONBLOCK lost")
        if not n.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED):
            bad.append("SO_PASSCRED lost")
        if n.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF) != 4:
            bad.append(f"peek offset {n.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)}")
        if m2.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) != sndbuf:
            bad.append("SO_SNDBUF changed")
        if n.recv(3, socket.MSG_PEEK) != b"456":  # peeks from the offset (and moves it)
            bad.append("peeking from the offset gave the wrong bytes")
        n.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 4)
        return bad

    print("READY", flush=True)
    selfcheck.serve(check)


def run_asyncio() -> None:
    ticks = 0

    async def main():
        loop = asyncio.get_running_loop()
        out = []

        def on_usr1():
            out.append(f"CHECK ok counter={ticks}" if ticks else "CHECK FAIL no tick")

        loop.add_signal_handler(signal.SIGUSR1, on_usr1)
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1
            if ticks == 1:
                print("READY", flush=True)
            while out:
                print(out.pop(0), flush=True)

    asyncio.run(main())


def tree() -> None:
    parent_end, child_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        parent_end.close()
        while True:  # answer each 8-byte number with the next one
            req = child_end.recv(8, socket.MSG_WAITALL)
            if len(req) < 8:
                os._exit(0)
            child_end.send(b"%8d" % (int(req) + 1))
    child_end.close()
    parent_end.settimeout(5)
    count = [0]

    def check():
        count[0] += 1
        n = count[0] * 1000
        parent_end.send(b"%8d" % n)
        try:
            got = parent_end.recv(8, socket.MSG_WAITALL)
        except socket.timeout:
            return [f"no answer to {n} from the child"]
        return [] if got == b"%8d" % (n + 1) else [f"the child answered {got!r} to {n}"]

    print("READY", pid, flush=True)
    selfcheck.serve(check)


def listen() -> None:
    v4 = socket.socket()
    v4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    v4.bind(("127.0.0.1", 0))
    v4.listen()
    v4.setblocking(False)
    v6 = socket.socket(socket.AF_INET6)
    v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    v6.bind(("::1", 0))
    v6.listen(7)
    where = {v4: v4.getsockname()[:2], v6: v6.getsockname()[:2]}

    def check():
        bad = []
        if v4.getblocking() or not v4.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR):
            bad.append("the IPv4 listener lost O_NONBLOCK or SO_REUSEADDR")
        if not v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
            bad.append("the IPv6 listener lost IPV6_V6ONLY")
        for server, addr in where.items():
            if server.getsockname()[:2] != addr:
                bad.append(f"listens on {server.getsockname()}, not {addr}")
            client = socket.create_connection(addr, timeout=5)
            server.settimeout(5)
            conn, peer = server.accept()
            while peer[:2] != client.getsockname()[:2]:  # someone else's, left waiting
                conn.close()
                conn, peer = server.accept()
            server.setblocking(server is not v4)
            client.sendall(b"hello\n")
            conn.sendall(b"world\n")
            if conn.recv(6) != b"hello\n" or client.recv(6) != b"world\n":
                bad.append(f"no exchange through {addr}")
            # The client closes first: TIME_WAIT stays on its side, not on the port the
            # listener needs again at restore (the v6 one has no SO_REUSEADDR).
            client.close()
            conn.recv(1)
            conn.close()
        return bad

    print("READY", where[v4][1], where[v6][1], flush=True)
    selfcheck.serve(check)


def tcp() -> None:
    def pair(family, host):
        server = socket.socket(family)
        server.bind((host, 0))
        server.listen()
        client = socket.create_connection(server.getsockname()[:2])
        conn, _ = server.accept()
        return server, client, conn

    l4, c4, s4 = pair(socket.AF_INET, "127.0.0.1")
    l6, c6, s6 = pair(socket.AF_INET6, "::1")
    # The listener at a higher fd than the connections on its port: restore must still
    # open it first (a rebuilt connection on that port would make its bind fail).
    fd = l4.detach()
    os.dup2(fd, 100)
    os.close(fd)
    l4 = socket.socket(fileno=100)
    dual = socket.socket(socket.AF_INET6)  # dual stack: an IPv4 client, seen as ::ffff:...
    dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    dual.bind(("::", 0))
    dual.listen()
    c46 = socket.create_connection(("127.0.0.1", dual.getsockname()[1]))
    s46, _ = dual.accept()
    mss = c4.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
    c4.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    c4.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
    c6.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    big = bytes(range(250)) * 20  # 5000 bytes
    c4.sendall(big)
    s4.sendall(b"seven!!")
    names = {c4: (c4.getsockname(), c4.getpeername()), c6: (c6.getsockname(), c6.getpeername())}
    parent = os.getpid()
    child = os.fork()
    where = l4.getsockname()[:2]
    if child == 0:
        l4.close()
        to_parent = socket.create_connection(where)
        while os.getppid() == parent:  # answer each 8-byte number with the next one
            req = to_parent.recv(8, socket.MSG_WAITALL)
            if len(req) < 8:
                break
            to_parent.sendall(b"%8d" % (int(req) + 1))
        os._exit(0)
    to_child, _ = l4.accept()
    to_child.settimeout(5)
    count = [0]

    def read_exactly(s, n):
        s.settimeout(5)
        return s.recv(n, socket.MSG_WAITALL)

    def check():
        bad = []
        got = read_exactly(s4, len(big))
        if got != big:
            bad.append(f"5000 unread bytes came back as {len(got)}")
        c4.sendall(got)
        if read_exactly(c4, 7) != b"seven!!":
            bad.append("the 7 bytes the other way are lost")
        s4.sendall(b"seven!!")
        for s, (here, there) in names.items():
            if (s.getsockname(), s.getpeername()) != (here, there):
                bad.append(f"addresses {s.getsockname()} -> {s.getpeername()}, were {here} -> {there}")
        for a, b in ((c6, s6), (s6, c6), (c46, s46), (s46, c46)):
            a.sendall(b"ping")
            if read_exactly(b, 4) != b"ping":
                bad.append(f"no ping through {a.getsockname()}")
        if c4.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) != 77 or \
                not c4.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE):
            bad.append("keepalive settings lost")
        if not c6.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
            bad.append("TCP_NODELAY lost")
        if c4.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) < mss - 64:  # timestamps aside
            bad.append(f"MSS {c4.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)}, was {mss}")
        count[0] += 1
        n = count[0] * 1000
        to_child.sendall(b"%8d" % n)
        answer = read_exactly(to_child, 8)
        if answer != b"%8d" % (n + 1):
            bad.append(f"the child answered {answer!r} to {n}")
        return bad

    selfcheck.listen()
    print("READY", child, flush=True)
    selfcheck.serve(check)


def tcp_self() -> None:
    """A process connected to its own listener, which set SO_REUSEADDR (as ZMQ's do: an
    ipykernel is one).  The accepted end has the higher fd: a SIGKILL then leaves that end
    (not the client's) in TIME_WAIT, bound to the listener's port (seen on Linux 6.18)."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    os.dup2(conn.fileno(), 200)
    conn.close()
    conn = socket.socket(fileno=200)

    def check():
        bad = []
        if not conn.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR):
            bad.append("the accepted end lost SO_REUSEADDR (inherited from its listener)")
        if client.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR):
            bad.append("the client end has SO_REUSEADDR, which it never set")
        for a, b in ((client, conn), (conn, client)):
            a.sendall(b"ping")
            b.settimeout(5)
            if b.recv(4, socket.MSG_WAITALL) != b"ping":
                bad.append(f"no ping through {a.getsockname()}")
        return bad

    selfcheck.listen()
    print("READY", server.getsockname()[1], flush=True)
    selfcheck.serve(check)


def refuse(kind: str) -> None:
    keep = []
    if kind == "udplite":  # UDP itself is saved (kinds/udp.py); UDP-Lite is not
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)  # IPPROTO_UDPLITE
        s.bind(("127.0.0.1", 0))
        keep.append(s)
    elif kind == "outside":  # connected to the test's own listener
        keep.append(socket.create_connection(("127.0.0.1", int(sys.argv[2]))))
    elif kind == "listening":
        path = sys.argv[2]
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.listen()
        keep.append(s)
    elif kind == "rights":
        a, b = socket.socketpair()
        r, w = os.pipe()
        b.sendmsg([b"fd"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))])
        keep += [a, b]
    fd = keep[0].fileno()
    print("READY", fd, flush=True)
    selfcheck.serve(lambda: [])


if MODE == "pairs":
    pairs()
elif MODE == "asyncio":
    run_asyncio()
elif MODE == "tree":
    tree()
elif MODE == "listen":
    listen()
elif MODE == "tcp":
    tcp()
elif MODE == "tcp-self":
    tcp_self()
elif MODE.startswith("refuse-"):
    refuse(MODE[len("refuse-"):])
