"""Target blocked waiting for a lock.  argv[1]: a scratch directory, argv[2]: posix|ofd|flock.

It holds a POSIX write lock on bytes 0-9 of held.dat, prints `WAITING pid=N`,
then blocks taking a lock on wait.dat that another process holds: a POSIX
write lock on bytes 0-99 with F_SETLKW (or F_OFD_SETLKW), or an exclusive flock without
LOCK_NB.  Once granted it prints `GOT`, checks its own /proc/self/fdinfo
(both locks held, by its own PID) and prints `GOT ok` or `GOT FAIL <what>`,
then sleeps.
"""

import fcntl
import os
import struct
import sys
import time

work, kind = sys.argv[1], sys.argv[2]
me = os.getpid()
FLOCK = struct.Struct("<hh4xqqi4x")

held = os.open(os.path.join(work, "held.dat"), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.fcntl(held, fcntl.F_SETLK, FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 10, 0))
wait = os.open(os.path.join(work, "wait.dat"), os.O_RDWR | os.O_CREAT, 0o644)
print(f"WAITING pid={me}", flush=True)
if kind == "posix":
    fcntl.fcntl(wait, fcntl.F_SETLKW, FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 100, 0))
    want_wait = f"POSIX  ADVISORY  WRITE {me} "
    want_range = " 0 99"
elif kind == "ofd":
    F_OFD_SETLKW = 38
    fcntl.fcntl(wait, F_OFD_SETLKW, FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 100, 0))
    want_wait = "OFDLCK ADVISORY  WRITE -1 "
    want_range = " 0 99"
else:
    fcntl.flock(wait, fcntl.LOCK_EX)
    want_wait = f"FLOCK  ADVISORY  WRITE {me} "
    want_range = " 0 EOF"
print("GOT", flush=True)


def locks_of(fd: int) -> list[str]:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return [line.split(":", 2)[2].strip() for line in f if line.startswith("lock:")]


bad = []
h = locks_of(held)
if len(h) != 1 or not (f"POSIX  ADVISORY  WRITE {me} " in h[0] and h[0].endswith(" 0 9")):
    bad.append(f"held.dat locks {h}")
w = locks_of(wait)
if len(w) != 1 or not (want_wait in w[0] and w[0].endswith(want_range)):
    bad.append(f"wait.dat locks {w}")
if os.getpid() != me:
    bad.append(f"pid {os.getpid()} != {me}")
print("GOT ok" if not bad else "GOT FAIL " + "; ".join(bad), flush=True)
while True:
    time.sleep(3600)
