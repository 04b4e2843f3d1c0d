"""Lock helper for tests/test_locks.py: looks at or takes locks from another process.

  lock_probe.py probe DIR        print JSON: who holds which lock on the lock_holder
                                 files (F_GETLK, F_OFD_GETLK, flock LOCK_NB), then exit
  lock_probe.py hold KIND PATH TYPE START LEN
                                 take a lock (KIND posix|ofd|flock|lease, TYPE read|write;
                                 START/LEN ignored for flock), print `HELD pid=N`, and
                                 keep it until killed
"""

import fcntl
import json
import os
import struct
import sys
import time

F_OFD_GETLK, F_OFD_SETLK = 36, 37
FLOCK = struct.Struct("<hh4xqqi4x")
TYPE_NAMES = {fcntl.F_RDLCK: "read", fcntl.F_WRLCK: "write", fcntl.F_UNLCK: "unlocked"}


def getlk(path: str, cmd: int, start: int, length: int) -> list:
    """The first lock that would conflict with a write lock on start..start+length-1."""
    fd = os.open(path, os.O_RDWR)
    try:
        out = fcntl.fcntl(fd, cmd, FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, length, 0))
    finally:
        os.close(fd)
    type_, _, l_start, l_len, pid = FLOCK.unpack(out)
    if type_ == fcntl.F_UNLCK:
        return ["unlocked"]
    return [TYPE_NAMES[type_], pid, l_start, l_len]


def flock_state(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "exclusive"  # even a shared lock is refused
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "shared"
        return "free"
    finally:
        os.close(fd)


def probe(work: str) -> None:
    p = lambda name: os.path.join(work, name)  # noqa: E731
    print(json.dumps({
        "posix_0_9": getlk(p("posix.dat"), fcntl.F_GETLK, 0, 10),
        "posix_10_99": getlk(p("posix.dat"), fcntl.F_GETLK, 10, 90),
        "posix_100_eof": getlk(p("posix.dat"), fcntl.F_GETLK, 100, 0),
        "ofd_10_19": getlk(p("ofd.dat"), F_OFD_GETLK, 10, 10),
        "ofd_0_9": getlk(p("ofd.dat"), F_OFD_GETLK, 0, 10),
        "flock": flock_state(p("flock.dat")),
    }), flush=True)


def hold(kind: str, path: str, type_: str, start: int, length: int) -> None:
    if kind == "lease":  # a read lease needs a read-only description
        fd = os.open(path, os.O_RDONLY)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    elif kind == "flock":
        fd = os.open(path, os.O_RDWR)
        fcntl.flock(fd, (fcntl.LOCK_EX if type_ == "write" else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    else:
        fd = os.open(path, os.O_RDWR)
        cmd = fcntl.F_SETLK if kind == "posix" else F_OFD_SETLK
        t = fcntl.F_WRLCK if type_ == "write" else fcntl.F_RDLCK
        fcntl.fcntl(fd, cmd, FLOCK.pack(t, os.SEEK_SET, start, length, 0))
    print(f"HELD pid={os.getpid()} fd={fd}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        probe(sys.argv[2])
    else:
        hold(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
