"""A parent holding pidfds, for tests/test_pidfd.py.

The parent forks a child A (which waits) and holds: a pidfd of A (blocking), a
non-blocking pidfd of A, a pidfd of itself, and an epoll set watching the
pidfd of A.  Then it forks a child B, which inherits the pidfd of A (one open
file in two processes: shared across fork).  Prints
`READY a=<A> b=<B>`; each process answers SIGUSR1 with a CHECK line (the
child B writes its verdict into a pipe the parent reads).  B also has an epoll set of its own watching a pidfd of
A that only B holds.

The parent checks: each pidfd refers to the right process (/proc/self/fdinfo
'Pid:'), flags as before, the epoll set has the pidfd of A as its only item
and A is alive (pidfd not readable); B checks its inherited pidfd still names A.
On "kill" (SIGUSR2) the parent sends SIGTERM to A through its pidfd
(pidfd_send_signal), sees the epoll set report it, and waits for A with
waitid(P_PIDFD), printing `REAPED a status=<n>`.
"""

import os
import select
import signal
import sys
import time

import selfcheck


def pid_of(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return int(next(line for line in f if line.startswith("Pid:")).split()[1])


a = os.fork()
if a == 0:
    while True:
        time.sleep(1)
pidfd_a = os.pidfd_open(a)
pidfd_a_nb = os.pidfd_open(a, os.PIDFD_NONBLOCK if hasattr(os, "PIDFD_NONBLOCK") else os.O_NONBLOCK)
pidfd_self = os.pidfd_open(os.getpid())
ep = select.epoll()
ep.register(pidfd_a, select.EPOLLIN)
r, w = os.pipe()
b = os.fork()
if b == 0:  # B: holds the inherited pidfd of A, and an epoll set of its own watching
    os.close(r)  # its own pidfd of A, which the root (which fills every set) does not hold
    own_a = os.pidfd_open(a)
    ep_b = select.epoll()
    ep_b.register(own_a, select.EPOLLIN)

    def check_b():
        bad = []
        if pid_of(pidfd_a) != a or pid_of(own_a) != a:
            bad.append(f"B: pidfds of A name {pid_of(pidfd_a)}, {pid_of(own_a)}, not {a}")
        with open(f"/proc/self/fdinfo/{ep_b.fileno()}") as f:
            items = [line.split()[1] for line in f if line.startswith("tfd:")]
        if items != [str(own_a)]:
            bad.append(f"B: epoll items {items}, not [{own_a}]")
        if ep_b.poll(0):
            bad.append(f"B: its epoll set reports {ep_b.poll(0)} while A lives")
        return bad

    selfcheck.serve(check_b, file=os.fdopen(w, "w"))
os.close(w)
from_b = os.fdopen(r)
killing = False


def on_usr2(sig, frame):
    global killing
    killing = True


signal.signal(signal.SIGUSR2, on_usr2)


def check():
    bad = []
    if pid_of(pidfd_a) != a or pid_of(pidfd_a_nb) != a:
        bad.append(f"pidfds of A name {pid_of(pidfd_a)}, {pid_of(pidfd_a_nb)}, not {a}")
    if pid_of(pidfd_self) != os.getpid():
        bad.append(f"pidfd of self names {pid_of(pidfd_self)}, not {os.getpid()}")
    if os.get_blocking(pidfd_a) is not True or os.get_blocking(pidfd_a_nb) is not False:
        bad.append("O_NONBLOCK of the pidfds changed")
    if ep.poll(0):
        bad.append(f"the epoll set reports {ep.poll(0)} while A lives")
    with open(f"/proc/self/fdinfo/{ep.fileno()}") as f:
        items = [line.split()[1] for line in f if line.startswith("tfd:")]
    if items != [str(pidfd_a)]:
        bad.append(f"epoll items {items}, not [{pidfd_a}]")
    os.kill(b, signal.SIGUSR1)
    verdict = from_b.readline().strip()
    if not verdict.startswith("CHECK ok"):
        bad.append(f"child B: {verdict}")
    return bad


print(f"READY a={a} b={b}", flush=True)
selfcheck.listen()
while not killing:
    if selfcheck._asked:
        selfcheck._asked = False
        bad = check()
        print(f"CHECK FAIL {'; '.join(bad)}" if bad else "CHECK ok counter=1", flush=True)
    time.sleep(0.02)
signal.pidfd_send_signal(pidfd_a, signal.SIGTERM)
events = ep.poll(10)
info = os.waitid(os.P_PIDFD, pidfd_a, os.WEXITED)
print(f"REAPED a events={events} status={info.si_status} code={info.si_code}", flush=True)
while True:
    time.sleep(1)
