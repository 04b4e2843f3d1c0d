"""What identifies a file on disk, shared by every kind that reopens files by path."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import FileChangedError


@dataclass
class FileIdentity:
    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int


def identify(path: str, stat_path: str | None = None) -> FileIdentity:
    """Identity of `path`, taken from `stat_path` (e.g. /proc/PID/fd/N) if given."""
    st = os.stat(stat_path or path)
    return FileIdentity(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def check_same(ident: FileIdentity, fd: int, *, content: bool) -> None:
    """Refuse when the file opened as `fd` is not the one of the dump.

    `content=True` also compares size and mtime (a mapped file whose pages
    are taken from disk again must hold the same bytes).
    """
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (ident.dev, ident.ino):
        raise FileChangedError(
            ident.path,
            f"it is another file now (device/inode {st.st_dev}/{st.st_ino}, "
            f"was {ident.dev}/{ident.ino})",
        )
    if content and st.st_size != ident.size:
        raise FileChangedError(ident.path, f"size {st.st_size}, was {ident.size}")
    if content and st.st_mtime_ns != ident.mtime_ns:
        raise FileChangedError(ident.path, "it was modified (mtime differs)")


def open_checked(ident: FileIdentity, flags: int, *, content: bool) -> int:
    """Open the file of `ident` by path; refuse if it is another file (or, with
    `content`, if its size or mtime changed)."""
    try:
        fd = os.open(ident.path, flags | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileChangedError(ident.path, "it no longer exists") from None
    except OSError as e:
        raise FileChangedError(ident.path, f"it cannot be opened: {e.strerror}") from None
    try:
        check_same(ident, fd, content=content)
    except BaseException:
        os.close(fd)
        raise
    return fd
