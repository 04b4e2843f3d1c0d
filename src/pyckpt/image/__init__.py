"""The on-disk image: a directory pyckpt writes once and reads many times.

Layout (directory 0700, files 0600):

  records.img   magic, format version, header, typed records, end record
  pages.img     the page store: raw page contents, page-aligned, addressed by
                (offset, page count) from the memory records
  COMPLETE      written last; holds the digests of records.img and pages.img.
                Without it the image is incomplete and nothing will read it.
  INCOMPLETE    present while a dump runs, naming the pyckpt that writes it
                ("dump in progress by pyckpt pid N (started T ticks after boot
                B)"); a failed dump leaves it with the reason ("dump failed:
                ...") and nothing else (records.img and pages.img are removed)

records.img, byte by byte (little-endian):

  b"PYCKPT\\0\\n"  u32 format_version  u32 header_length  header (JSON)  u64 xxh3(header)
  then records:   u16 type  u16 0  u32 length  payload (JSON)  u64 xxh3(type,length,payload)
  last record:    type END with {"records": count}

Every read checks magic, version, lengths, types and checksums; the page
store is checked against per-run (or per-piece) xxh3-64 digests before a
restore starts.  An incremental image (a ParentRecord, image/chain.py) keeps
some of its runs in the pages.img of images up its chain: those are checked
there, each image of the chain opened as this one is.

The directory is pyckpt's alone: a dump refuses an existing directory the
caller does not own or that others can write to.  Inside it nothing is
followed: every file is opened relative to the directory's fd with
O_NOFOLLOW (new ones with O_EXCL), markers are written as a temporary file
renamed into place, and a reader reads only regular files (checked on an
O_PATH fd before they are opened: a FIFO, a device or a symbolic link is
never opened), of bounded size; the only text of the directory a message
ever quotes is the reason of an INCOMPLETE marker, and only when it has the
form pyckpt writes (short, printable, one line).
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from collections.abc import Iterator

import xxhash

from .._dataclass import dataclass
from ..arch import PAGE
from ..errors import ImageError, ImageWriteError
from .codec import _Bad, _fast_decode, decode, encode, record, record_type
from . import chain as _chain  # noqa: F401,E402  (registers ParentRecord)

MAGIC = b"PYCKPT\0\n"
FORMAT_VERSION = 3
# Versions read: 2 differs only in writing every record as a JSON object, which the
# decoder still takes for the classes 3 writes as arrays (codec.py: COMPACT).
READ_VERSIONS = (2, 3)
END_RECORD = 0xFFFF
RECORDS_FILE = "records.img"
PAGES_FILE = "pages.img"
COMPLETE_FILE = "COMPLETE"
INCOMPLETE_FILE = "INCOMPLETE"
_REC_HEAD = struct.Struct("<HHI")
_DIGEST = struct.Struct("<Q")
MAX_RECORD = 256 << 20
MAX_RECORDS_FILE = 1 << 30  # records.img is metadata: a GiB of it is no image pyckpt wrote
MAX_MARKER = 4096  # COMPLETE and INCOMPLETE
MAX_REASON = 1000  # characters of a failed dump's reason kept in INCOMPLETE
UNREADABLE = "the reason is unreadable"

__all__ = [
    "Header",
    "ImageWriter",
    "ImageReader",
    "PageStoreWriter",
    "record",
    "encode",
    "decode",
    "FORMAT_VERSION",
    "READ_VERSIONS",
    "padded",
    "incomplete_reason",
]


@dataclass
class Header:
    format_version: int
    pyckpt_version: str
    kernel_release: str
    machine: str
    created: float
    root_pid: int
    comm: str


def _writer(header: Header) -> str:
    """Who wrote an image, when another pyckpt did: said with what this one cannot read."""
    from .. import __version__

    if header.pyckpt_version == __version__:
        return ""
    return (f" (the image was written by pyckpt {header.pyckpt_version}; this is pyckpt {__version__}, "
            "which reads the records its version knows)")


def _process_scoped(cls) -> bool:
    return any(getattr(c, "SCOPE", "image") == "process" for c in (cls if isinstance(cls, tuple) else (cls,)))


def padded(n: int) -> int:
    """`n` bytes rounded up to whole pages: how much a blob takes in pages.img."""
    return (n + PAGE - 1) & ~(PAGE - 1)


def _digest(*parts: bytes) -> int:
    h = xxhash.xxh3_64()
    for p in parts:
        h.update(p)
    return h.intdigest()


# --- files in the image directory: never followed, only regular ones read -------------------------

_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _create(dfd: int, name: str) -> int:
    """A new file `name` of the directory `dfd`, mode 0600; never an existing one, never
    through a symbolic link."""
    return os.open(name, _O_NEW, 0o600, dir_fd=dfd)


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pathtext(path: str | os.PathLike) -> str:
    """`str(pathlib.Path(path))` without importing pathlib, which loads fnmatch, re,
    urllib.parse and ipaddress (~4-8 ms of a command's start-up): the path as its
    messages print it (tests/test_startup.py compares the two)."""
    text = path if isinstance(path, str) else os.fspath(path)
    if not isinstance(text, str):
        from pathlib import Path

        return str(Path(path))  # (bytes: the TypeError pathlib raises)
    root = "//" if text.startswith("//") and not text.startswith("///") else "/" if text.startswith("/") else ""
    parts = [x for x in text.split("/") if x and x != "."]
    return root + "/".join(parts) if root or parts else "."


class _Where:
    """`where`: the path as text (for messages and opens); `path`: it as a
    pathlib.Path, made when first asked (pathlib is not in a command's start-up)."""

    where: str

    @property
    def path(self):
        path = self.__dict__.get("_path")
        if path is None:
            from pathlib import Path

            path = self.__dict__["_path"] = Path(self.where)
        return path

    @property
    def parent_path(self) -> str:
        return os.path.dirname(self.where) or "."


def _open_dir(path: str) -> int:
    """The image directory (`path` itself may be a symbolic link: the caller's choice)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError(f"no image at {path}: not a directory", path=path) from None
    except OSError as e:
        raise ImageError(f"no image at {path}: cannot open it: {e.strerror}", path=path) from None


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def _lstat(dfd: int, name: str, path: str) -> os.stat_result | None:
    """`name` in the directory as it is (a link not followed); None if absent."""
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ImageError(f"image at {path}: cannot read {name}: {e.strerror}", path=path) from None


def _open_regular(dfd: int, name: str, path: str) -> tuple[int, os.stat_result]:
    """A read-only fd of `name` in the directory, and its stat, if it is a regular file:
    it is looked at through an O_PATH fd first (which opens nothing: not a FIFO, not
    a device, not the target of a symbolic link), then that very file is opened."""
    try:
        pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        raise ImageError(f"image at {path}: {name} is missing", path=path) from None
    except OSError as e:
        raise ImageError(f"image at {path}: cannot open {name}: {e.strerror}", path=path) from None
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"image at {path}: {name} is {_kind(st.st_mode)}, not a file pyckpt "
                             "wrote; it was not read", path=path)
        fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise ImageError(f"image at {path}: cannot open {name}: {e.strerror}", path=path) from None
    finally:
        os.close(pfd)
    return fd, st


def _read_regular(dfd: int, name: str, limit: int, path: str) -> tuple[bytearray, os.stat_result]:
    """The content of the regular file `name`, at most `limit` bytes (else ImageError),
    read into one buffer of the size fstat gave (no more is read)."""
    fd, st = _open_regular(dfd, name, path)
    try:
        if st.st_size > limit:
            raise ImageError(f"image at {path}: {name} holds {st.st_size} bytes, more than an "
                             f"image's {limit} (not an image pyckpt wrote)", path=path)
        data = bytearray(st.st_size)
        with memoryview(data) as view:
            got = 0
            while got < len(data):
                n = os.readv(fd, [view[got:]])
                if n == 0:
                    break
                got += n
        if got != len(data) or os.read(fd, 1):
            raise ImageError(f"image at {path}: {name} changed while it was read", path=path)
        return data, st
    except OSError as e:
        raise ImageError(f"image at {path}: cannot read {name}: {e.strerror}", path=path) from None
    finally:
        os.close(fd)


# --- the INCOMPLETE marker ---------------------------------------------------------------------

# (patterns compiled when a marker is read, not at every command's start-up)
_IN_PROGRESS = (r"dump in progress by pyckpt pid ([1-9][0-9]{0,9}) "
                r"\(started ([0-9]{1,20}) ticks after boot ([0-9a-f-]{36})\)\n")
_FAILED = r"dump failed: (.+)\n"


def _proc_start(pid: int | str) -> tuple[str, int] | None:
    """(state, start time in clock ticks after boot) of a process, None if there is none."""
    from ..proc import read_stat

    try:
        st = read_stat(pid)
        return st.state, st.start_time
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def _boot_id() -> str:
    from ..proc import read_boot_id

    try:
        return read_boot_id()
    except OSError:
        return ""


def _in_progress_text() -> bytes:
    me = _proc_start("self")
    if me is None:
        raise OSError(2, "cannot read /proc/self/stat")
    return (f"dump in progress by pyckpt pid {os.getpid()} "
            f"(started {me[1]} ticks after boot {_boot_id()})\n").encode()


def _failed_text(reason: str) -> bytes:
    """What a failed dump's marker says: one line, printable, at most MAX_REASON characters."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1]
                   for c in (reason or "unknown").replace("\n", " | "))
    if len(line) > MAX_REASON:
        line = line[: MAX_REASON - 3] + "..."
    return f"dump failed: {line}\n".encode("utf-8", "backslashreplace")


def _describe_marker(dfd: int, path: str) -> str | None:
    """What the INCOMPLETE marker says, in words fit to print; None if there is none.
    Read only as a regular file of pyckpt's form (the same owner as the directory,
    one link, short, UTF-8, one printable line): anything else is UNREADABLE."""
    if _lstat(dfd, INCOMPLETE_FILE, path) is None:
        return None
    try:
        data, st = _read_regular(dfd, INCOMPLETE_FILE, MAX_MARKER, path)
        text = data.decode("utf-8")
    except (ImageError, UnicodeDecodeError):
        return UNREADABLE
    if st.st_nlink != 1 or st.st_uid != os.fstat(dfd).st_uid:
        return UNREADABLE
    import re  # (an incomplete image's: not in a restore's start-up)

    m = re.fullmatch(_IN_PROGRESS, text)
    if m:
        pid, start, boot = int(m.group(1)), int(m.group(2)), m.group(3)
        now = _proc_start(pid)
        if boot == _boot_id() and now is not None and now[1] == start and now[0] not in "ZX":
            return f"a dump is in progress: pyckpt (pid {pid}) is writing it"
        return f"the dump was interrupted: pyckpt (pid {pid}) ended before it finished"
    m = re.fullmatch(_FAILED, text, re.DOTALL)
    if m and len(m.group(1)) <= MAX_REASON and m.group(1).isprintable():
        return f"dump failed: {m.group(1)}"
    return UNREADABLE


def incomplete_reason(path: str | os.PathLike) -> str | None:
    """Why the image at `path` is incomplete, in words fit to print (its INCOMPLETE
    marker read as described above); None when it has no such marker."""
    path = _pathtext(path)
    dfd = _open_dir(path)
    try:
        return _describe_marker(dfd, path)
    finally:
        os.close(dfd)


# --- writing ---------------------------------------------------------------------------------------

# Writeback behind the writer (`PageStoreWriter.writeback`): every WRITEBACK_STEP bytes
# written through the page cache are handed to the disk (sync_file_range WRITE, which
# does not wait), and what lies more than WRITEBACK_LAG behind the end is waited for;
# the fsync at the end then finds little left to write.
WRITEBACK_STEP = 8 << 20
WRITEBACK_LAG = 64 << 20
SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4
_KEEP_SIZE = 1  # FALLOC_FL_KEEP_SIZE
ALLOCATE_MIN = 64 << 10  # PageStoreWriter.allocate: smaller writes are left to the filesystem


class PageStoreWriter(_Where):
    """Appends page runs to pages.img; returns where each run went and its digest.

    With `writeback` set (a dump that kills its target syncs pages.img before
    the kill) the disk writes while the copy goes on, instead of all at once in
    the final fsync: page-aligned writes of whole pages (`write(..., aligned=True)`:
    the memory copy's) go straight to the disk (O_DIRECT, through a second fd of the
    file), the rest through the page cache with writeback started behind it.  Direct
    writes skip the page cache, whose fresh pages cost most of a big dump's time on a
    VM (first touch); the image is then not in the page cache either, so the first
    restore of it reads the disk.  A filesystem that refuses O_DIRECT (EINVAL) gets
    every write through the page cache.  `direct = False` (the class or one writer)
    keeps direct writes off."""

    direct = True  # with writeback: aligned writes go straight to the disk (O_DIRECT)

    def __init__(self, path: str | os.PathLike, dir_fd: int | None = None):
        self.where = _pathtext(path)  # str(Path(path)), without pathlib (see `path`)
        self.fd = (os.open(self.where, _O_NEW, 0o600) if dir_fd is None
                   else _create(dir_fd, os.path.basename(self.where)))
        self.offset = 0
        self.writeback = False
        self._started = 0  # writeback asked for up to here
        self._waited = 0  # ... and done up to here
        self._direct_fd = -1  # O_DIRECT fd of the same file (-2: refused, not tried again)
        self.direct_bytes = 0  # written through it
        self._warm_end = 0  # zeros written up to here, ahead of `offset` (warm)
        self.pending = None  # writes a thread still makes: its stop(raising) (see drain)

    def append(self, data) -> tuple[int, int]:
        view = memoryview(data)
        return self.write(view), xxhash.xxh3_64_intdigest(view)

    def write(self, data, aligned: bool = False) -> int:
        """Append `data` (no digest); returns its offset.  `aligned`: `data` is whole
        pages at a page-aligned address (may go straight to the disk, see the class)."""
        view = memoryview(data)
        off = self.reserve(len(view))
        self.write_at(view, off, aligned)
        return off

    def reserve(self, nbytes: int) -> int:
        """The offset of the next `nbytes` appended, written later with write_at (by the
        thread that copies a dump's memory, in the order reserved)."""
        off = self.offset
        self.offset += nbytes
        return off

    def write_at(self, data, off: int, aligned: bool = False) -> None:
        """Write `data` where reserve() put it (see write)."""
        view = memoryview(data)
        done = 0
        try:
            if aligned and self.writeback and off % PAGE == 0 and len(view) % PAGE == 0:
                done = self._write_direct(view, off)
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], off + done)
        except OSError as e:
            raise ImageWriteError(
                f"cannot write image pages to {self.where} after {off + done} bytes: {e.strerror}",
                path=self.parent_path
            ) from None
        if self.writeback and off + len(view) - self._started >= WRITEBACK_STEP:
            self._push(off + len(view))

    def drain(self, raising: bool = True) -> None:
        """Wait for the writes a thread still makes (pending); with `raising`, raise the
        first that failed."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending(raising)

    def warm(self, nbytes: int) -> None:
        """Have the page cache hold the `nbytes` after the end before they are written:
        zeros are written there now (cut off again by finish), so that the writes to
        come land on pages already in the cache.  A pre-copy dump asks it before its
        freeze: on this VM a write that takes a fresh page-cache page costs ~3 ms a
        MiB, one over a page already there ~0.1 ms.  Not with writeback (direct
        writes skip the cache)."""
        if self.writeback or nbytes <= 0:
            return
        start, end = max(self.offset, self._warm_end), self.offset + nbytes
        if start >= end:
            return
        zeros = memoryview(bytes(min(1 << 20, end - start)))
        pos = start
        try:
            while pos < end:
                pos += os.pwrite(self.fd, zeros[: min(len(zeros), end - pos)], pos)
        except OSError:  # (no room: the writes to come say so for themselves)
            pass
        self._warm_end = max(self._warm_end, pos)

    def allocate(self, off: int, nbytes: int) -> None:
        """Have disk blocks for the `nbytes` at `off`, reserved (reserve()) and about to be
        written through the page cache: fallocate, keeping the size (the writes grow
        it).  ext4 then skips its delayed allocation for each page written: 256 MiB
        written 58 -> 39 ms here, a small Python's 5 MiB 1.39 -> 0.97 ms.  A hint: a
        filesystem without it, or no room, leaves the writes as they were.  Not with
        writeback, whose writes go straight to the disk."""
        if self.writeback or nbytes < ALLOCATE_MIN:
            return
        from .._native._ck import lib

        if hasattr(lib, "ck_fallocate"):
            lib.ck_fallocate(self.fd, _KEEP_SIZE, off, nbytes)

    def cut(self) -> None:
        """Cut off what warm() wrote beyond the end."""
        if self._warm_end > self.offset:
            os.ftruncate(self.fd, self.offset)
            self._warm_end = self.offset

    def _write_direct(self, view, off: int) -> int:
        """Write `view` at `off` with O_DIRECT; returns how much was written (0 when
        direct writes are off or refused: the caller writes the rest buffered)."""
        if self._direct_fd == -1:
            self._direct_fd = -2
            if not self.direct:
                return 0
            try:
                fd = os.open(f"/proc/self/fd/{self.fd}", os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
            except OSError:  # no O_DIRECT here (an old tmpfs, ...) or no /proc
                return 0
            a, b = os.fstat(fd), os.fstat(self.fd)
            if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
                os.close(fd)
                return 0
            self._direct_fd = fd
        if self._direct_fd < 0:
            return 0
        done = 0
        while done < len(view):
            try:
                n = os.pwrite(self._direct_fd, view[done:], off + done)
            except OSError as e:
                if e.errno != 22 or done % PAGE:  # EINVAL: this filesystem's O_DIRECT refuses it
                    raise
                os.close(self._direct_fd)
                self._direct_fd = -2
                break
            done += n
            if n % PAGE:  # (a short direct write ends on a block, not always a page)
                break
        self.direct_bytes += done
        return done

    def _push(self, upto: int) -> None:
        """Start writeback of what is written up to `upto`."""
        from .._native._ck import lib

        if not hasattr(lib, "ck_sync_range"):  # a helper built before it: the final fsync does all
            return
        lib.ck_sync_range(self.fd, self._started, upto - self._started, SYNC_FILE_RANGE_WRITE)
        self._started = upto
        if self._started - self._waited > WRITEBACK_LAG:
            upto = self._started - WRITEBACK_LAG // 2
            # an error here shows again in the fsync that finishes the image
            lib.ck_sync_range(self.fd, self._waited, upto - self._waited, SYNC_FILE_RANGE_WAIT_BEFORE
                              | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER)
            self._waited = upto

    def close(self) -> None:
        if self._direct_fd >= 0:
            os.close(self._direct_fd)
            self._direct_fd = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _user(uid: int) -> str:
    import pwd

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


RECORDS_BUFFER = 1 << 20  # records.img is written in pieces of about this size


def _not_serializable(o):  # json.JSONEncoder.default's refusal
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _dumps(obj, sort_keys: bool = False) -> str:
    """json.dumps(obj, sort_keys=sort_keys), without importing json (json.encoder,
    json.decoder and json.scanner, which compile 9 regular expressions at import:
    ~2-3 ms of a dump's start-up): json's own C encoder (_json.make_encoder) with the
    arguments json.dumps gives it for these options (ASCII, circular references
    refused, NaN allowed, ', ' and ': '), a new one per call as there.  A Python whose
    _json takes other arguments gets json.dumps itself.  tests/test_startup.py holds
    it to json.dumps."""
    if isinstance(obj, str):
        import _json

        return _json.encode_basestring_ascii(obj)
    global _MAKE_ENCODER
    if _MAKE_ENCODER is None:
        import _json

        def make(sort_keys: bool):
            return _json.make_encoder({}, _not_serializable, _json.encode_basestring_ascii, None,
                                      ": ", ", ", sort_keys, False, True)

        try:
            make(True)
        except TypeError:  # another Python's _json: json's own way
            import json

            make = lambda sort_keys: json.JSONEncoder(sort_keys=sort_keys).iterencode  # noqa: E731
        _MAKE_ENCODER = make
    return "".join(_MAKE_ENCODER(sort_keys)(obj, 0))


_MAKE_ENCODER = None  # sort_keys -> a new C encoder, as json.dumps makes it (see _dumps)


def _record_json(rec) -> str:
    """_dumps(encode(rec), sort_keys=True), ~10 % sooner: json's C encoder given the
    record itself, which hands it the dataclasses and bytes it meets to turn into JSON
    values (codec.json_default); lists, numbers and text it walks itself.  One encoder
    for every record (a new one after a failure: its record of the containers being
    encoded may be left over)."""
    global _RECORD_ENCODER
    if _RECORD_ENCODER is None:
        import _json

        from .codec import json_default

        try:
            _RECORD_ENCODER = _json.make_encoder({}, json_default, _json.encode_basestring_ascii, None,
                                                 ": ", ", ", True, False, True)
        except TypeError:  # another Python's _json (see _dumps)
            _RECORD_ENCODER = False
    if _RECORD_ENCODER is False:
        return _dumps(encode(rec), sort_keys=True)
    try:
        return "".join(_RECORD_ENCODER(rec, 0))
    except BaseException:
        _RECORD_ENCODER = None
        raise


_RECORD_ENCODER = None  # (or False: _dumps's way)


class _JsonContext:
    """What json's C scanner reads of the decoder json.loads uses (json.JSONDecoder())."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


_SCAN = None  # json's C scanner (_json.make_scanner) with _JsonContext, made at the first read


def _scanner():
    """json's C scanner (_json.make_scanner) with _JsonContext, made at first use."""
    global _SCAN
    if _SCAN is None:
        import _json

        _SCAN = _json.make_scanner(_JsonContext())
    return _SCAN


def _loads(body):
    """json.loads(body), without importing json (json.decoder, json.scanner and
    json.encoder: ~1.5 ms of a restore's start-up): json's own C scanner on the ASCII
    text pyckpt writes, whitespace and "Extra data" handled as json.loads handles
    them; any other bytes (a BOM, UTF-16/32, non-ASCII) are json.loads's.  Errors
    are ValueError (json's JSONDecodeError is one) or RecursionError, as there
    (tests/test_startup.py compares the two on damaged records)."""
    if not isinstance(body, (bytes, bytearray)) or not body.isascii() or b"\0" in body[:4]:
        import json

        return json.loads(body)
    text = body.decode("ascii")
    start = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        value, end = _scanner()(text, start)
    except StopIteration:
        raise ValueError("Expecting value") from None
    if text[end:].strip(" \t\n\r"):
        raise ValueError("Extra data")
    return value


class ImageWriter(_Where):
    """Creates an image directory; `finish()` makes it complete.

    An existing directory is taken only if it is empty, belongs to the caller
    (the effective uid) and neither its group nor others can write to it;
    pyckpt works in it through a directory fd and follows nothing inside.
    """

    def __init__(self, path: str | os.PathLike):
        self.where = _pathtext(path)  # str(Path(path)), without pathlib (see `path`)
        self.created = False  # the directory is this writer's (else it was given, empty)
        self._given_mode: int | None = None
        self._fd = -1
        self._dfd = -1
        self.pages: PageStoreWriter | None = None
        self._open_dir()
        try:
            self._put(INCOMPLETE_FILE, _in_progress_text())
            self._fd = _create(self._dfd, RECORDS_FILE)
            self.pages = PageStoreWriter(os.path.join(self.where, PAGES_FILE), dir_fd=self._dfd)
        except OSError as e:
            self._close_files()
            self._remove(keep_marker=False)
            raise ImageWriteError(f"cannot write image at {self.where}: {e.strerror}",
                                  path=self.where) from None
        self._hash = xxhash.xxh3_64()
        self._count = 0
        self._size = 0
        self._pending: list[bytes] = []  # records not written yet (see _write)
        self._pending_size = 0

    def _open_dir(self) -> None:
        """Make the directory, or take the empty one given if it is fit; refusals
        change nothing."""
        try:
            os.mkdir(self.where, 0o700)
            self.created = True
        except FileExistsError:
            pass
        except OSError as e:
            raise ImageWriteError(f"cannot write image at {self.where}: {e.strerror}",
                                  path=self.where) from None
        try:
            dfd = os.open(self.where, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC)
        except NotADirectoryError:
            raise ImageWriteError(f"image path {self.where} exists and is not a directory",
                                  path=self.where) from None
        except OSError as e:
            raise ImageWriteError(f"cannot write image at {self.where}: {e.strerror}",
                                  path=self.where) from None
        try:
            st = os.fstat(dfd)
            refusal = self._refusal(st)
            if refusal is None and not self.created and os.listdir(dfd):
                refusal = f"image directory {self.where} is not empty; choose a new path or remove it"
            if refusal is not None:
                if self.created:  # made here, yet not fit (a filesystem without owners or modes)
                    try:
                        os.rmdir(self.where)
                    except OSError:
                        pass
                    self.created = False
                raise ImageWriteError(refusal, path=self.where)
            if not self.created:
                self._given_mode = st.st_mode & 0o7777
                os.fchmod(dfd, 0o700)
        except OSError as e:
            os.close(dfd)
            raise ImageWriteError(f"cannot write image at {self.where}: {e.strerror}",
                                  path=self.where) from None
        except BaseException:
            os.close(dfd)
            raise
        self._dfd = dfd
        self._dir_id = (st.st_dev, st.st_ino)

    def _refusal(self, st: os.stat_result) -> str | None:
        me = os.geteuid()
        if st.st_uid != me:
            return (f"image directory {self.where} belongs to {_user(st.st_uid)}, not to "
                    f"{_user(me)} who runs pyckpt; an image directory must be pyckpt's alone: "
                    "choose a new path (pyckpt creates it)")
        if st.st_mode & 0o022:
            who = {0o022: "its group and others", 0o020: "its group", 0o002: "others"}[st.st_mode & 0o022]
            return (f"image directory {self.where} can be written by {who} (mode "
                    f"{st.st_mode & 0o7777:04o}); an image directory must be pyckpt's alone: "
                    "choose a new path (pyckpt creates it)")
        return None

    def _dir(self) -> int:
        """The directory's fd: the one held, else the directory opened anew if it is
        still the same one (after finish(), for abandon()); OSError if not."""
        if self._dfd < 0:
            dfd = os.open(self.where, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC)
            st = os.fstat(dfd)
            if (st.st_dev, st.st_ino) != self._dir_id:
                os.close(dfd)
                raise OSError(2, "the image directory was replaced")
            self._dfd = dfd
        return self._dfd

    def _close_dir(self) -> None:
        if self._dfd >= 0:
            os.close(self._dfd)
            self._dfd = -1

    def _put(self, name: str, data: bytes, *, sync: bool = False, rename: bool = True) -> str:
        """Write `name` as a temporary file renamed into place (a link of that name is
        replaced, never written through).  With rename=False, leave it at the
        temporary name (returned)."""
        dfd = self._dir()
        tmp = f".{name}.tmp"
        try:
            os.unlink(tmp, dir_fd=dfd)
        except FileNotFoundError:
            pass
        fd = _create(dfd, tmp)
        try:
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if rename:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        return tmp

    def _write(self, data: bytes) -> None:
        """Append `data` to records.img: gathered, and written RECORDS_BUFFER bytes at a
        time (a small image's records in one write, at finish)."""
        self._size += len(data)
        if self._size > MAX_RECORDS_FILE:  # no reader would take it
            raise ImageWriteError(f"cannot write image at {self.where}: its records exceed "
                                  f"{MAX_RECORDS_FILE >> 20} MiB", path=self.where)
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= RECORDS_BUFFER:
            self._flush()

    def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        try:
            _write_all(self._fd, data)
        except OSError as e:
            raise ImageWriteError(f"cannot write image at {self.where}: {e.strerror}",
                                  path=self.where) from None
        self._hash.update(data)

    def write_header(self, header: Header) -> None:
        self.header = header
        body = _dumps(encode(header), sort_keys=True).encode()
        self._write(MAGIC + struct.pack("<II", FORMAT_VERSION, len(body)) + body
                    + _DIGEST.pack(_digest(body)))

    def write_record(self, rec) -> None:
        self._emit(rec.RECORD_TYPE, _record_json(rec).encode())

    def _emit(self, type_id: int, body: bytes) -> None:
        rec = _REC_HEAD.pack(type_id, 0, len(body)) + body
        self._write(rec + _DIGEST.pack(xxhash.xxh3_64_intdigest(rec)))  # = _digest(head, body)
        self._count += 1

    def finish(self, *, sync: bool) -> None:
        """Write the end record, sync, then the COMPLETE marker.

        Nothing is synced unless asked (`sync`: when the target is about to be
        killed, the image is all it has left): then records, pages.img, the
        marker and the directory are on disk before this returns.  Otherwise
        (the target goes on running) a crash of the machine could leave any of
        them short or torn, which the record and page digests and the marker's
        records digest catch: a damaged image is refused, never restored
        wrong.  Those fsyncs cost ~5 ms each here, most of a small dump.
        """
        self._emit(END_RECORD, _dumps({"records": self._count}, sort_keys=True).encode())
        self._flush()
        self.pages.drain()
        try:
            if sync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            self.pages.cut()
            if sync:
                os.fsync(self.pages.fd)
            pages_size = self.pages.offset
            self.pages.close()
            marker = _dumps({
                "records_xxh3": self._hash.intdigest(),
                "pages_size": pages_size,
            }).encode()
            tmp = self._put(COMPLETE_FILE, marker, sync=sync, rename=False)
            # INCOMPLETE goes first: a crash in between leaves neither marker,
            # which readers also take as incomplete — never both.
            os.unlink(INCOMPLETE_FILE, dir_fd=self._dfd)
            os.rename(tmp, COMPLETE_FILE, src_dir_fd=self._dfd, dst_dir_fd=self._dfd)
            if sync:
                os.fsync(self._dfd)
        except OSError as e:
            raise ImageWriteError(f"cannot finish image at {self.where}: {e.strerror}",
                                  path=self.where) from None
        finally:
            self._close_dir()

    def abandon(self, reason: str, *, keep_marker: bool = True) -> None:
        """A failed dump: remove the partial records and pages (gigabytes, maybe, of
        no use to anyone) and leave only the INCOMPLETE marker, with the reason.
        With `keep_marker=False` (nothing was touched: a refusal) leave nothing:
        the directory is removed if this writer made it, else left empty as given."""
        if self.pages is not None:
            self.pages.drain(raising=False)
        self._close_files()
        try:
            self._dir()
        except OSError:
            return  # the directory is gone or another one: nothing of this dump to undo there
        self._remove(keep_marker=keep_marker)
        if keep_marker:
            try:
                self._put(INCOMPLETE_FILE, _failed_text(reason))
            except OSError:
                pass
            self._close_dir()

    def _close_files(self) -> None:
        for fd in (self._fd, self.pages.fd if self.pages is not None else -1,
                   self.pages._direct_fd if self.pages is not None else -1):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = -1
        if self.pages is not None:
            self.pages.fd = -1
            self.pages._direct_fd = -2

    def _remove(self, *, keep_marker: bool) -> None:
        """Best effort: every file a dump writes (but the marker, if kept); without the
        marker the directory too if this writer made it, else its mode as given."""
        dfd = self._dfd
        names = [RECORDS_FILE, PAGES_FILE, f".{COMPLETE_FILE}.tmp", COMPLETE_FILE,
                 f".{INCOMPLETE_FILE}.tmp"]
        for name in names + ([] if keep_marker else [INCOMPLETE_FILE]):
            try:
                os.unlink(name, dir_fd=dfd)
            except OSError:
                pass
        if keep_marker:
            return
        try:
            if self._given_mode is not None:
                os.fchmod(dfd, self._given_mode)
        except OSError:
            pass
        self._close_dir()
        try:
            if self.created:
                os.rmdir(self.where)
        except OSError:
            pass

    def __del__(self):
        try:
            self._close_dir()
        except Exception:  # at interpreter exit
            pass


# --- reading ---------------------------------------------------------------------------------------

def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ImageReader(_Where):
    """Opens an image and validates everything but the page contents: the bytes
    (sizes, checksums, types) and that the records make one process tree
    (`kinds.check_tree`).

    `verify_pages(runs)` checks page digests; restore calls it before it
    creates any process, or for a big image `verify_pages_beside(runs)`,
    whose digests are checked in a thread while the process is made.  `open_pages()` gives an fd of pages.img (the file
    opened and checked at first, nothing else).
    """

    def __init__(self, path: str | os.PathLike, *, dir_fd: int | None = None):
        self.where = _pathtext(path)  # str(Path(path)), without pathlib (see `path`)
        self._nprocesses: int | None = None
        self._chain: list | None = None
        # A parent of an incremental image is reached through its child's directory
        # (image/chain.py): it is read through that fd, never by its path again.
        self._dfd = -1 if dir_fd is None else os.dup(dir_fd)
        dfd = _open_dir(self.where) if dir_fd is None else os.dup(dir_fd)
        try:
            data = self._load(dfd)
        finally:
            os.close(dfd)
        try:
            self.header, self.records = self._parse(data)
        except ImageError as e:  # a record that does not decode: codec.py knows no path
            if e.path is None:
                e.path = self.where
            raise
        if _digest(data) != self._expect_digest:
            raise ImageError(f"image at {self.where}: {RECORDS_FILE} does not match its COMPLETE digest",
                             path=self.where)
        from ..kinds import check_tree

        check_tree(self)  # every reader sees one process tree, no dangling reference

    def _load(self, dfd: int) -> bytes:
        """Read the markers and records.img, look at pages.img; returns records.img."""
        if _lstat(dfd, COMPLETE_FILE, self.where) is None:
            why = _describe_marker(dfd, self.where)
            if why is None:
                if _lstat(dfd, RECORDS_FILE, self.where) is None:
                    raise ImageError(f"no image at {self.where}: {RECORDS_FILE} is missing",
                                     path=self.where)
                raise ImageError(f"image at {self.where} is incomplete; it cannot be used", path=self.where)
            raise ImageError(f"image at {self.where} is incomplete ({why}); it cannot be used",
                             path=self.where)
        marker, _ = _read_regular(dfd, COMPLETE_FILE, MAX_MARKER, self.where)
        try:
            fields = _loads(marker)
            digest, size = fields["records_xxh3"], fields["pages_size"]
            if not (_int(digest) and _int(size) and 0 <= digest < 1 << 64 and 0 <= size < 1 << 48):
                raise ValueError("out of range")
        except (ValueError, KeyError, TypeError, IndexError, RecursionError):
            raise ImageError(f"image at {self.where}: the COMPLETE marker is damaged",
                             path=self.where) from None
        self._expect_digest, self.pages_size = digest, size
        data, _ = _read_regular(dfd, RECORDS_FILE, MAX_RECORDS_FILE, self.where)
        fd, st = _open_regular(dfd, PAGES_FILE, self.where)
        os.close(fd)
        self._pages_id = (st.st_dev, st.st_ino)
        if st.st_size != self.pages_size:
            raise ImageError(
                f"image at {self.where}: {PAGES_FILE} holds {st.st_size} bytes, "
                f"the image says {self.pages_size} (truncated or damaged)", path=self.where
            )
        return data

    def read_blob(self, offset: int, length: int, what: str) -> bytes:
        """The `length` bytes a record keeps at `offset` of pages.img (a queue, a
        buffer: `what` it is, for the message); ImageError when the file is short."""
        if not length:
            return b""
        with open(self.open_pages(), "rb", buffering=0) as f:
            data = os.pread(f.fileno(), length, offset)
        if len(data) != length:
            raise ImageError(f"image at {self.where}: {PAGES_FILE} is short: the data of {what} is "
                             "cut (damaged image)", path=self.where)
        return data

    def __del__(self):
        if getattr(self, "_dfd", -1) >= 0:
            os.close(self._dfd)
            self._dfd = -1

    def chain(self, level: int = 0) -> "ImageReader":
        """The image `level` steps up this one's chain of parents (0: this one), opened
        and checked on first use (image/chain.py); ImageError if it is not there."""
        if level == 0:
            return self
        if self._chain is None:
            from .chain import open_chain

            self._chain = open_chain(self)
        if not 0 <= level < len(self._chain):
            raise ImageError(f"image at {self.where}: a memory run is kept {level} images up its "
                             f"chain, which holds {len(self._chain) - 1} (damaged image)", path=self.where)
        return self._chain[level]

    def open_pages(self, level: int = 0) -> int:
        """A new read-only fd (close-on-exec) of pages.img: the regular file checked when
        the image was opened, of the size the image says (else ImageError).  `level`:
        of that image of the chain (0: this one, 1: its parent...)."""
        if level:
            return self.chain(level).open_pages()
        dfd = _open_dir(self.where) if self._dfd < 0 else os.dup(self._dfd)
        try:
            fd, st = _open_regular(dfd, PAGES_FILE, self.where)
        finally:
            os.close(dfd)
        if (st.st_dev, st.st_ino) != self._pages_id or st.st_size != self.pages_size:
            os.close(fd)
            raise ImageError(f"image at {self.where}: {PAGES_FILE} was replaced or changed since "
                             "the image was opened", path=self.where)
        return fd

    def _parse(self, data: bytes):
        where = f"image at {self.where}"
        if len(data) < len(MAGIC) + 8 or not data.startswith(MAGIC):
            raise ImageError(f"{where} is not a pyckpt image (bad magic)", path=self.where)
        version, hlen = struct.unpack_from("<II", data, len(MAGIC))
        if version not in READ_VERSIONS:
            raise ImageError(
                f"{where} has format version {version}; this pyckpt reads versions "
                f"{', '.join(map(str, READ_VERSIONS[:-1]))} and {READ_VERSIONS[-1]}",
                path=self.where
            )
        pos = len(MAGIC) + 8
        if pos + hlen + 8 > len(data):
            raise ImageError(f"{where}: header runs past the end of {RECORDS_FILE} (truncated)",
                             path=self.where)
        body = data[pos : pos + hlen]
        (dig,) = _DIGEST.unpack_from(data, pos + hlen)
        if dig != _digest(body):
            raise ImageError(f"{where}: header checksum mismatch (corrupted)", path=self.where)
        header = decode(Header, self._json(body, "header"), "header")
        pos += hlen + 8
        records = []
        view, size, head_size = memoryview(data), len(data), _REC_HEAD.size
        head, digest, hash_of = _REC_HEAD.unpack_from, _DIGEST.unpack_from, xxhash.xxh3_64_intdigest
        scan = _scanner()
        while True:
            if pos + head_size > size:
                raise ImageError(f"{where}: {RECORDS_FILE} ends without an end record (truncated)",
                                 path=self.where)
            type_id, zero, length = head(data, pos)
            end = pos + head_size + length
            if zero != 0 or length > MAX_RECORD or end + 8 > size:
                raise ImageError(f"{where}: record #{len(records)} at byte {pos} has a bad length or header",
                                 path=self.where)
            body = data[pos + head_size : end]
            if digest(data, end)[0] != hash_of(view[pos:end]):  # (= _digest(head, body))
                raise ImageError(f"{where}: record #{len(records)} at byte {pos} fails its checksum (corrupted)",
                                 path=self.where)
            pos = end + 8
            try:  # what pyckpt writes: ASCII JSON, one value, nothing around it (else _loads)
                text = body.decode("ascii")
                payload, stop = scan(text, 0)
                if stop != len(text):
                    raise ValueError
            except (ValueError, StopIteration, RecursionError):
                # (the words of an error made only for one: ~1 us a record)
                payload = self._json(body, f"record #{len(records)}")
            if type_id == END_RECORD:
                if payload != {"records": len(records)}:
                    raise ImageError(f"{where}: end record does not match the record count", path=self.where)
                if pos != len(data):
                    raise ImageError(f"{where}: {len(data) - pos} stray bytes after the end record",
                                     path=self.where)
                return header, records
            cls = record_type(type_id)  # its kind loaded when first met
            if cls is None:
                raise ImageError(f"{where}: record #{len(records)} has unknown type {type_id}"
                                 f"{_writer(header)}", path=self.where)
            try:
                try:
                    records.append(_fast_decode(cls, payload))
                except _Bad:  # (decode's checked way, which says what is wrong)
                    records.append(decode(cls, payload, f"{cls.__name__} (record #{len(records)})"))
            except ImageError as e:
                raise ImageError(f"{where}: {e}{_writer(header)}", path=self.where) from None

    def _json(self, body: bytes, what: str):
        try:
            return _loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ImageError(f"image at {self.where}: {what} is not valid JSON", path=self.where) from None
        except RecursionError:
            raise ImageError(f"image at {self.where}: {what} is JSON nested too deeply", path=self.where) from None

    def of_type(self, cls) -> list:
        """Records of `cls` in the image.  Asking the whole image of a tree for records
        of scope "process" (whose?) is a bug: ask a process's view
        (kinds.task.process_views), or say `all_of_type` to mean every process's."""
        if _process_scoped(cls) and self._processes() > 1:
            raise TypeError(f"of_type({getattr(cls, '__name__', cls)}) on an image of "
                            f"{self._processes()} processes mixes their records: use one "
                            "process's view, or all_of_type")
        return self.all_of_type(cls)

    def all_of_type(self, cls) -> list:
        """Records of `cls` of every process of the image, in image order."""
        return _of_type(self, cls)

    def _processes(self) -> int:
        if self._nprocesses is None:
            self._nprocesses = sum(1 for r in self.records if getattr(r, "STARTS_PROCESS", False))
        return self._nprocesses

    def one(self, cls):
        found = self.of_type(cls)
        if len(found) != 1:
            raise ImageError(f"image at {self.where}: expected one {cls.__name__}, found {len(found)}",
                             path=self.where)
        return found[0]

    def verify_pages(self, runs: Iterator[tuple[int, int, int]], progress=None) -> None:
        """Check each (offset, length, digest) run of pages.img; then, for an incremental
        image, the runs it keeps in the images up its chain (a record's
        `inherited_runs()`: (level, offset, length, digest)), each in its image's
        pages.img — the chain is opened and checked for that (image/chain.py).

        The file is mapped rather than read: hashing page-cache pages in place
        costs about half as much as copying them out first.
        """
        self._verify_runs(runs, progress)
        self._verify_inherited()

    def verify_pages_beside(self, runs: Iterator[tuple[int, int, int]], mapping=None) -> "PageCheck":
        """verify_pages, with the digests of this image's own runs checked in a thread (a
        big restore: on another CPU while the new task reads its pages).  The runs'
        bounds and the runs kept up the chain are checked before this returns;
        `PageCheck.wait()` raises the ImageError of a bad digest (restore waits for it
        before the process runs, and kills it), `cancel()` stops the thread.
        `mapping`: pyckpt's mapping of this pages.img made meanwhile (its `get()` waits
        for it and gives a char * of the file's size, or None), read instead of one of
        the check's own; it must stay mapped until the check has ended."""
        runs = list(runs)
        self._check_bounds(runs)
        check = PageCheck(self, runs, mapping)
        try:
            self._verify_inherited()
        except BaseException:
            check.cancel()
            raise
        return check

    def _verify_inherited(self) -> None:
        by_level: dict[int, list] = {}
        for rec in self.records:
            method = getattr(rec, "inherited_runs", None)
            if method is not None:
                for level, offset, length, digest in method():
                    by_level.setdefault(level, []).append((offset, length, digest))
        for level, found in sorted(by_level.items()):
            parent = self.chain(level)
            try:
                parent._verify_runs(found)
            except ImageError as e:
                raise ImageError(f"image at {self.where}: in its parent image {parent.path}: {e}",
                                 path=self.where) from None

    def _check_bounds(self, runs: list[tuple[int, int, int]]) -> None:
        for offset, length, _ in runs:
            if offset < 0 or length <= 0 or offset % PAGE or length % PAGE or offset + length > self.pages_size:
                raise ImageError(f"image at {self.where}: a page run lies outside {PAGES_FILE}",
                                 path=self.where)

    def _verify_runs(self, runs: Iterator[tuple[int, int, int]], progress=None, stop=None,
                     mapping=None) -> None:
        runs = list(runs)
        self._check_bounds(runs)
        if not runs or self.pages_size == 0:
            return
        src = mapping.get() if mapping is not None else None
        if src is not None:
            from .._native._ck import ffi

            view = memoryview(ffi.buffer(src, self.pages_size))
            try:
                self._check_digests(view, runs, progress, stop)
            finally:
                view.release()
            return
        fd = self.open_pages()
        try:
            mapping = mmap.mmap(fd, self.pages_size, mmap.MAP_SHARED, mmap.PROT_READ)
        except (OSError, ValueError) as e:
            raise ImageError(f"image at {self.where}: cannot map {PAGES_FILE}: {e}", path=self.where) from None
        finally:
            os.close(fd)
        try:
            mapping.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(mapping)
            try:
                self._check_digests(view, runs, progress, stop)
            finally:
                view.release()
        finally:
            mapping.close()

    def _check_digests(self, view, runs: list[tuple[int, int, int]], progress, stop) -> None:
        for offset, length, digest in runs:
            if stop is not None and stop.is_set():
                return
            if xxhash.xxh3_64_intdigest(view[offset : offset + length]) != digest:
                raise ImageError(
                    f"image at {self.where}: pages at offset {offset} of {PAGES_FILE} "
                    "fail their checksum (corrupted)", path=self.where
                )
            if progress:
                progress(length)


class PageCheck:
    """The digests of page runs checked in a thread (ImageReader.verify_pages_beside).
    A bare `_thread` thread: a restore's start-up does without `threading`."""

    def __init__(self, reader: ImageReader, runs: list[tuple[int, int, int]], mapping=None):
        import _thread

        self._stopped = False
        self._error: BaseException | None = None
        self.size = sum(length for _, length, _ in runs)  # bytes it reads
        self._done = _thread.allocate_lock()
        self._done.acquire()  # released by the thread when it ends
        try:
            _thread.start_new_thread(self._run, (reader, runs, mapping))
        except RuntimeError:  # no thread to be had: checked here and now
            self._run(reader, runs, mapping)

    def is_set(self) -> bool:
        """Whether to stop (what _verify_runs asks its `stop`)."""
        return self._stopped

    def _run(self, reader: ImageReader, runs, mapping) -> None:
        try:
            reader._verify_runs(runs, stop=self, mapping=mapping)
        except BaseException as e:  # noqa: BLE001 -- raised by wait(), in the restoring thread
            self._error = e
        finally:
            self._done.release()

    def wait(self) -> None:
        """Until every digest is checked; raises what the check raised (an ImageError)."""
        with self._done:
            pass
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        self._stopped = True
        with self._done:
            pass


def _of_type(holder, cls) -> list:
    """The records of `holder` (a reader or a view) that are `cls`, found once per class
    (a restore asks ~80 times) while its list of records stays the one it was."""
    records = holder.records
    memo = holder.__dict__.get("_by_type")
    if memo is None or memo[0] is not records or memo[1] != len(records):
        groups: dict[type, list] = {}  # the records of each exact type, in image order
        for r in records:
            group = groups.get(type(r))
            if group is None:
                groups[type(r)] = [r]
            else:
                group.append(r)
        memo = holder._by_type = (records, len(records), {}, groups)
    found = memo[2].get(cls)
    if found is None:
        types = [t for t in memo[3] if issubclass(t, cls)]
        if len(types) <= 1:  # (one type: its group is in image order)
            found = memo[3][types[0]] if types else []
        else:
            found = [r for r in records if isinstance(r, cls)]
        memo[2][cls] = found
    return list(found)


class ImageView:
    """The records of one process of an image (a process tree holds several),
    with the reader's lookups; kinds restore a process from its view."""

    def __init__(self, reader: ImageReader, records: list):
        self.reader = reader
        self.where = reader.where
        self.header = reader.header
        self.pages_size = reader.pages_size
        self.records = records

    @property
    def path(self):
        """The image directory, a pathlib.Path (the reader's)."""
        return self.reader.path

    def of_type(self, cls) -> list:
        """Records of `cls`: this process's own for scope "process", the whole
        image's for scope "image" (objects saved once and shared)."""
        return _of_type(self if _process_scoped(cls) else self.reader, cls)

    one = ImageReader.one

    def open_pages(self, level: int = 0) -> int:
        return self.reader.open_pages(level)

    def read_blob(self, offset: int, length: int, what: str) -> bytes:
        return self.reader.read_blob(offset, length, what)
