"""/proc/PID/maps and the VmFlags of /proc/PID/smaps."""

from __future__ import annotations

from dataclasses import dataclass


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
    """
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        # Five fixed columns, then the optional path (which may hold spaces).
        parts = line.split(None, 5)
        if len(parts) < 5:
            raise ValueError(f"malformed maps line: {line!r}")
        addr, perms, offset, dev, inode = parts[:5]
        path = parts[5].strip() if len(parts) == 6 else ""
        start_s, _, end_s = addr.partition("-")
        entries.append(
            MapEntry(
                start=int(start_s, 16),
                end=int(end_s, 16),
                perms=perms,
                offset=int(offset, 16),
                dev=dev,
                inode=int(inode),
                path=path,
            )
        )
    return entries


def parse_smaps_flags(text: str) -> dict[int, list[str]]:
    """Map each VMA start address in /proc/PID/smaps to its VmFlags list."""
    flags: dict[int, list[str]] = {}
    current = None
    for line in text.splitlines():
        head = line.split(None, 1)[0] if line.strip() else ""
        if "-" in head and not head.endswith(":"):
            current = int(head.split("-")[0], 16)
        elif head == "VmFlags:" and current is not None:
            flags[current] = line.split()[1:]
    return flags


def read_maps(pid: int) -> list[MapEntry]:
    with open(f"/proc/{pid}/maps") as f:
        return parse_maps(f.read())


def read_smaps_flags(pid: int) -> dict[int, list[str]]:
    with open(f"/proc/{pid}/smaps") as f:
        return parse_smaps_flags(f.read())
