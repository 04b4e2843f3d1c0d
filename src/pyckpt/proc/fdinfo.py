"""/proc/PID/fdinfo/FD."""

from __future__ import annotations

from .._dataclass import dataclass, field
from ._read import read_text


@dataclass(frozen=True)
class FdInfo:
    pos: int
    flags: int  # open flags (access mode, status flags, O_CLOEXEC), from octal
    mnt_id: int
    ino: int
    extra: dict[str, str] = field(default_factory=dict)  # kind-specific lines


def parse_fdinfo(text: str) -> FdInfo:
    """Parse the text of /proc/PID/fdinfo/FD.

    `pos:` is decimal, `flags:` octal, `ino:` decimal; kind-specific lines
    (eventfd-count, tfd, lock, ...) are kept in `extra` as text.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key not in fields:
            fields[key.strip()] = value.strip()
    known = {"pos", "flags", "mnt_id", "ino"}
    return FdInfo(
        pos=int(fields["pos"]),
        flags=int(fields["flags"], 8),
        mnt_id=int(fields.get("mnt_id", "0")),
        ino=int(fields.get("ino", "0")),
        extra={k: v for k, v in fields.items() if k not in known},
    )


def read_fdinfo(pid: int, fd: int) -> FdInfo:
    return parse_fdinfo(read_text(f"/proc/{pid}/fdinfo/{fd}"))


def read_fdinfo_text(pid: int, fd: int) -> str:
    """The raw text of /proc/PID/fdinfo/FD, for a kind's own parser of its lines."""
    return read_text(f"/proc/{pid}/fdinfo/{fd}")
