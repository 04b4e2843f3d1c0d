"""pyckpt: checkpoint and restore running Linux processes, from Python.

Layout of the package (see DESIGN.md in the project's shared notes):

  errors.py     typed exceptions; each has an exit code for the CLI
  proc/         read-only parsers of /proc text
  ptrace_ops.py the one place ptrace requests are made
  seize.py      freeze/thaw: the only module that stops or resumes tasks
  inject/       run syscalls inside a stopped task (with a guaranteed cure)
  kinds/        one module per kind of state: record, dump and restore together
  image/        the on-disk format: header, typed records, page store, checks
  dumper.py     orchestration of a dump (not dump.py: that name is the API function)
  restorer.py   orchestration of a restore, stage by stage
  cli.py        the `pyckpt` command

The public API is what `__all__` lists; tests/test_api.py keeps it honest.
"""

from __future__ import annotations

__version__ = "0.1.0"

import os
from pathlib import Path

from .errors import (
    AlreadyTracedError,
    DumpError,
    FileChangedError,
    ImageError,
    ImageWriteError,
    Interrupted,
    KernelMismatchError,
    MultiThreadedError,
    NoSuchProcessError,
    PidInUseError,
    PtraceError,
    PyckptError,
    RestoreError,
    UnsupportedError,
    UnsupportedFdError,
    UnsuitableProcessError,
)

__all__ = [
    "dump",
    "restore",
    "open_image",
    "Image",
    "PyckptError",
    "NoSuchProcessError",
    "UnsuitableProcessError",
    "MultiThreadedError",
    "AlreadyTracedError",
    "UnsupportedError",
    "UnsupportedFdError",
    "ImageError",
    "ImageWriteError",
    "PidInUseError",
    "FileChangedError",
    "KernelMismatchError",
    "RestoreError",
    "DumpError",
    "PtraceError",
    "Interrupted",
]


class Image:
    """A complete image on disk: its header and records, validated on open.

    `verify()` also checks every page digest (what `pyckpt check` does).
    """

    def __init__(self, path):
        from .image import ImageReader
        from .kinds import load_all

        load_all()
        self.path = Path(path)
        self._reader = ImageReader(self.path)
        self.header = self._reader.header
        self.records = self._reader.records
        self.dump_stats = None

    @property
    def pid(self) -> int:
        return self.header.root_pid

    def verify(self, progress=None) -> None:
        from .kinds import memory

        self._reader.verify_pages(memory.page_runs(self._reader), progress)

    def summary(self) -> dict:
        from .image import encode
        from .kinds import files, memory

        vmas = self._reader.of_type(memory.VmaRecord)
        fds = self._reader.of_type(files.FdRecord)
        descs = {f.id: f for f in self._reader.of_type(files.FileRecord)}
        sharing: dict[int, list[int]] = {}
        for r in fds:
            sharing.setdefault(r.file_id, []).append(r.fd)
        return {
            "path": str(self.path),
            "header": encode(self.header),
            "pages_bytes": sum(p.npages for v in vmas for p in v.pages) * 4096,
            "vmas": [
                {"start": v.start, "end": v.end, "prot": v.prot, "shared": v.shared,
                 "kind": v.kind, "name": v.name,
                 "stored_bytes": sum(p.npages for p in v.pages) * 4096}
                for v in vmas
            ],
            "fds": [
                {"fd": r.fd, "kind": descs[r.file_id].kind, "path": descs[r.file_id].file.path,
                 "flags": descs[r.file_id].flags, "pos": descs[r.file_id].pos,
                 "cloexec": r.cloexec,
                 "shared_with": [x for x in sharing[r.file_id] if x != r.fd]}
                for r in fds
            ],
            "records": [type(r).__name__ for r in self.records],
        }


def dump(pid: int, path: str | os.PathLike, *, kill: bool = False, progress=None) -> Image:
    """Dump the running process `pid` into the new or empty directory `path`.

    The process is stopped only while pyckpt reads it and then carries on as
    before — unless `kill=True`, which kills it once the image is complete on
    disk.  Returns the `Image`.  Raises a `PyckptError` subclass when the
    process cannot be dumped; the target is then left running as it was and
    the directory is marked INCOMPLETE.
    """
    from .dumper import dump as _dump

    return _dump(pid, path, kill=kill, progress=progress)


def restore(path: str | os.PathLike, *, progress=None):
    """Re-create the process saved at `path`, with its PID; returns a `psutil.Process`.

    The restored process is a child of the caller (reap it when it ends).
    Raises `ImageError` for a bad image, `PidInUseError` when the PID is
    taken, `FileChangedError` when a file differs from the dump; nothing is
    left behind on failure.
    """
    from .restorer import restore as _restore

    return _restore(path, progress=progress)


def open_image(path: str | os.PathLike) -> Image:
    """Open and validate an image (records and checksums; pages with `.verify()`)."""
    return Image(path)
