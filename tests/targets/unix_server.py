"""A unix-socket server with clients, for tests/test_unix_named.py.

usage: unix_server.py MODE ADDRESS

server: a listener at ADDRESS (a path, or "@name" for an abstract name) in the
  root process, which serves every connection (read "n", answer "n+1") with a
  selector loop; three child processes connected to it keep talking (each
  sends its next number every 20 ms and checks the answer; a wrong answer is
  reported to the server as "BAD ...").  Clients from outside (the test) are
  served alike; a connection closed by its peer is reported as a
  "CLOSED <client number, -1 outside>" line.  A second listener at ADDRESS-q
  has one client of the root waiting in its queue until SIGUSR2, when it is
  accepted and one exchange made ("LATE 42 <accepted socket's name>").  The
  check: every child client spoke since the last check, no BAD report, the
  listener and every accepted socket have the listener's name.
dgram: a datagram socket bound to ADDRESS with two datagrams queued (sent by
  the test before READY); the check reads them once (boundaries kept), then
  reads what the test sends after.
"""

import os
import selectors
import signal
import socket
import sys
import time

import selfcheck

MODE, ADDRESS = sys.argv[1], sys.argv[2]
NAME = b"\0" + ADDRESS[1:].encode() if ADDRESS.startswith("@") else ADDRESS.encode()


def client(s: socket.socket, number: int) -> None:
    """A child: talk to the server forever, report a wrong answer."""
    s.sendall(b"HELLO %d\n" % number)
    n = 0
    buf = b""
    while True:
        n += 1
        s.sendall(b"%d\n" % n)
        while b"\n" not in buf:
            chunk = s.recv(100)
            if not chunk:
                os._exit(3)
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        if line != b"%d" % (n + 1):
            s.sendall(b"BAD client %d sent %d got %r\n" % (number, n, line))
        time.sleep(0.02)


def server() -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(NAME)
    listener.listen(7)
    # a second listener whose one client (ours) waits in its queue until SIGUSR2
    queue_name = NAME + b"-q"
    second = socket.socket(socket.AF_UNIX)
    second.bind(queue_name)
    second.listen(3)
    late = socket.socket(socket.AF_UNIX)
    late.connect(queue_name)
    children = []
    for i in range(3):
        s = socket.socket(socket.AF_UNIX)
        s.connect(NAME)  # connected in order, before the fork: accepted in order below
        pid = os.fork()
        if pid == 0:
            listener.close()
            client(s, i)
        s.close()
        children.append(pid)
    sel = selectors.DefaultSelector()
    conns = {}  # socket -> [buffer, client number (-1: from outside), last number seen]
    for i in range(3):
        conn, _ = listener.accept()
        conns[conn] = [b"", i, 0]
        sel.register(conn, selectors.EVENT_READ)
    bad = []
    seen = {}
    release = []
    signal.signal(signal.SIGUSR2, lambda *a: release.append(1))
    selfcheck.listen()
    print("READY", listener.fileno(), " ".join(map(str, children)), flush=True)

    def serve_one(conn):
        state = conns[conn]
        try:
            chunk = conn.recv(4096)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            print("CLOSED", state[1], flush=True)
            sel.unregister(conn)
            conn.close()
            del conns[conn]
            return
        state[0] += chunk
        while b"\n" in state[0]:
            line, state[0] = state[0].split(b"\n", 1)
            if line.startswith(b"BAD"):
                bad.append(line.decode())
            elif not line.startswith(b"HELLO"):
                state[2] = int(line)
                conn.sendall(b"%d\n" % (int(line) + 1))

    sel.register(listener, selectors.EVENT_READ)
    counter = 0
    while True:
        counter += 1
        for key, _ in sel.select(timeout=0.02):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                conns[conn] = [b"", -1, 0]
                sel.register(conn, selectors.EVENT_READ)
            else:
                serve_one(key.fileobj)
        if release:
            release.clear()
            conn, _ = second.accept()
            late.sendall(b"41\n")
            line = conn.recv(10)
            conn.sendall(b"%d\n" % (int(line) + 1))
            print("LATE", late.recv(10).decode().strip(), conn.getsockname(), flush=True)
        if selfcheck._asked:
            selfcheck._asked = False
            problems = list(bad)
            if listener.getsockname() not in (NAME, NAME.decode()):
                problems.append(f"listener name {listener.getsockname()!r}")
            for conn, (_, number, last) in list(conns.items()):
                if number >= 0:
                    if last <= seen.get(number, 0):
                        problems.append(f"client {number} silent (at {last})")
                    seen[number] = last
                if conn.getsockname() != listener.getsockname():
                    problems.append(f"accepted socket named {conn.getsockname()!r}")
            if sorted(n for _, n, _ in conns.values() if n >= 0) != [0, 1, 2]:
                problems.append(f"clients {sorted(n for _, n, _ in conns.values())}")
            print(f"CHECK FAIL {'; '.join(problems)}" if problems else f"CHECK ok counter={counter}",
                  flush=True)


def dgram() -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(NAME)
    print("READY", s.fileno(), flush=True)
    got = []

    def check():
        s.setblocking(False)
        try:
            while True:
                data, sender = s.recvfrom(100)
                got.append(data.decode())
        except BlockingIOError:
            pass
        print("GOT", " ".join(got), flush=True)
        name = s.getsockname()
        return [] if name in (NAME, NAME.decode()) else [f"bound to {name!r}"]

    selfcheck.serve(check)


signal.signal(signal.SIGTERM, signal.SIG_DFL)
if MODE == "server":
    server()
elif MODE == "dgram":
    dgram()
