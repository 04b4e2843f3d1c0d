"""Target for eventfd, signalfd and timerfd.  Prints READY, then sleeps in a loop;
on SIGUSR1 it checks every file below itself and prints `CHECK ok` or `CHECK FAIL <what>`.

Each file is checked through its own interface (read, poll, timerfd_gettime),
never only through fdinfo.  The check consumes state, so it runs once.
"""

import os
import select
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from ev_common import fdinfo, signalfd, timerfd_create, timerfd_gettime, timerfd_settime
import selfcheck

CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME = 0, 1, 7
TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET = 1, 2
BIG = 0x123456789  # wider than eventfd()'s 32-bit initial value

# eventfds: semaphore (non-blocking) with 3, counter (blocking) with a 33-bit count, empty
sem = os.eventfd(3, os.EFD_SEMAPHORE | os.EFD_NONBLOCK | os.EFD_CLOEXEC)
counter = os.eventfd(0, 0)
os.eventfd_write(counter, BIG)
empty = os.eventfd(0, os.EFD_NONBLOCK)

# signalfd for SIGUSR2 and SIGWINCH, both blocked
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGWINCH})
sfd = signalfd([signal.SIGUSR2, signal.SIGWINCH], os.O_NONBLOCK | os.O_CLOEXEC)
os.kill(os.getpid(), signal.SIGWINCH)  # pending at the dump, to be read from the signalfd

# timerfds: 2 s left then every 0.5 s; one expired once, unread; one disarmed;
# one absolute wall-clock deadline an hour away, cancelled if the clock is set
periodic = timerfd_create(CLOCK_MONOTONIC, os.O_CLOEXEC)
timerfd_settime(periodic, 2.0, 0.5)
expired = timerfd_create(CLOCK_MONOTONIC, os.O_NONBLOCK)
timerfd_settime(expired, 0.001)
disarmed = timerfd_create(CLOCK_BOOTTIME, os.O_NONBLOCK)
wall = timerfd_create(CLOCK_REALTIME, os.O_NONBLOCK)
deadline = int(time.time()) + 3600
timerfd_settime(wall, deadline, flags=TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET)
time.sleep(0.02)
assert "ticks: 1" in fdinfo(expired)

selfcheck.listen()  # before READY: a check may come at once
print(f"READY sem={sem} counter={counter} empty={empty} sfd={sfd} periodic={periodic}", flush=True)



def readable(fd: int, timeout: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def check() -> list[str]:
    bad = []
    # eventfd
    if os.get_blocking(sem) or os.get_inheritable(sem):
        bad.append("semaphore eventfd flags")
    got = []
    for _ in range(4):
        try:
            got.append(os.eventfd_read(sem))
        except BlockingIOError:
            got.append(None)
    if got != [1, 1, 1, None]:
        bad.append(f"semaphore eventfd reads {got}")
    if not os.get_blocking(counter) or not os.get_inheritable(counter):
        bad.append("counter eventfd flags")
    if not readable(counter) or os.eventfd_read(counter) != BIG or readable(counter):
        bad.append("counter eventfd count")
    if readable(empty):
        bad.append("empty eventfd is readable")
    os.eventfd_write(empty, 7)
    if os.eventfd_read(empty) != 7:
        bad.append("empty eventfd does not count")
    # signalfd
    if "sigmask:\t" + format((1 << 11) | (1 << 27), "016x") not in fdinfo(sfd):
        bad.append("signalfd mask in fdinfo")
    try:
        info = os.read(sfd, 128)
        if struct.unpack_from("<I", info)[0] != signal.SIGWINCH:
            bad.append(f"signalfd read signal {struct.unpack_from('<I', info)[0]}, not SIGWINCH")
    except BlockingIOError:
        bad.append("the pending SIGWINCH is not readable from the signalfd")
    if readable(sfd):
        bad.append("signalfd readable before any other signal")
    os.kill(os.getpid(), signal.SIGUSR2)
    try:
        info = os.read(sfd, 128)
        if struct.unpack_from("<I", info)[0] != signal.SIGUSR2:
            bad.append(f"signalfd read signal {struct.unpack_from('<I', info)[0]}")
    except BlockingIOError:
        bad.append("SIGUSR2 did not reach the signalfd")
    if not os.get_inheritable(sfd) is False or os.get_blocking(sfd):
        bad.append("signalfd flags")
    # timerfd: the periodic one had ~2 s left at dump; time spent in the image
    # does not count, so it still has most of that (the test waits > 2 s before
    # restoring).  Timing is checked loosely.
    left, interval = timerfd_gettime(periodic)
    if abs(interval - 0.5) > 1e-6:
        bad.append(f"periodic interval {interval}")
    if not 0.2 < left <= 2.0:
        bad.append(f"periodic timer {left:.3f} s left")
    t0 = time.monotonic()
    if not readable(periodic, left + 1.0):
        bad.append("periodic timer did not fire")
    else:
        late = time.monotonic() - t0 - left
        if not -0.05 < late < 0.5:
            bad.append(f"periodic timer fired {late:+.3f} s off")
        n = struct.unpack("<Q", os.read(periodic, 8))[0]
        if n != 1:
            bad.append(f"periodic ticks {n}")
        readable(periodic, 2.0)
        since = time.monotonic() - (t0 + left)  # the next tick is due 0.5 s after the first
        if not 0.45 < since < 1.0:
            bad.append(f"periodic timer next tick {since:.3f} s after the first")
    try:
        n = struct.unpack("<Q", os.read(expired, 8))[0]
        if n != 1:
            bad.append(f"expired timer ticks {n}")
    except BlockingIOError:
        bad.append("expired timer lost its unread tick")
    if timerfd_gettime(expired) != (0.0, 0.0):
        bad.append("expired timer re-armed")
    if timerfd_gettime(disarmed) != (0.0, 0.0) or readable(disarmed):
        bad.append("disarmed timer")
    left, _ = timerfd_gettime(wall)
    if abs(time.time() + left - deadline) > 0.1:
        bad.append(f"wall-clock deadline moved by {time.time() + left - deadline:+.3f} s")
    if "settime flags: 03" not in fdinfo(wall):
        bad.append("wall-clock timer settime flags")
    return bad


selfcheck.serve(check)
