"""A TCP server for test_tcp_outside and test_redis-like checks: epoll, one
listener on 127.0.0.1, each client's lines echoed in upper case.

    tcp_echo.py echo   serves at once; prints ACCEPTED/DROPPED/EOF per client
    tcp_echo.py MODE --no-reuseaddr   the listener without SO_REUSEADDR
    tcp_echo.py MODE --ipv6           on ::1 instead of 127.0.0.1
    tcp_echo.py MODE --dual           on :: for IPv4 and IPv6 (IPV6_V6ONLY off)

    tcp_echo.py lazy   accepts, but reads nothing until SIGUSR1; then reads each
                       client to its end and writes to it, printing what it saw

A dropped client is printed with the epoll mask that woke the server and the
errno its recv() raised, so a test sees what the process saw."""

import errno
import select
import signal
import socket
import sys
import time

MODE = sys.argv[1]
HOST, FAMILY = ("::1", socket.AF_INET6) if "--ipv6" in sys.argv else ("127.0.0.1", socket.AF_INET)
if "--dual" in sys.argv:  # one listener on :: for both families: an IPv4 client is ::ffff:a.b.c.d
    listener = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
elif "--no-reuseaddr" in sys.argv:  # as a plain bind() + listen() leaves it
    listener = socket.socket(FAMILY)
    listener.bind((HOST, 0))
    listener.listen()
else:
    listener = socket.create_server((HOST, 0), family=FAMILY)  # SO_REUSEADDR, as most servers
listener.setblocking(False)
ep = select.epoll()
ep.register(listener, select.EPOLLIN)
clients: dict[int, socket.socket] = {}
woken = []
signal.signal(signal.SIGUSR1, lambda *a: woken.append(1))
print("READY", listener.getsockname()[1], flush=True)


def drain(c: socket.socket) -> None:
    """Read to the end (lazy mode), then try writing."""
    got, end = b"", "?"
    for _ in range(100):
        try:
            chunk = c.recv(65536)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        except OSError as e:
            end = errno.errorcode[e.errno]
            break
        if not chunk:
            end = "EOF"
            break
        got += chunk
    wrote = "ok"
    try:
        for _ in range(5):
            c.send(b"late\n")
            time.sleep(0.05)
    except OSError as e:
        wrote = errno.errorcode[e.errno]
    print(f"READ {c.fileno()} {got!r} then {end}; write {wrote}", flush=True)


while True:
    try:
        events = ep.poll(0.1)
    except InterruptedError:
        events = []
    if woken:
        woken.clear()
        for c in list(clients.values()):
            drain(c)
        print("DRAINED", flush=True)
    for fd, mask in events:
        if fd == listener.fileno():
            c, _ = listener.accept()
            c.setblocking(False)
            clients[c.fileno()] = c
            if MODE == "echo":
                ep.register(c, select.EPOLLIN | select.EPOLLRDHUP)
            print("ACCEPTED", c.fileno(), flush=True)
            continue
        c = clients[fd]
        try:
            data = c.recv(65536)
        except OSError as e:
            print(f"DROPPED {fd} mask {mask:#x} {errno.errorcode[e.errno]}", flush=True)
            ep.unregister(c)
            del clients[fd]
            c.close()
            continue
        if not data:
            print(f"EOF {fd}", flush=True)
            ep.unregister(c)
            del clients[fd]
            c.close()
            continue
        c.sendall(data.upper())
