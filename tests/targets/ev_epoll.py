"""Target for epoll sets.  argv: [pipe] to also watch a pipe's read end;
[foreign=N] to add inherited fd N to the main set and close it (the file then
lives only in the process that passed it: the dump must refuse).

Sets up epoll sets, records their items as /proc/self/fdinfo shows them,
prints READY, then sleeps in a loop; on SIGUSR1 it compares the items with
fdinfo again and drives every item (write to the watched file, see
epoll_wait report the item's data, or not for a disarmed one-shot item),
then prints `CHECK ok` or `CHECK FAIL <what>`.  The check consumes state,
so it runs once.

The main set holds:
  eventfd   EPOLLIN|EPOLLET       data 0x1111
  eventfd   EPOLLIN|EPOLLONESHOT  data 0x2222000000002222 (armed)
  eventfd   EPOLLIN|EPOLLONESHOT  data 0x4444 (fired before READY: disarmed)
  eventfd   EPOLLIN|EPOLLEXCLUSIVE data 0x5555
  signalfd  EPOLLIN|EPOLLONESHOT  data 0xbbbb (fired before READY: disarmed, and not
            readable at restore: it comes back armed for EPOLLERR|EPOLLHUP, which the
            kernel adds to every item it adds or modifies — a documented limit)
  eventfd   EPOLLIN               data 0x8888, added as fd N, then dup'ed and N closed;
  eventfd   EPOLLOUT              data 0x9999, a new file that took number N and was added too
  eventfd   EPOLLIN               data 0xaaaa, added as fd M, dup'ed, M closed and left free
  pipe      EPOLLIN|EPOLLET       data 0x3333 (read end, with `pipe`)
A second set (outer) watches a third (inner) that watches a ready eventfd.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(__file__))
from ev_common import (
    EPOLLERR,
    EPOLLET,
    EPOLLEXCLUSIVE,
    EPOLLHUP,
    EPOLLIN,
    EPOLLONESHOT,
    EPOLLOUT,
    epoll_add,
    epoll_create,
    epoll_items,
    epoll_wait,
    signalfd,
)
import selfcheck

with_pipe = "pipe" in sys.argv[1:]
ep = epoll_create()
et = os.eventfd(0, os.EFD_NONBLOCK)
epoll_add(ep, et, EPOLLIN | EPOLLET, 0x1111)
oneshot = os.eventfd(0, os.EFD_NONBLOCK)
epoll_add(ep, oneshot, EPOLLIN | EPOLLONESHOT, 0x2222000000002222)
fired = os.eventfd(1, os.EFD_NONBLOCK)
epoll_add(ep, fired, EPOLLIN | EPOLLONESHOT, 0x4444)
assert epoll_wait(ep) == [(0x4444, EPOLLIN)]  # fires once, then it is disarmed
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
sfd = signalfd([signal.SIGUSR2], os.O_NONBLOCK)
epoll_add(ep, sfd, EPOLLIN | EPOLLONESHOT, 0xBBBB)
os.kill(os.getpid(), signal.SIGUSR2)
assert epoll_wait(ep) == [(0xBBBB, EPOLLIN)]
os.read(sfd, 128)
excl = os.eventfd(0, os.EFD_NONBLOCK)
epoll_add(ep, excl, EPOLLIN | EPOLLEXCLUSIVE, 0x5555)
if with_pipe:
    pipe_r, pipe_w = os.pipe()
    epoll_add(ep, pipe_r, EPOLLIN | EPOLLET, 0x3333)

# An item added under a number that now holds another file.
moved = os.eventfd(0, os.EFD_NONBLOCK)
epoll_add(ep, moved, EPOLLIN, 0x8888)
number_n = moved
moved = os.dup(moved)
os.close(number_n)
taker = os.eventfd(0, 0)  # not close-on-exec, blocking
assert taker == number_n
epoll_add(ep, taker, EPOLLOUT, 0x9999)

# Nested sets: outer watches inner, which watches a ready eventfd.
inner = epoll_create()
ready = os.eventfd(1, os.EFD_NONBLOCK)
epoll_add(inner, ready, EPOLLIN, 0x6666)
outer = epoll_create()
os.set_blocking(outer, False)
epoll_add(outer, inner, EPOLLIN, 0x7777)

foreign = [int(a.split("=")[1]) for a in sys.argv[1:] if a.startswith("foreign=")]
for fd in foreign:
    epoll_add(ep, fd, EPOLLIN, 0xF0F0)
    os.close(fd)

# An item added under a number that was closed and stays free.
gone = os.eventfd(0, os.EFD_NONBLOCK)
epoll_add(ep, gone, EPOLLIN, 0xAAAA)
number_m = gone
gone = os.dup(gone)
os.close(number_m)

expected = {ep: epoll_items(ep), inner: epoll_items(inner), outer: epoll_items(outer)}
assert (sfd, EPOLLONESHOT, 0xBBBB) in expected[ep]
# Disarmed and not ready at restore: the kernel adds EPOLLERR|EPOLLHUP (see above);
# either mask is right, what counts is that EPOLLIN stays off (checked below).
expected_after = {**expected, ep: sorted((t, e | (EPOLLERR | EPOLLHUP if t == sfd else 0), d)
                                         for t, e, d in expected[ep])}
assert sum(1 for i in expected[ep] if i[0] == number_n) == 2
selfcheck.listen()  # before READY: a check may come at once
print(f"READY ep={ep} n={number_n} m={number_m} items={len(expected[ep])}", flush=True)



def fd_open(n: int) -> bool:
    try:
        os.fstat(n)
        return True
    except OSError:
        return False


def check() -> list[str]:
    bad = []
    for fd, items in expected.items():
        now = epoll_items(fd)
        if now != items and now != expected_after[fd]:
            bad.append(f"items of epoll fd {fd}: {[(t, hex(e), hex(d)) for t, e, d in now]} "
                       f"!= {[(t, hex(e), hex(d)) for t, e, d in items]}")
    if os.get_inheritable(ep) or not os.get_blocking(ep) or os.get_blocking(outer):
        bad.append("epoll fd flags")
    # Fd N is the taker again (with its flags); M is free again.
    if os.fstat(number_n).st_ino != os.fstat(taker).st_ino or not os.get_inheritable(taker):
        bad.append(f"fd {number_n} is not the taker eventfd any more")
    if fd_open(number_m):
        bad.append(f"fd {number_m} is open")
    # Only the taker (EPOLLOUT, always writable) is ready now.
    got = epoll_wait(ep)
    if got != [(0x9999, EPOLLOUT)]:
        bad.append(f"ready at first: {got}")
    want = [(et, 0x1111, EPOLLIN), (oneshot, 0x2222000000002222, EPOLLIN), (excl, 0x5555, EPOLLIN),
            (moved, 0x8888, EPOLLIN), (gone, 0xAAAA, EPOLLIN)]
    for fd, data, events in want:
        os.eventfd_write(fd, 1)
        got = [g for g in epoll_wait(ep) if g[0] != 0x9999]
        if got != [(data, events)]:
            bad.append(f"write to fd {fd}: epoll_wait gave {[(hex(d), e) for d, e in got]}, "
                       f"not {hex(data)}")
        os.eventfd_read(fd)
    # The armed one-shot item fired above; a second write must not report it.
    os.eventfd_write(oneshot, 1)
    if [g for g in epoll_wait(ep) if g[0] != 0x9999]:
        bad.append("one-shot item reported twice")
    # The one-shot item that had fired before the dump stays disarmed.
    os.eventfd_write(fired, 1)
    if [g for g in epoll_wait(ep) if g[0] != 0x9999]:
        bad.append("disarmed one-shot item reported")
    os.kill(os.getpid(), signal.SIGUSR2)
    if [g for g in epoll_wait(ep) if g[0] != 0x9999]:
        bad.append("disarmed one-shot signalfd item reported")
    os.read(sfd, 128)
    if with_pipe:
        os.write(pipe_w, b"x")
        got = [g for g in epoll_wait(ep) if g[0] != 0x9999]
        if got != [(0x3333, EPOLLIN)]:
            bad.append(f"pipe: epoll_wait gave {got}")
        os.read(pipe_r, 1)
    # Nested: the outer set sees the inner one ready, the inner its eventfd.
    if epoll_wait(outer) != [(0x7777, EPOLLIN)]:
        bad.append(f"outer set: {epoll_wait(outer)}")
    if epoll_wait(inner) != [(0x6666, EPOLLIN)]:
        bad.append(f"inner set: {epoll_wait(inner)}")
    os.eventfd_read(ready)
    if epoll_wait(outer) or epoll_wait(inner):
        bad.append("nested sets still ready after the eventfd was read")
    return bad


selfcheck.serve(check)
