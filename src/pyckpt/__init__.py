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
    LockConflictError,
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
    "network_namespace",
    "Image",
    "PyckptError",
    "NoSuchProcessError",
    "UnsuitableProcessError",
    "AlreadyTracedError",
    "UnsupportedError",
    "UnsupportedFdError",
    "ImageError",
    "ImageWriteError",
    "PidInUseError",
    "FileChangedError",
    "KernelMismatchError",
    "LockConflictError",
    "RestoreError",
    "DumpError",
    "PtraceError",
    "Interrupted",
]


class Image:
    """A complete image on disk: its header and records, validated on open.

    `verify()` also checks that the records fit together and every page
    digest (what `pyckpt check` does).
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
        from .kinds import check_consistency, stored_runs, task

        for view in task.process_views(self._reader):
            if not task.is_zombie(view):
                check_consistency(view)
        self._reader.verify_pages(stored_runs(self._reader), progress)

    def summary(self) -> dict:
        """What the image holds, per process (the root's memory and fds also at the top)."""
        from .image import encode
        from .kinds import files, locks, memory, shmem, task, thread

        objects = {(o.dev, o.ino): o for o in self._reader.of_type(shmem.ShmemRecord)}
        mapped_by: dict[int, list] = {o.id: [] for o in objects.values()}

        def one_process(view) -> dict:
            if task.is_zombie(view):
                z = view.one(task.ZombieRecord)
                return {"pid": z.pid, "ppid": z.ppid, "zombie_status": z.status, "pgid": None,
                        "sid": None, "threads": [], "pages_bytes": 0, "vmas": [], "fds": [],
                        "locks": []}
            rec = view.one(task.TaskRecord)
            vmas = view.of_type(memory.VmaRecord)
            shm = {v.start: objects[(v.file.dev, v.file.ino)].id
                   for v in vmas if v.kind == shmem.SharedAnonymous.kind}
            for v in vmas:
                if v.start in shm:
                    mapped_by[shm[v.start]].append([rec.pid, v.start, v.offset])
            return {
                "pid": rec.pid, "ppid": rec.ppid, "pgid": rec.pgid, "sid": rec.sid, "zombie_status": None,
                "threads": [t.tid for t in thread.thread_records(view)],
                "pages_bytes": sum(p.npages for v in vmas for p in v.pages) * 4096,
                "vmas": [
                    {"start": v.start, "end": v.end, "prot": v.prot, "shared": v.shared,
                     "kind": v.kind, "name": v.name, "offset": v.offset,
                     "shared_memory": shm.get(v.start),
                     "stored_bytes": sum(p.npages for p in v.pages) * 4096}
                    for v in vmas
                ],
                "fds": files.summary(view),
                "locks": [
                    {"fd": lk.fd, "path": lk.path,
                     "lock": locks.lock_in_words(lk.kind, lk.type, lk.start, lk.end)}
                    for lk in view.of_type(locks.FileLockRecord)
                ],
            }

        processes = [one_process(v) for v in task.process_views(self._reader)]
        root = processes[0]
        return {
            "path": str(self.path),
            "header": encode(self.header),
            "pages_bytes": sum(p["pages_bytes"] for p in processes)
            + sum(r.stored for o in objects.values() for r in o.runs),
            "processes": processes,
            # shared anonymous memory objects, each saved once: [pid, start, offset] of its windows
            "shared_memory": [
                {"id": o.id, "size": o.size, "stored_bytes": sum(r.stored for r in o.runs),
                 "mapped_by": mapped_by[o.id]}
                for o in objects.values()
            ],
            "vmas": root["vmas"],
            "fds": root["fds"],
            "locks": root["locks"],
            "records": [type(r).__name__ for r in self.records],
        }


def dump(pid: int, path: str | os.PathLike, *, kill: bool = False,
         max_deleted_size: int = 64 << 20, precopy: bool = False, progress=None) -> Image:
    """Dump the running process `pid` into the new or empty directory `path`.

    The process is stopped only while pyckpt reads it and then carries on as
    before — unless `kill=True`, which kills it once the image is complete on
    disk.  Returns the `Image`.  Raises a `PyckptError` subclass when the
    process cannot be dumped; the target is then left running as it was and
    the directory is marked INCOMPLETE.  The content of deleted-but-open
    files is kept in the image up to `max_deleted_size` bytes each.

    With `precopy=True` the process's private memory is copied while it keeps
    running (its writes tracked with userfaultfd write-protect), and the
    freeze copies only what it wrote meanwhile: a much shorter stop for a
    large process that changes little (`Image.dump_stats.freeze`).
    """
    from .dumper import dump as _dump
    from .kinds.context import DumpOptions

    return _dump(pid, path, kill=kill, progress=progress,
                 options=DumpOptions(max_deleted_size=max_deleted_size, precopy=precopy))


def restore(path: str | os.PathLike, *, fds: dict | None = None, inherit_stdio: bool = False,
            allow_changed_files: bool = False, deleted_dir: str | os.PathLike | None = None,
            new_pidns: bool = False, new_netns: bool = False, progress=None):
    """Re-create the process saved at `path`, with its PID; returns a `psutil.Process`.

    The restored process is a child of the caller (reap it when it ends).
    Raises `ImageError` for a bad image, `PidInUseError` when the PID is
    taken, `FileChangedError` when a file differs from the dump (unless
    `allow_changed_files`); nothing is left behind on failure.

    Files pyckpt cannot re-create because they belonged to something outside
    the image (a terminal, a pipe to another process) need a replacement:
    `fds={fd_number: file_or_fd}`, or `inherit_stdio=True` to give fds 0-2
    the caller's own stdio.  Deleted-but-open files are re-created next to
    where they were, or in `deleted_dir`, and unlinked again.

    With `new_pidns=True` the process is restored into a fresh PID namespace
    where it keeps the PIDs of the image, so any number of copies of one
    image can run at once; the returned `psutil.Process` shows it from the
    caller's namespace.  Its parent is then the namespace's init (a small
    process pyckpt adds as PID 1, a child of the caller, which exits when the
    restored process has ended).

    With `new_netns=True` it gets a fresh network namespace too, with only a
    loopback interface: copies of a server listen on the same ports side by
    side, and its connections within the image come back inside it.  Reach a
    copy with `pyckpt.network_namespace(pid)`.
    """
    from .kinds.context import RestoreOptions
    from .restorer import restore as _restore

    opts = RestoreOptions(
        fds={n: (f if isinstance(f, int) else f.fileno()) for n, f in (fds or {}).items()},
        inherit_stdio=inherit_stdio,
        allow_changed_files=allow_changed_files,
        deleted_dir=None if deleted_dir is None else os.fspath(deleted_dir),
        new_pidns=new_pidns,
        new_netns=new_netns,
    )
    return _restore(path, progress=progress, options=opts)


def network_namespace(pid: int):
    """Context manager: the calling thread inside the network namespace of process
    `pid` (a copy restored with `new_netns=True`).  Sockets made inside the block
    belong to that namespace and keep working after it::

        with pyckpt.network_namespace(copy.pid):
            conn = socket.create_connection(("127.0.0.1", 8080))
    """
    from .netns import entered

    return entered(pid)


def open_image(path: str | os.PathLike) -> Image:
    """Open and validate an image (records and checksums; pages with `.verify()`)."""
    return Image(path)
