"""Files reopened by path: regular files, directories and stateless character devices.

What identified the file at dump time (device, inode, size, mtime, and its
file handle, which tells a file deleted and made again on a reused inode
number apart) is kept; at restore a file that is missing, replaced, resized
or modified is refused with FileChangedError naming the path and what
differs, unless the user
accepts changed files (`allow_changed_files`: True for any, or a list of
paths or globs such as ["/var/log/*"]).  A terminal is not a file pyckpt can
own: it is saved as external (see files.py).

Files that only grew are not an error where growing cannot matter to the
process: a file it only writes with O_APPEND (a log, a `>>` redirection) is
accepted when it is the same inode and at least as long as at the dump — the
restored process's writes go to the end whatever its offset, so copies of a
logging program restored side by side each append their lines.  Size and
inode suffice: the saved part is not compared with the file (the process
never reads it; a log rotated by copying and truncating, shorter now, is
still refused).  A file it only writes without O_APPEND that grew is
refused: it would write at its saved offset over what was added since (the
error says to give the copy its own file with `fds=`/`--fd`, or accept it).
A changed file the process reads (O_RDONLY, O_RDWR, also with O_APPEND) is
refused as before.
"""

from __future__ import annotations

import ctypes
import os
import stat
import struct
from .._dataclass import dataclass

from ..arch import libc as _libc
from ..errors import FileChangedError
from ..image import record
from ..problems import Fix, needs
from .context import DumpContext, RestoreContext
from .fileid import FileIdentity, check_same, identify, open_path
from .files import DumpedFd, ExternalFileRecord, FileKind, file_kind

O_CLOEXEC = os.O_CLOEXEC
O_ACCMODE = 3
AT_FDCWD, AT_SYMLINK_FOLLOW, AT_EMPTY_PATH = -100, 0x400, 0x1000
MAX_HANDLE_SZ = 128
# Character devices with no state of their own: (major, minor) -> path
SIMPLE_DEVICES = {(1, 3): "/dev/null", (1, 5): "/dev/zero", (1, 7): "/dev/full",
                  (1, 8): "/dev/random", (1, 9): "/dev/urandom"}
TTY_MAJORS = {4, 5, 136}  # virtual consoles and serial, /dev/tty and ptmx, pseudo-terminals


@record(60, scope="image")
@dataclass
class FileRecord:
    id: int
    kind: str  # "regular", "directory" or "chardev"
    flags: int  # access mode and status flags (no O_CLOEXEC: that is per fd)
    pos: int
    file: FileIdentity
    # Its file handle (name_to_handle_at: the inode number and its generation), so that
    # a file deleted and made again on a reused inode number is told apart; None where
    # the file system gives none (and in older images).
    handle_type: int = 0
    handle: bytes | None = None


def file_handle(path: str, dirfd: int = AT_FDCWD, flags: int = AT_SYMLINK_FOLLOW) -> tuple[int, bytes | None]:
    """(type, bytes) of the file handle of `path` (or of `dirfd` itself with "" and
    AT_EMPTY_PATH); (0, None) when the file system cannot give one."""
    buf = ctypes.create_string_buffer(struct.pack("<Ii", MAX_HANDLE_SZ, 0) + bytes(MAX_HANDLE_SZ))
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(dirfd, os.fsencode(path), buf, ctypes.byref(mount_id), flags) != 0:
        return 0, None
    nbytes, htype = struct.unpack_from("<Ii", buf.raw)
    return htype, buf.raw[8:8 + nbytes]


def _dev(st) -> tuple[int, int]:
    return os.major(st.st_rdev), os.minor(st.st_rdev)


@file_kind
class PathFile(FileKind):
    name = "file"
    records = (FileRecord,)

    def claims(self, f: DumpedFd) -> bool:
        mode = f.st.st_mode
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            return not f.link.endswith(" (deleted)") and f.link.startswith("/")
        return stat.S_ISCHR(mode) and _dev(f.st) in SIMPLE_DEVICES

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        mode = f.st.st_mode
        kind = "regular" if stat.S_ISREG(mode) else "directory" if stat.S_ISDIR(mode) else "chardev"
        path = SIMPLE_DEVICES[_dev(f.st)] if kind == "chardev" else f.link
        htype, handle = (0, None) if kind == "chardev" else file_handle(f.proc_path)
        return [FileRecord(file_id, kind, f.info.flags & ~O_CLOEXEC, f.info.pos,
                           identify(path, f.proc_path), htype, handle)]

    def open(self, rctx: RestoreContext, rec: FileRecord) -> int:
        file_type = {"regular": stat.S_IFREG, "directory": stat.S_IFDIR}.get(rec.kind, stat.S_IFCHR)
        fd = open_path(rec.file.path, rec.flags, file_type)
        try:
            if rec.kind != "chardev" and not rctx.options.allows_changed(rec.file.path):
                try:
                    check_same(rec.file, fd, content=rec.kind == "regular" and not _only_grew(rec, fd))
                    _check_handle(rec, fd)
                except FileChangedError as e:
                    raise needs(e, Fix("allow_changed_files")) from None
            if rec.kind != "chardev":
                os.lseek(fd, rec.pos, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def describe(self, rec: FileRecord) -> str:
        return f"{rec.kind} {rec.file.path}"


def _check_handle(rec: FileRecord, fd: int) -> None:
    """Refuse a file on the dumped inode number whose handle differs: it was deleted and
    another made on the number again (size and mtime may not tell: a log rotated and
    written on is as long)."""
    if rec.handle is None:
        return
    htype, handle = file_handle("", fd, AT_EMPTY_PATH)
    if handle is not None and htype == rec.handle_type and handle != rec.handle:
        raise FileChangedError(rec.file.path, "it is another file now (same inode number, but another "
                                              "generation: it was deleted and made again)")


def _only_grew(rec: FileRecord, fd: int) -> bool:
    """Whether a regular file the process only writes may have grown since the dump
    without that mattering (see the module's docstring): True for a write-only
    O_APPEND file at least as long as it was; FileChangedError for a write-only file
    without O_APPEND that grew; False otherwise (then size and mtime must match)."""
    if rec.flags & O_ACCMODE != os.O_WRONLY:
        return False
    size = os.fstat(fd).st_size
    if size <= rec.file.size:  # shorter, or as long and perhaps rewritten: compared as any file
        return bool(rec.flags & os.O_APPEND) and size == rec.file.size
    if rec.flags & os.O_APPEND:
        return True
    raise FileChangedError(rec.file.path, (
        f"it grew to {size} bytes from {rec.file.size}, and the process writes it without "
        f"O_APPEND at offset {rec.pos}: it would write over what was added since"))


@file_kind
class Terminal(FileKind):
    """A terminal belongs to whoever started the process: saved as external."""

    name = "terminal"
    records = ()

    def claims(self, f: DumpedFd) -> bool:
        return stat.S_ISCHR(f.st.st_mode) and os.major(f.st.st_rdev) in TTY_MAJORS

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        return [ExternalFileRecord(file_id, f"terminal {f.link}", f.info.flags & ~O_CLOEXEC)]


def validate(image) -> None:
    """Each file record is of a known kind, a character device one of the stateless
    ones pyckpt saves, at a position a file can have."""
    from ..errors import ImageError

    for r in image.of_type(FileRecord):
        if r.kind not in ("regular", "directory", "chardev") or r.pos < 0:
            raise ImageError(f"image at {image.path}: file #{r.id} ({r.file.path}) has a bad kind "
                             "or position")
        if r.kind == "chardev" and r.file.path not in SIMPLE_DEVICES.values():
            raise ImageError(f"image at {image.path}: file #{r.id} is a device pyckpt does not save "
                             f"({r.file.path})")
