"""Target of test_fast_copies' sharing check: one fd of many kinds, then sleeps.

    python many_fds.py WORKDIR

A regular file, a pipe (both ends), a socketpair, an eventfd, a signalfd, a
timerfd, an inotify instance, an epoll set holding the eventfd, a memfd, a
pidfd of itself, a TCP listener, a UDP socket, an abstract unix listener and
/dev/null.  Prints `READY <fd> ...` (the fds), then sleeps; the test compares
the file descriptions of copies with kcmp(KCMP_FILE).
"""

import ctypes
import os
import select
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from ev_common import signalfd, timerfd_create, timerfd_settime  # noqa: E402

work = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
fds = []
f = os.open(os.path.join(work, "data"), os.O_RDWR | os.O_CREAT, 0o644)
os.write(f, b"x" * 100)
fds.append(f)
fds += os.pipe()
a, b = socket.socketpair()
fds += [a.fileno(), b.fileno()]
efd = os.eventfd(2)
fds.append(efd)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
fds.append(signalfd({signal.SIGUSR2}, 0))
tfd = timerfd_create(1, 0)
timerfd_settime(tfd, 1000.0)
fds.append(tfd)
ep = select.epoll()
ep.register(efd, select.EPOLLIN)
fds.append(ep.fileno())
fds.append(os.memfd_create("m"))
fds.append(os.pidfd_open(os.getpid()))
tcp = socket.create_server(("127.0.0.1", 0))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
unix = socket.socket(socket.AF_UNIX)
unix.bind(f"\0many-fds-{os.getpid()}")  # abstract: each network namespace has its own
unix.listen()
fds += [tcp.fileno(), udp.fileno(), unix.fileno(), os.open(os.devnull, os.O_RDONLY)]
fds.append(libc.inotify_init1(0))
libc.inotify_add_watch(fds[-1], work.encode(), 0x100)  # IN_CREATE
print("READY", *fds, flush=True)
while True:
    time.sleep(1)
