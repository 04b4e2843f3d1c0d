"""What a kind sees while it dumps or restores."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from typing import Callable

from .. import proc
from ..image import ImageReader, PageStoreWriter
from ..inject import Injector
from ..progress import Progress


@dataclass
class DumpContext:
    pid: int
    stat: proc.ProcStat
    status: dict[str, str]
    maps: list[proc.MapEntry]
    smaps_flags: dict[int, list[str]]
    inj: Injector
    scratch: int  # one read-write page inside the target for injected calls
    pages: PageStoreWriter
    progress: Progress
    options: "DumpOptions" = None  # type: ignore[assignment]
    threads: dict[int, Injector] = field(default_factory=dict)  # every thread, the leader first
    tree: list[int] = field(default_factory=list)  # every process of the image, parents first
    # objref for objects below open file descriptions (a pipe's buffer, a
    # deleted file's content...): kernel identity -> the id it was saved under
    objects: dict[object, int] = field(default_factory=dict)
    precopy: object = None  # precopy.PreCopy when the root's memory was copied while it ran


@dataclass
class DumpOptions:
    """What the user may tune about a dump."""

    max_deleted_size: int = 64 << 20  # content of a deleted-but-open file kept in the image
    precopy: bool = False  # copy memory while the target runs; at the freeze only what changed


@dataclass
class RestoreOptions:
    """What the user may tune about a restore."""

    # fd number -> an fd of the caller to put there instead of a file pyckpt
    # cannot re-create (a pipe or terminal of a process outside the image)
    fds: dict[int, int] = field(default_factory=dict)
    inherit_stdio: bool = False  # use the caller's 0/1/2 for such fds
    allow_changed_files: bool = False  # accept files that changed since the dump
    deleted_dir: str | None = None  # where deleted files are re-created (default: where they were)
    new_pidns: bool = False  # restore into a fresh PID namespace (the image's PIDs inside it)
    new_netns: bool = False  # ... and/or a fresh network namespace (its own ports, loopback)


@dataclass
class RestoreContext:
    image: ImageReader
    pid: int  # the new process as pyckpt sees it (ptrace, /proc); set once it exists
    progress: Progress
    options: RestoreOptions = field(default_factory=RestoreOptions)
    image_pid: int = 0  # the PID the image had, which the process sees as its own
    tid_map: dict[int, int] = field(default_factory=dict)  # image TID -> TID as pyckpt sees it
    init_pid: int = 0  # with new_pidns: the namespace's init (the root's parent)
    zombie: object = None  # the ZombieRecord when this process of the tree had exited
    pids: dict[int, int] = field(default_factory=dict)  # image PID -> PID as pyckpt sees it,
    #                                                     for every process of the image (shared)
    inj: Injector | None = None  # the leader's
    threads: dict[int, Injector] = field(default_factory=dict)  # the other threads'
    scratch: int = 0
    # File descriptors pyckpt opened for the new task.  The task is cloned
    # from pyckpt, so it inherits them at the same numbers: no path has to
    # be opened from inside it.  key -> fd number (in pyckpt and the task).
    passed: dict[object, int] = field(default_factory=dict)
    lowest_passed: int = 0  # every passed fd is >= this; every image fd is below
    deferred: list[Callable[[], None]] = field(default_factory=list)

    def pass_fd(self, key: object, opener: Callable[[], int]) -> int:
        """Open a file once (cached by key) and hand it to the new task."""
        if key not in self.passed:
            fd = opener()
            try:
                moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, self.lowest_passed)
            finally:
                os.close(fd)
            self.passed[key] = moved
        return self.passed[key]

    def close_passed(self) -> None:
        for fd in self.passed.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.passed.clear()

