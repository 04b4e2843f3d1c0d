"""The on-disk image: a directory pyckpt writes once and reads many times.

Layout (directory 0700, files 0600):

  records.img   magic, format version, header, typed records, end record
  pages.img     the page store: raw page contents, page-aligned, addressed by
                (offset, page count) from the memory records
  COMPLETE      written last; holds the digests of records.img and pages.img.
                Without it the image is incomplete and nothing will read it.
  INCOMPLETE    present while a dump runs; a failed dump leaves it, with the
                reason inside, and nothing else (records.img and pages.img
                are removed)

records.img, byte by byte (little-endian):

  b"PYCKPT\\0\\n"  u32 format_version  u32 header_length  header (JSON)  u64 xxh3(header)
  then records:   u16 type  u16 0  u32 length  payload (JSON)  u64 xxh3(type,length,payload)
  last record:    type END with {"records": count}

Every read checks magic, version, lengths, types and checksums; the page
store is checked against per-run xxh3-64 digests before a restore starts.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import xxhash

from ..errors import ImageError, ImageWriteError
from .codec import RECORD_TYPES, decode, encode, record

MAGIC = b"PYCKPT\0\n"
FORMAT_VERSION = 2
END_RECORD = 0xFFFF
RECORDS_FILE = "records.img"
PAGES_FILE = "pages.img"
COMPLETE_FILE = "COMPLETE"
INCOMPLETE_FILE = "INCOMPLETE"
PAGE = 4096
_REC_HEAD = struct.Struct("<HHI")
_DIGEST = struct.Struct("<Q")
MAX_RECORD = 256 << 20

__all__ = [
    "Header",
    "ImageWriter",
    "ImageReader",
    "PageStoreWriter",
    "record",
    "encode",
    "decode",
    "FORMAT_VERSION",
    "padded",
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


def padded(n: int) -> int:
    """`n` bytes rounded up to whole pages: how much a blob takes in pages.img."""
    return (n + PAGE - 1) & ~(PAGE - 1)


def _digest(*parts: bytes) -> int:
    h = xxhash.xxh3_64()
    for p in parts:
        h.update(p)
    return h.intdigest()


def _open_new(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


class PageStoreWriter:
    """Appends page runs to pages.img; returns where each run went and its digest."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = _open_new(path)
        self.offset = 0

    def append(self, data) -> tuple[int, int]:
        off = self.offset
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as e:
            raise ImageWriteError(
                f"cannot write image pages to {self.path} after {off + done} bytes: {e.strerror}",
                path=self.path.parent
            ) from None
        self.offset += len(view)
        return off, xxhash.xxh3_64_intdigest(view)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ImageWriter:
    """Creates an image directory; `finish()` makes it complete."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.created = False  # the directory is this writer's (else it was given, empty)
        self._given_mode: int | None = None
        try:
            if self.path.exists():
                if not self.path.is_dir():
                    raise ImageWriteError(f"image path {self.path} exists and is not a directory",
                                          path=self.path)
                if any(self.path.iterdir()):
                    raise ImageWriteError(
                        f"image directory {self.path} is not empty; choose a new path or remove it",
                        path=self.path
                    )
                self._given_mode = self.path.stat().st_mode & 0o7777
                os.chmod(self.path, 0o700)
            else:
                os.mkdir(self.path, 0o700)
                self.created = True
            fd = _open_new(self.path / INCOMPLETE_FILE)
            os.write(fd, b"dump in progress\n")
            os.close(fd)
            self._fd = _open_new(self.path / RECORDS_FILE)
            self.pages = PageStoreWriter(self.path / PAGES_FILE)
        except ImageWriteError:
            raise
        except OSError as e:
            for fd in (getattr(self, "_fd", -1), getattr(getattr(self, "pages", None), "fd", -1)):
                if fd >= 0:
                    os.close(fd)
            self._remove(keep_marker=False)
            raise ImageWriteError(f"cannot write image at {self.path}: {e.strerror}",
                                  path=self.path) from None
        self._hash = xxhash.xxh3_64()
        self._count = 0

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)
        except OSError as e:
            raise ImageWriteError(f"cannot write image at {self.path}: {e.strerror}",
                                  path=self.path) from None
        self._hash.update(data)

    def write_header(self, header: Header) -> None:
        body = json.dumps(encode(header), sort_keys=True).encode()
        self._write(MAGIC + struct.pack("<II", FORMAT_VERSION, len(body)) + body
                    + _DIGEST.pack(_digest(body)))

    def write_record(self, rec) -> None:
        self._emit(rec.RECORD_TYPE, json.dumps(encode(rec), sort_keys=True).encode())

    def _emit(self, type_id: int, body: bytes) -> None:
        head = _REC_HEAD.pack(type_id, 0, len(body))
        self._write(head + body + _DIGEST.pack(_digest(head, body)))
        self._count += 1

    def finish(self, *, sync_pages: bool) -> None:
        """Write the end record, sync, then the COMPLETE marker.

        pages.img is synced only when asked (when the target is about to be
        killed); otherwise a crash could leave it short or torn, which the
        page digests catch at restore: a damaged image is refused, never
        restored wrong.
        """
        self._emit(END_RECORD, json.dumps({"records": self._count}).encode())
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            if sync_pages:
                os.fsync(self.pages.fd)
            pages_size = self.pages.offset
            self.pages.close()
            marker = json.dumps({
                "records_xxh3": self._hash.intdigest(),
                "pages_size": pages_size,
            }).encode()
            tmp = self.path / (COMPLETE_FILE + ".tmp")
            fd = _open_new(tmp)
            os.write(fd, marker)
            os.fsync(fd)
            os.close(fd)
            # INCOMPLETE goes first: a crash in between leaves neither marker,
            # which readers also take as incomplete — never both.
            os.unlink(self.path / INCOMPLETE_FILE)
            os.rename(tmp, self.path / COMPLETE_FILE)
            dfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dfd)
            os.close(dfd)
        except OSError as e:
            raise ImageWriteError(f"cannot finish image at {self.path}: {e.strerror}",
                                  path=self.path) from None

    def abandon(self, reason: str, *, keep_marker: bool = True) -> None:
        """A failed dump: remove the partial records and pages (gigabytes, maybe, of
        no use to anyone) and leave only the INCOMPLETE marker, with the reason.
        With `keep_marker=False` (nothing was touched: a refusal) leave nothing:
        the directory is removed if this writer made it, else left empty as given."""
        for fd in (self._fd, self.pages.fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = -1
        self.pages.fd = -1
        self._remove(keep_marker=keep_marker)
        if keep_marker:
            try:
                with open(self.path / INCOMPLETE_FILE, "w") as f:
                    f.write(f"dump failed: {reason}\n")
            except OSError:
                pass

    def _remove(self, *, keep_marker: bool) -> None:
        """Best effort: every file a dump writes (but the marker, if kept)."""
        names = [RECORDS_FILE, PAGES_FILE, COMPLETE_FILE + ".tmp", COMPLETE_FILE]
        for name in names + ([] if keep_marker else [INCOMPLETE_FILE]):
            try:
                (self.path / name).unlink(missing_ok=True)
            except OSError:
                pass
        if keep_marker:
            return
        try:
            if self.created:
                os.rmdir(self.path)
            elif self._given_mode is not None:
                os.chmod(self.path, self._given_mode)
        except OSError:
            pass


class ImageReader:
    """Opens an image and validates everything but the page contents.

    `verify_pages(runs)` checks page digests; restore calls it before it
    creates any process.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ImageError(f"no image at {self.path}: not a directory", path=self.path)
        if not (self.path / COMPLETE_FILE).exists():
            why = ""
            inc = self.path / INCOMPLETE_FILE
            if inc.exists():
                why = " (" + inc.read_text(errors="replace").strip() + ")"
            elif not (self.path / RECORDS_FILE).exists():
                raise ImageError(f"no image at {self.path}: {RECORDS_FILE} is missing", path=self.path)
            raise ImageError(f"image at {self.path} is incomplete{why}; it cannot be used", path=self.path)
        try:
            marker = json.loads((self.path / COMPLETE_FILE).read_text())
            self._expect_digest = int(marker["records_xxh3"])
            self.pages_size = int(marker["pages_size"])
            if not (0 <= self._expect_digest < 1 << 64 and 0 <= self.pages_size < 1 << 48):
                raise ValueError("out of range")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, OverflowError, OSError):
            raise ImageError(f"image at {self.path}: the COMPLETE marker is damaged",
                             path=self.path) from None
        try:
            data = (self.path / RECORDS_FILE).read_bytes()
            actual_pages = os.stat(self.path / PAGES_FILE).st_size
        except OSError as e:
            raise ImageError(f"image at {self.path}: cannot read it: {e.strerror} ({e.filename})",
                             path=self.path) from None
        if actual_pages != self.pages_size:
            raise ImageError(
                f"image at {self.path}: {PAGES_FILE} holds {actual_pages} bytes, "
                f"the image says {self.pages_size} (truncated or damaged)", path=self.path
            )
        try:
            self.header, self.records = self._parse(data)
        except ImageError as e:  # a record that does not decode: codec.py knows no path
            if e.path is None:
                e.path = os.fspath(self.path)
            raise
        if _digest(data) != self._expect_digest:
            raise ImageError(f"image at {self.path}: {RECORDS_FILE} does not match its COMPLETE digest",
                             path=self.path)

    def _parse(self, data: bytes):
        where = f"image at {self.path}"
        if len(data) < len(MAGIC) + 8 or not data.startswith(MAGIC):
            raise ImageError(f"{where} is not a pyckpt image (bad magic)", path=self.path)
        version, hlen = struct.unpack_from("<II", data, len(MAGIC))
        if version != FORMAT_VERSION:
            raise ImageError(
                f"{where} has format version {version}; this pyckpt reads version {FORMAT_VERSION}",
                path=self.path
            )
        pos = len(MAGIC) + 8
        if pos + hlen + 8 > len(data):
            raise ImageError(f"{where}: header runs past the end of {RECORDS_FILE} (truncated)",
                             path=self.path)
        body = data[pos : pos + hlen]
        (dig,) = _DIGEST.unpack_from(data, pos + hlen)
        if dig != _digest(body):
            raise ImageError(f"{where}: header checksum mismatch (corrupted)", path=self.path)
        header = decode(Header, self._json(body, "header"), "header")
        pos += hlen + 8
        records = []
        while True:
            if pos + _REC_HEAD.size > len(data):
                raise ImageError(f"{where}: {RECORDS_FILE} ends without an end record (truncated)",
                                 path=self.path)
            type_id, zero, length = _REC_HEAD.unpack_from(data, pos)
            if zero != 0 or length > MAX_RECORD or pos + _REC_HEAD.size + length + 8 > len(data):
                raise ImageError(f"{where}: record #{len(records)} at byte {pos} has a bad length or header",
                                 path=self.path)
            head = data[pos : pos + _REC_HEAD.size]
            body = data[pos + _REC_HEAD.size : pos + _REC_HEAD.size + length]
            (dig,) = _DIGEST.unpack_from(data, pos + _REC_HEAD.size + length)
            if dig != _digest(head, body):
                raise ImageError(f"{where}: record #{len(records)} at byte {pos} fails its checksum (corrupted)",
                                 path=self.path)
            pos += _REC_HEAD.size + length + 8
            payload = self._json(body, f"record #{len(records)}")
            if type_id == END_RECORD:
                if payload != {"records": len(records)}:
                    raise ImageError(f"{where}: end record does not match the record count", path=self.path)
                if pos != len(data):
                    raise ImageError(f"{where}: {len(data) - pos} stray bytes after the end record",
                                     path=self.path)
                return header, records
            cls = RECORD_TYPES.get(type_id)
            if cls is None:
                raise ImageError(f"{where}: record #{len(records)} has unknown type {type_id}",
                                 path=self.path)
            records.append(decode(cls, payload, f"{cls.__name__} (record #{len(records)})"))

    def _json(self, body: bytes, what: str):
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ImageError(f"image at {self.path}: {what} is not valid JSON", path=self.path) from None

    def of_type(self, cls) -> list:
        return [r for r in self.records if isinstance(r, cls)]

    def one(self, cls):
        found = self.of_type(cls)
        if len(found) != 1:
            raise ImageError(f"image at {self.path}: expected one {cls.__name__}, found {len(found)}",
                             path=self.path)
        return found[0]

    def verify_pages(self, runs: Iterator[tuple[int, int, int]], progress=None) -> None:
        """Check each (offset, length, digest) run of pages.img.

        The file is mapped rather than read: hashing page-cache pages in place
        costs about half as much as copying them out first.
        """
        runs = list(runs)
        for offset, length, _ in runs:
            if offset < 0 or length <= 0 or offset % PAGE or length % PAGE or offset + length > self.pages_size:
                raise ImageError(f"image at {self.path}: a page run lies outside {PAGES_FILE}",
                                 path=self.path)
        if not runs or self.pages_size == 0:
            return
        try:
            with open(self.path / PAGES_FILE, "rb") as f:
                mapping = mmap.mmap(f.fileno(), self.pages_size, mmap.MAP_SHARED, mmap.PROT_READ)
        except (OSError, ValueError) as e:
            raise ImageError(f"image at {self.path}: cannot map {PAGES_FILE}: {e}", path=self.path) from None
        try:
            mapping.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(mapping)
            try:
                for offset, length, digest in runs:
                    if xxhash.xxh3_64_intdigest(view[offset : offset + length]) != digest:
                        raise ImageError(
                            f"image at {self.path}: pages at offset {offset} of {PAGES_FILE} "
                            "fail their checksum (corrupted)", path=self.path
                        )
                    if progress:
                        progress(length)
            finally:
                view.release()
        finally:
            mapping.close()


class ImageView:
    """The records of one process of an image (a process tree holds several),
    with the reader's lookups; kinds restore a process from its view."""

    def __init__(self, reader: ImageReader, records: list):
        self.reader = reader
        self.path = reader.path
        self.header = reader.header
        self.pages_size = reader.pages_size
        self.records = records

    def of_type(self, cls) -> list:
        """Records of `cls`: this process's own for per-process kinds (marked
        PER_PROCESS), the whole image's for objects saved once and shared."""
        source = self.records if getattr(cls, "PER_PROCESS", False) else self.reader.records
        return [r for r in source if isinstance(r, cls)]

    one = ImageReader.one
