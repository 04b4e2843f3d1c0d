"""/proc/PID/mountinfo: one line per mount the process sees.

    36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue

mount id, parent id, MAJOR:MINOR of the file system's super block, the
root of the mount within that file system, the mount point (both with
space, tab, newline and backslash escaped as octal `\\ooo`), options,
optional fields up to `-`, file system type, source, super options.
"""

from __future__ import annotations

from .._dataclass import dataclass


@dataclass(frozen=True)
class Mount:
    mnt_id: int
    parent_id: int
    major: int
    minor: int
    root: str  # the directory of the file system mounted here ("/": all of it)
    mount_point: str  # where, in the process's root
    fstype: str


def unescape(s: str) -> str:
    """A mountinfo path with its octal escapes (`\\040` for a space...) decoded."""
    if "\\" not in s:
        return s
    import re  # (only for a path with an escape: not in a command's start-up)

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def parse_mountinfo(text: str) -> list[Mount]:
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        major, _, minor = fields[2].partition(":")
        try:
            dash = fields.index("-", 6)
            fstype = fields[dash + 1] if dash + 1 < len(fields) else ""
        except ValueError:
            fstype = ""
        out.append(Mount(int(fields[0]), int(fields[1]), int(major), int(minor),
                         unescape(fields[3]), unescape(fields[4]), fstype))
    return out


def read_mountinfo(pid: int) -> list[Mount]:
    with open(f"/proc/{pid}/mountinfo") as f:
        return parse_mountinfo(f.read())
