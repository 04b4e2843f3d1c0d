"""Target holding file locks of every kind.  argv[1]: a scratch directory; argv[2]
`more`: also lock a deleted-but-open file and a memfd.

It takes a POSIX write lock on bytes 0-9 and a POSIX read lock on bytes
100-EOF of posix.dat, an OFD write lock on bytes 10-19 of ofd.dat (through
an fd it then dups: both fds share the description and its lock) and an
exclusive flock lock on flock.dat, prints READY, and ticks.  On SIGUSR1 it
reads its own /proc/self/fdinfo (`lock:` lines) and /proc/locks and checks
that it holds exactly these locks, printing `CHECK ok counter=N` or
`CHECK FAIL <what>`.  With `more` it also holds a POSIX read lock on bytes
0-99 of gone.dat, which it unlinked, and an OFD write lock on a whole memfd.  It never opens or closes posix.dat again: closing any
fd of a file drops every POSIX lock the process holds on it.
"""

import fcntl
import os
import re
import signal
import struct
import sys
import time

F_OFD_SETLK = 37
work = sys.argv[1]
me = os.getpid()


def flock_struct(type_: int, start: int, length: int) -> bytes:
    # short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
    return struct.pack("<hh4xqqi4x", type_, os.SEEK_SET, start, length, 0)


def make(name: str) -> str:
    path = os.path.join(work, name)
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)
    return path


posix_fd = os.open(make("posix.dat"), os.O_RDWR)
fcntl.fcntl(posix_fd, fcntl.F_SETLK, flock_struct(fcntl.F_WRLCK, 0, 10))
fcntl.fcntl(posix_fd, fcntl.F_SETLK, flock_struct(fcntl.F_RDLCK, 100, 0))  # 100-EOF
ofd_fd = os.open(make("ofd.dat"), os.O_RDWR)
fcntl.fcntl(ofd_fd, F_OFD_SETLK, flock_struct(fcntl.F_WRLCK, 10, 10))
ofd_dup = os.dup(ofd_fd)
flock_fd = os.open(make("flock.dat"), os.O_RDONLY)
fcntl.flock(flock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

EXPECT = {  # fd -> locks its description carries: (kind, type, pid, start, end)
    posix_fd: {("POSIX", "WRITE", me, 0, "9"), ("POSIX", "READ", me, 100, "EOF")},
    ofd_fd: {("OFDLCK", "WRITE", -1, 10, "19")},
    ofd_dup: {("OFDLCK", "WRITE", -1, 10, "19")},
    flock_fd: {("FLOCK", "WRITE", me, 0, "EOF")},
}
FILE_FDS = [posix_fd, ofd_fd, flock_fd]  # one fd per file, for /proc/locks
if sys.argv[2:] == ["more"]:
    gone_fd = os.open(make("gone.dat"), os.O_RDWR)
    os.unlink(os.path.join(work, "gone.dat"))
    fcntl.fcntl(gone_fd, fcntl.F_SETLK, flock_struct(fcntl.F_RDLCK, 0, 100))
    mem_fd = os.memfd_create("locked")
    os.write(mem_fd, b"m" * 4096)
    fcntl.fcntl(mem_fd, F_OFD_SETLK, flock_struct(fcntl.F_WRLCK, 0, 0))
    EXPECT[gone_fd] = {("POSIX", "READ", me, 0, "99")}
    EXPECT[mem_fd] = {("OFDLCK", "WRITE", -1, 0, "EOF")}
    FILE_FDS += [gone_fd, mem_fd]
LINE = re.compile(r"^\d+:\s*(->)?\s*(\S+)\s+\S+\s+(\S+)\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s+(\d+)\s+(\S+)$")


def parse(line: str):
    m = LINE.match(line.strip())
    if not m:
        raise ValueError(f"bad lock line {line!r}")
    waiter, kind, type_, pid, major, minor, ino, start, end = m.groups()
    return bool(waiter), (int(major, 16), int(minor, 16), int(ino)), (kind, type_, int(pid), int(start), end)


def check() -> list[str]:
    bad = []
    for fd, want in EXPECT.items():
        with open(f"/proc/self/fdinfo/{fd}") as f:
            got = {parse(line.split(":", 1)[1])[2] for line in f if line.startswith("lock:")}
        if got != want:
            bad.append(f"fdinfo of fd {fd}: {sorted(got)} != {sorted(want)}")
    files = {}
    for fd in FILE_FDS:
        st = os.fstat(fd)
        files[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = EXPECT[fd]
    seen = {key: set() for key in files}
    with open("/proc/locks") as f:
        for line in f:
            try:
                waiter, key, lock = parse(line)
            except ValueError:  # another process's lock on a file without an inode
                continue
            if key in files and not waiter:
                seen[key].add(lock)
    for key, want in files.items():
        if seen[key] != want:
            bad.append(f"/proc/locks for {key}: {sorted(seen[key])} != {sorted(want)}")
    if os.getpid() != me:
        bad.append(f"pid {os.getpid()} != {me}")
    return bad


flag = False


def on_usr1(sig, frame):
    global flag
    flag = True


signal.signal(signal.SIGUSR1, on_usr1)
print(f"READY pid={me} posix={posix_fd} ofd={ofd_fd},{ofd_dup} flock={flock_fd}", flush=True)
counter = 0
while True:
    time.sleep(0.02)
    counter += 1
    if flag:
        flag = False
        bad = check()
        print(f"CHECK ok counter={counter}" if not bad else "CHECK FAIL " + "; ".join(bad), flush=True)
