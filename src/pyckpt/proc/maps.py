"""/proc/PID/maps and the VmFlags of /proc/PID/smaps."""

from __future__ import annotations

import os

from .._dataclass import dataclass


@dataclass(frozen=True)
class MapEntry:
    start: int
    end: int
    perms: str  # e.g. "r-xp": read, write, exec, p(rivate)/s(hared)
    offset: int
    dev: str  # "fd:01" (major:minor, hex)
    inode: int
    path: str  # "" for anonymous, "[heap]", "/usr/lib/...", "/dev/zero (deleted)"

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"


def parse_maps(text: str) -> list[MapEntry]:
    """Parse /proc/PID/maps.

    The path is everything after the inode column with the padding removed;
    it may itself contain spaces (" (deleted)" suffix, odd file names).
    A line met before (the same text: addresses, offset, device, inode, path)
    gives the same (frozen) entry again (_SEEN): a dump reads a process's maps
    before its freeze and again inside it, and parsing a Jupyter kernel's ~700
    lines costs ~2 ms, looking them up ~0.1 ms.
    """
    entries = []
    seen = _SEEN
    if len(seen) > _SEEN_MAX:
        seen.clear()
    for line in text.splitlines():
        entry = seen.get(line)
        if entry is None:
            if not line.strip():
                continue
            entry = seen[line] = _parse_line(line)
        entries.append(entry)
    return entries


_SEEN: dict[str, MapEntry] = {}
_SEEN_MAX = 1 << 16  # lines kept (a few MiB at most); then forgotten at once


def _parse_line(line: str) -> MapEntry:
    # Five fixed columns, then the optional path (which may hold spaces).
    parts = line.split(None, 5)
    if len(parts) < 5:
        raise ValueError(f"malformed maps line: {line!r}")
    addr, perms, offset, dev, inode = parts[:5]
    path = parts[5].strip() if len(parts) == 6 else ""
    start_s, _, end_s = addr.partition("-")
    return MapEntry(
        start=int(start_s, 16),
        end=int(end_s, 16),
        perms=perms,
        offset=int(offset, 16),
        dev=dev,
        inode=int(inode),
        path=path,
    )


def parse_smaps_flags(text: str) -> dict[int, list[str]]:
    """Map each VMA start address in /proc/PID/smaps to its VmFlags list.

    Each VMA is its "START-END perms ..." line (lower-case hex), lines of its sizes
    ("Rss:   4 kB"...), then its "VmFlags: rd wr ..." line; a path in the first line
    holds no newline (the kernel escapes it).  Split at the VmFlags lines: without
    `re` (3-9 ms of a dump command's start-up here)."""
    out: dict[int, list[str]] = {}
    parts = text.split("\nVmFlags:")
    head = parts[0]
    for part in parts[1:]:
        flags, _, rest = part.partition("\n")
        start, dash, _ = head.partition("-")
        if dash and start and not start.strip("0123456789abcdef"):  # (lower-case hex only)
            out[int(start, 16)] = flags.split()
        head = rest
    return out


def read_maps(pid: int) -> list[MapEntry]:
    with open(f"/proc/{pid}/maps") as f:
        return parse_maps(f.read())


_OWN_VDSO: dict[int, list[MapEntry]] = {}
VDSO_NAMES = ("[vvar]", "[vvar_vclock]", "[vdso]")


def own_vdso_blocks() -> list[MapEntry]:
    """pyckpt's own vDSO block ([vvar], [vvar_vclock], [vdso]), from its maps read
    once per process: the kernel places it at exec and never moves it (a fork's
    child has it where its parent had it; the cache is kept per PID all the same).
    Only its lines are parsed (those that end in "]" first): all of a Python
    process's ~170 took ~2 ms of a restore command."""
    pid = os.getpid()
    if pid not in _OWN_VDSO:
        with open(f"/proc/{pid}/maps") as f:
            lines = [line for line in f.read().splitlines() if line.endswith("]")]
        _OWN_VDSO[pid] = [m for m in parse_maps("\n".join(lines)) if m.path in VDSO_NAMES]
    return _OWN_VDSO[pid]


def read_smaps_flags(pid: int) -> dict[int, list[str]]:
    """parse_smaps_flags of the process's smaps, read and searched in C
    (ck_smaps_flags), which lets the GIL go: the thread of SmapsFlags then needs it
    only for the lines it returns.  Parsed in Python, beside a dump's main thread,
    reading a Python kernel's smaps took 6.0-7.4 ms against 4.4-4.7 alone (each
    thread waiting for the other's GIL)."""
    from .._native._ck import ffi, lib

    path = f"/proc/{pid}/smaps"
    if not hasattr(lib, "ck_smaps_flags"):  # (a helper built before it)
        with open(path) as f:
            return parse_smaps_flags(f.read())
    # Room for ~25,000 VMAs' lines (~36 bytes each) at once: a second call reads the
    # whole file again (a process of 2,000 VMAs: 10 -> 23.5 ms with 64 KiB first).
    # Not cleared: only the pages the lines are written to are ever touched.
    cap = 1 << 20
    while True:
        out = _uncleared("char[]", cap)
        n = lib.ck_smaps_flags(os.fsencode(path), out, cap)
        if n < 0:
            raise OSError(-n, os.strerror(-n), path)
        if n <= cap:
            break
        cap = n
    flags: dict[int, list[str]] = {}
    for line in ffi.unpack(out, n).decode("ascii", "replace").splitlines():
        start, _, words = line.partition(" ")
        flags[int(start, 16)] = words.split()
    return flags


def _uncleared(ctype: str, n: int):
    """ffi.new(ctype, n), its memory not cleared."""
    from .._native._ck import ffi

    return ffi.new_allocator(should_clear_after_alloc=False)(ctype, n)


class SmapsFlags:
    """The VmFlags of each VMA of `pid` (read_smaps_flags), read in a thread from the
    moment this is made: smaps is slow to produce (~3 ms of the kernel's for a Jupyter
    kernel's 375 VMAs, which it walks page by page), and its read lets pyckpt's other
    work run meanwhile.  `expect(maps)` gives the layout the flags must be of;
    `get(start, default)`, as a dict's, waits for the read and reads again (in the
    caller, the process frozen) if the VMAs it found are not those, or it failed.
    `cpus`: where the thread may run (a thread inherits pyckpt's pin to one CPU).
    The thread is `_thread`'s: a small dump's only one, and `threading`'s import was
    ~1 ms of a `pyckpt dump` command."""

    def __init__(self, pid: int, cpus: set[int] | None = None):
        import _thread

        self.pid = pid
        self._flags: dict[int, list[str]] | None = None
        self._starts: set[int] | None = None
        self._checked = False
        self._cpus = cpus
        self._done = _thread.allocate_lock()  # held until the read is over
        self._done.acquire()
        try:
            _thread.start_new_thread(self._read, ())
        except BaseException:
            self._done.release()  # (no thread: get() reads)
            raise

    def _read(self) -> None:
        try:
            if self._cpus:
                os.sched_setaffinity(0, self._cpus)
            self._flags = read_smaps_flags(self.pid)
        except BaseException:  # (read again by get(), which says what fails)
            self._flags = None
        finally:
            self._done.release()

    def expect(self, maps: list[MapEntry]) -> None:
        self._starts = {m.start for m in maps}

    def wait(self) -> None:
        """Until the thread's read is done."""
        if self._done is not None:
            self._done.acquire()
            self._done = None

    def get(self, start: int, default=None):
        if not self._checked:
            self.wait()
            if self._flags is None or (self._starts is not None and set(self._flags) != self._starts):
                self._flags = read_smaps_flags(self.pid)  # the layout changed since it was read
            self._checked = True
        return self._flags.get(start, default)

