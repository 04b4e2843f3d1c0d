"""What identifies a file on disk, shared by every kind that reopens files by path."""

from __future__ import annotations

import os
import stat
from .._dataclass import dataclass

from ..errors import FileChangedError
from ..problems import Fix, needs


@dataclass
class FileIdentity:
    COMPACT = True  # written as an array of its values (image/codec.py): one per mapped area
    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int


def identify(path: str, stat_path: str | None = None) -> FileIdentity:
    """Identity of `path`, taken from `stat_path` (e.g. /proc/PID/fd/N) if given."""
    st = os.stat(stat_path or path)
    return FileIdentity(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def check_same(ident: FileIdentity, fd: int, *, content: bool, st: os.stat_result | None = None) -> None:
    """Refuse when the file opened as `fd` (whose fstat is `st`, if known) is not
    the one of the dump.

    `content=True` also compares size and mtime (a mapped file whose pages
    are taken from disk again must hold the same bytes); every caller asks for
    that only without allow_changed_files, which therefore avoids it.
    """
    st = st or os.fstat(fd)
    if (st.st_dev, st.st_ino) != (ident.dev, ident.ino):
        raise FileChangedError(
            ident.path,
            f"it is another file now (device/inode {st.st_dev}/{st.st_ino}, "
            f"was {ident.dev}/{ident.ino})",
        )
    if content and st.st_size != ident.size:
        raise needs(FileChangedError(ident.path, f"size {st.st_size}, was {ident.size}"),
                    Fix("allow_changed_files"))
    if content and st.st_mtime_ns != ident.mtime_ns:
        raise needs(FileChangedError(ident.path, "it was modified (mtime differs)"),
                    Fix("allow_changed_files"))


TYPE_NAMES = {stat.S_IFREG: "a regular file", stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device",
              stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFBLK: "a block device"}


_O_TMPFILE_ONLY = 0o20000000  # __O_TMPFILE; os.O_TMPFILE adds O_DIRECTORY to it


def reopen_flags(flags: int) -> int:
    """The dumped open flags without those that only mean something when a file is
    created: O_CREAT, O_EXCL, O_TRUNC, O_NOCTTY, and O_TMPFILE (Python's
    tempfile.TemporaryFile opens with it; its O_DIRECTORY part would refuse a file)."""
    flags &= ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY)
    if flags & _O_TMPFILE_ONLY:
        flags &= ~os.O_TMPFILE
    return flags


def open_path(path: str, flags: int, file_type: int) -> int:
    """Open `path` with the dumped open `flags`, refusing anything not of `file_type`.

    Opened non-blocking and without becoming a controlling terminal, so a
    path that is now a FIFO or a device cannot hang or disturb pyckpt; the
    dumped O_NONBLOCK setting is put back after the type is checked.
    """
    return _open_path(path, flags, file_type)[0]


def _open_path(path: str, flags: int, file_type: int) -> tuple[int, os.stat_result]:
    """open_path, and the file's fstat."""
    flags = reopen_flags(flags)
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileChangedError(path, "it no longer exists") from None
    except OSError as e:
        raise FileChangedError(path, f"it cannot be opened: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        now = stat.S_IFMT(st.st_mode)
        if now != file_type:
            raise FileChangedError(path, f"it is {TYPE_NAMES.get(now, 'another kind of file')} now, "
                                         f"was {TYPE_NAMES.get(file_type, 'another kind')}")
        if not flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_checked(ident: FileIdentity, flags: int, *, content: bool) -> int:
    """Open the regular file of `ident` by path; refuse if it is another file (or,
    with `content`, if its size or mtime changed)."""
    return open_checked_stat(ident, flags, content=content)[0]


def open_checked_stat(ident: FileIdentity, flags: int, *, content: bool) -> tuple[int, os.stat_result]:
    """open_checked, and the file's fstat."""
    fd, st = _open_path(ident.path, flags, stat.S_IFREG)
    try:
        check_same(ident, fd, content=content, st=st)
    except BaseException:
        os.close(fd)
        raise
    return fd, st
