"""/proc/locks and the `lock:` lines of /proc/PID/fdinfo/FD.

Both print one line per lock in the kernel's `lock_get_status` format:

    5: POSIX  ADVISORY  WRITE 24026 fe:00:2146448 0 9
    5: -> POSIX  ADVISORY  WRITE 24067 fe:00:2146448 2 6
    3: OFDLCK ADVISORY  WRITE -1 fe:00:2146449 5 14
    2: FLOCK  ADVISORY  READ 24026 fe:00:2146468 0 EOF
    1: LEASE  ACTIVE    READ 24026 fe:00:2146482 0 EOF

id, `->` for a request that waits for the lock above it (not held), kind
(POSIX, OFDLCK, FLOCK, LEASE, DELEG, ACCESS...), a word that is ADVISORY
for locks and the lease state for leases, type, pid (-1 for OFD locks,
which belong to an open file description, not a process; for FLOCK it is
the process that took the lock, which may have died since), the file as
`MAJOR:MINOR:INODE` of its super block (hex:hex:decimal; `<none>:0` when
there is no inode), first byte and last byte (`EOF`: to the end, at any
length).  Flock locks and leases always show `0 EOF`.

/proc/locks lists every granted lock and every waiter of the system; an
fd's fdinfo lists only granted locks that sit on *that* open file
description and are owned by it (OFD locks, flock locks, leases) or by the
process's fd table (POSIX locks) — so it ties a lock to a description,
which /proc/locks cannot.
"""

from __future__ import annotations

from .._dataclass import dataclass
from ._read import read_text

# (compiled when first used, by re's cache, and `re` imported then: not at every
# command's start-up)
_LINE = (
    r"^(?P<id>\d+):\s*(?P<waiter>->\s*)?(?P<kind>\S+)\s+(?P<state>\S+)\s+(?P<type>\S+)\s+"
    r"(?P<pid>-?\d+)\s+(?P<file>\S+)\s+(?P<start>\d+)\s+(?P<end>\d+|EOF)\s*$"
)
_FILE = r"^([0-9a-f]+):([0-9a-f]+):(\d+)$"


@dataclass(frozen=True)
class LockLine:
    id: int
    waiter: bool  # a `->` line: a blocked request, not a held lock
    kind: str  # "POSIX", "OFDLCK", "FLOCK", "LEASE", ...
    state: str  # "ADVISORY" for locks; "ACTIVE", "BREAKING", "BREAKER" for leases
    type: str  # "READ", "WRITE" or "UNLCK"
    pid: int  # -1 for OFD locks
    dev: tuple[int, int] | None  # (major, minor) of the file's super block; None: no inode
    ino: int
    start: int
    end: int | None  # last byte, inclusive; None: to EOF

    def overlaps(self, start: int, end: int | None) -> bool:
        """True if bytes start..end (end None = EOF) meet this lock's range."""
        if end is not None and end < self.start:
            return False
        return self.end is None or self.end >= start


def parse_lock_line(line: str) -> LockLine:
    """One line of /proc/locks, or the text after `lock:` in fdinfo."""
    import re

    m = re.match(_LINE, line.strip())
    if not m:
        raise ValueError(f"unexpected lock line: {line!r}")
    f = re.match(_FILE, m["file"])
    if f:
        dev, ino = (int(f[1], 16), int(f[2], 16)), int(f[3])
    else:  # "<none>:0": a lock without an inode
        dev, ino = None, 0
    return LockLine(
        id=int(m["id"]),
        waiter=m["waiter"] is not None,
        kind=m["kind"],
        state=m["state"],
        type=m["type"],
        pid=int(m["pid"]),
        dev=dev,
        ino=ino,
        start=int(m["start"]),
        end=None if m["end"] == "EOF" else int(m["end"]),
    )


def parse_locks(text: str, strict: bool = True) -> list[LockLine]:
    """Every line of /proc/locks (held locks and `->` waiters); not strict: a line
    of an unexpected shape is skipped instead of raising ValueError."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            out.append(parse_lock_line(line))
        except ValueError:
            if strict:
                raise
    return out


def parse_fdinfo_locks(text: str) -> list[LockLine]:
    """The `lock:` lines of a /proc/PID/fdinfo/FD text (granted locks only)."""
    out = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "lock":
            out.append(parse_lock_line(value))
    return out


def read_locks(strict: bool = True) -> list[LockLine]:
    with open("/proc/locks") as f:
        return parse_locks(f.read(), strict)


def read_fdinfo_locks(pid: int, fd: int) -> list[LockLine]:
    return parse_fdinfo_locks(read_text(f"/proc/{pid}/fdinfo/{fd}"))
