"""pyckpt: checkpoint and restore running Linux processes, from Python.

Example (as root; `pid` is a running process)::

    import pyckpt

    try:
        image = pyckpt.dump(pid, "img")      # stop it, save it, let it run on
    except pyckpt.NoSuchProcessError as e:
        raise SystemExit(f"process {e.pid} is gone")
    except pyckpt.PyckptError as e:          # any other refusal, one line saying why
        raise SystemExit(f"cannot dump: {e}")
    print(image.pid, image.header.comm, f"stopped {image.dump_stats.freeze:.3f} s")

    try:
        proc = pyckpt.restore("img")         # the same PID again, as your child
    except pyckpt.PidInUseError as e:        # ... not while the original runs
        print(f"PID {e.pid} is taken; restoring a copy beside it")
        proc = pyckpt.restore("img", new_pidns=True,  # own PID namespace: any number of copies
                              inherit_stdio=True)  # a terminal at fds 0-2: yours instead
    print(proc.pid, proc.name())             # a psutil.Process
    proc.terminate()
    proc.wait()

    image = pyckpt.open_image("img")         # header, records and checksums checked
    image.verify()                           # ... and every page
    print(image.summary()["pages_bytes"], "bytes of memory")

`dump(pid, path, kill=True)` ends the process once the image is complete on
disk; `restore()` takes replacements for files outside the image (`fds=`,
`inherit_stdio=`), `allow_changed_files=`, `new_netns=` (reach such a copy
with `network_namespace(pid)`), `port_map=` (its listeners on other ports); `dump(..., precopy=True)` copies memory while
the process runs, for a short freeze.  `open_image(path).check_restore()`
lists what would stop a restore here and now, with the options that avoid
it.  `progress=True`/`False` draws a progress bar or not (default: on a
terminal).  See `dump`, `restore` and `Image` below.

Errors: every failure is a `PyckptError` subclass whose message says what
failed, on which object, and what to do; a failed dump leaves the process
running as before, a failed restore leaves no process behind.  `e.exit_code`
is what the `pyckpt` command exits with, and each class carries what it is
about (documented in each class):

  NoSuchProcessError      .pid
  UnsuitableProcessError  .pid  (AlreadyTracedError also .tracer)
  UnsupportedError        .pid  (UnsupportedFdError also .fd .kind .target)
  ImageError              .path (the image directory)
  ImageWriteError         .path (the image directory)
  PidInUseError           .pid
  FileChangedError        .path .what
  LockConflictError       .pid .fd .path .lock .holder .holder_pids (a RestoreError)
  PortInUseError          .protocol .address .port (a RestoreError)
  SocketPathInUseError    .path (a unix socket's path or @name is taken; a RestoreError)
  PtraceError             .pid .errno .what
  ResourceError           .resource .limit .fd .errno (out of fds or memory: not the image)
  PrivilegeError          .missing .operation (not root, a capability missing)
  UntrustedImageError     .path .owner .wants (an ordinary user's image asks for more)
  RemoteCallError         .pid .errno (a syscall injected into a task failed)
  InternalError           .operation (a bug in pyckpt; the original is `__cause__`)
  KernelMismatchError, RestoreError, DumpError: the message (and the OSError,
  if any, as `__cause__`)

A SIGINT/SIGTERM during dump() or restore() comes out as KeyboardInterrupt
once the work is undone; `Interrupted` is the `pyckpt` command's exit code
for it (130).

Layout of the package, for developers:

  errors.py     typed exceptions; each has an exit code for the CLI
  proc/         read-only parsers of /proc text
  ptrace_ops.py the one place ptrace requests are made
  seize.py      freeze/thaw: the only module that stops or resumes tasks
  inject/       run syscalls inside a stopped task (with a guaranteed cure);
                inject/nr.py: every syscall number pyckpt uses
  arch.py       the machine's facts (the page size)
  kinds/        one module per kind of state: record, dump and restore together
                (docs/adding-a-kind.md: how to add one)
  image/        the on-disk format: header, typed records, page store, checks
  dumper.py     orchestration of a dump (not dump.py: that name is the API function)
  restorer.py   orchestration of a restore, stage by stage
  templates.py  many copies of one image (pyckpt.template); fastcopy.py forks
                them from the image restored once into a stopped template
  precopy.py    pre-copy: memory copied while the target runs (precopy=True)
  lazy.py       lazy restore (lazy=True): pages on first touch from a handler process
  netns.py      network namespaces of restored copies (new_netns=True)
  limits.py     pyckpt's own RLIMIT_NOFILE during the work; out of fds/memory
  privileges.py root and the capabilities a dump or restore needs, checked first
  trust.py      who could have written an image, what an ordinary user's may ask
  _native/      the C helpers (cffi), built at install
  progress.py   the progress bar (tqdm, on a terminal only)
  signals.py    SIGINT/SIGTERM noted during the work, acted on at safe points
  cli.py        the `pyckpt` command (loads only what its command needs: start-up)
  _dataclass.py the @dataclass of pyckpt's classes: the standard's classes, built faster

The public API is what `__all__` lists; tests/test_api.py keeps it honest.
"""

from __future__ import annotations

__version__ = "0.1.0"

import os

from .errors import (
    AlreadyTracedError,
    DumpError,
    FileChangedError,
    ImageError,
    ImageWriteError,
    InternalError,
    Interrupted,
    KernelMismatchError,
    LockConflictError,
    NoSuchProcessError,
    PidInUseError,
    PortInUseError,
    SocketPathInUseError,
    PrivilegeError,
    PtraceError,
    PyckptError,
    RemoteCallError,
    ResourceError,
    RestoreError,
    UnsupportedError,
    UnsupportedFdError,
    UnsuitableProcessError,
    UntrustedImageError,
)

# Loaded when first asked for (a command that does not use them starts without them).
_LAZY = {"Fix": "problems", "RestoreProblem": "problems", "Template": "templates"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "dump",
    "restore",
    "open_image",
    "network_namespace",
    "template",
    "Template",
    "Image",
    "RestoreProblem",
    "Fix",
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
    "PortInUseError",
    "SocketPathInUseError",
    "RestoreError",
    "DumpError",
    "PtraceError",
    "ResourceError",
    "PrivilegeError",
    "UntrustedImageError",
    "RemoteCallError",
    "InternalError",
    "Interrupted",
]


def _pathtext(path) -> str:
    """str(pathlib.Path(path)), without pathlib (image/__init__.py, not imported here)."""
    from .image import _pathtext

    return _pathtext(path)


class Image:
    """A complete image on disk, validated when opened: what `dump()` returns
    and `open_image()` opens.  `verify()` checks the rest (every page);
    `summary()` is its content as plain data.

    Opening reads only regular files of the image directory (never through a
    symbolic link, never a FIFO or a device), of bounded size, and checks
    every byte: magic, version, lengths, checksums, field types, and that the
    records make one process tree without a dangling reference.  Anything
    else is an `ImageError` naming the directory.

    Attributes:
        path: the image directory (a `pathlib.Path`).
        pid: the PID of the image's (first) process when it was dumped.
        header: what the image says about itself, a dataclass with
            `format_version`, `pyckpt_version`, `kernel_release` and `machine`
            (`uname -r` and `uname -m` of the machine that dumped it),
            `created` (a `time.time()` timestamp), `root_pid` (= `pid`) and
            `comm` (the process's name, as in /proc/PID/comm).
        records: every record of the image, in order: dataclasses of the image
            format, one type per kind of state (`TaskRecord`, `VmaRecord`,
            `FdRecord`, ...; `type(r).__name__` names them).  For inspection:
            their fields follow the format version, not a stable API.
        dump_stats: for an image `dump()` has just written, where its time went
            (a `pyckpt.dumper.DumpStats`): `freeze` (seconds the process was
            stopped), `total` (seconds of the whole dump), `pages_bytes` (bytes
            of memory stored), `precopy_reused` (bytes copied while the process
            ran and kept, with `precopy=True`), `precopy_off` (why pre-copy kept
            nothing, else ""), `injected_calls` (syscalls run inside the
            process), `phases` (a dict: phase name -> seconds), `unreaped`
            (kill=True: {killed PID: the parent that has not reaped it}) and
            `late_error` (what failed once the image was complete, in words,
            e.g. a kill that failed half-way and the processes it left
            running; else "": the image stands either way).  None for an
            image opened with `open_image()`.
    """

    def __init__(self, path):
        self._where = _pathtext(path)
        self.dump_stats = None
        self._read = None
        self.header = self._reader.header  # opened and checked now

    @classmethod
    def _written(cls, path, header) -> "Image":
        """The image dump() has just written: its records are read and checked when
        first asked for (a dump does not pay for reading back what it wrote)."""
        self = cls.__new__(cls)
        self._where, self.header, self.dump_stats, self._read = _pathtext(path), header, None, None
        return self

    @property
    def path(self):
        """The image directory, a pathlib.Path (made when first asked: pathlib is not in
        a command's start-up)."""
        path = self.__dict__.get("_path")
        if path is None:
            from pathlib import Path

            path = self._path = Path(self._where)
        return path

    @property
    def _reader(self):
        if self._read is None:
            from .errors import ImageError, boundary
            from .image import ImageReader  # (loads the kinds the image uses, no other)
            from .limits import fd_room, translated

            with boundary(f"reading the image at {self._where}", ImageError), fd_room(), \
                    translated(f"reading the image at {self._where}"):
                self._read = ImageReader(self._where)
        return self._read

    @property
    def records(self) -> list:
        """Every record of the image, in order."""
        return self._reader.records

    @property
    def pid(self) -> int:
        """The PID of the image's (first) process when it was dumped."""
        return self.header.root_pid

    def verify(self, progress=None) -> None:
        """Check what opening the image did not: every page against its digest —
        what `pyckpt check` does (opening checked the records: bytes, checksums,
        and that they make one process tree).  Raises `ImageError` (with
        `.path`) at the first fault.  `progress` as for `dump()` (None, True,
        False), or a callable that is given the number of bytes checked, run by
        run.
        """
        from .errors import ImageError, boundary
        from .kinds import stored_runs
        from .limits import translated

        runs = stored_runs(self._reader)
        with boundary(f"verifying the image at {self._where}", ImageError), \
                translated(f"verifying the image at {self._where}"):  # out of memory: not a damage
            if callable(progress):
                self._reader.verify_pages(runs, progress)
                return
            with _progress(progress).bar(sum(length for _, length, _ in runs), "verify image") as bar:
                self._reader.verify_pages(runs, bar.update)

    def check_restore(self, *, fds: dict | None = None, inherit_stdio: bool = False,
                      allow_changed_files: bool | list[str] = False, deleted_dir: str | os.PathLike | None = None,
                      new_pidns: bool = False, new_netns: bool = False, trust_image: bool = False,
                      shell_job: bool = False, tcp_established: bool = False,
                      port_map: dict | None = None, progress=None) -> list[RestoreProblem]:
        """Could `restore(self.path, **options)` be done here and now?  Runs every check
        restore makes before it creates a process — restore's own validation, run to
        the end instead of stopping at the first problem, and then undone (nothing is
        created; a path in `fds` is not created either) — and returns every problem
        found, in the order restore meets them: restore raises the first one's
        `error`.  An empty list: a restore with these options gets past validation.

        Each `RestoreProblem` has `error` (the exception restore would raise:
        `PidInUseError`, `FileChangedError`, `KernelMismatchError`,
        `LockConflictError`, `RestoreError` for an fd outside the image or a port
        in use, ...) and `fixes`, the options each of which alone avoids it
        (`Fix`: `.option` the keyword, `.fd` for "fds", `.keyword` and `str()`
        the API and command-line spellings); no fixes when no option helps (a file
        that is gone, a lock someone holds, another kernel).  Takes restore()'s
        keywords; a damaged image raises `ImageError`.  The page checksums are
        verified too (as by `verify()`); `progress` as for `restore()`.

            for p in pyckpt.open_image("img").check_restore():
                print(p, "- avoided by:", " or ".join(f.keyword for f in p.fixes) or "nothing")
        """
        from .kinds.files import pinned_caller_fds
        from .limits import fd_room
        from .restorer import check

        opts = _restore_options(fds, inherit_stdio, allow_changed_files, deleted_dir, new_pidns, new_netns,
                                trust_image, shell_job, tcp_established, port_map)
        with fd_room(), pinned_caller_fds(opts) as opts:  # before any file is opened: see restore()
            return check(self._where, progress=_progress(progress), options=opts)

    def summary(self) -> dict:
        """What the image holds, as plain data (what `pyckpt show --json` prints).

        Keys: `path`; `header` (the header's fields); `pages_bytes` (bytes of
        memory stored, shared memory included); `processes`, one dict per
        process, the first process first: `pid`, `ppid`, `pgid`, `sid`,
        `threads` (TIDs), `zombie_status` (a zombie's exit status, else None),
        `pages_bytes` (memory stored in this image), `inherited_bytes` (kept in
        its parent images), `zero_bytes` (all-zero memory, not stored),
        `vmas`, `fds`, `locks`; `parent`: the parent of an incremental
        image (`path` as written, `resolved`, `depth`) or None;
        `inherited_bytes`: the processes' together; `shared_memory`: shared
        anonymous memory, each object saved once (`id`, `size`,
        `stored_bytes`, `mapped_by`: [pid, start, offset] of each window);
        `vmas`, `fds`, `locks`: the first process's again; `records`: the type
        name of every record.

        A vma: `start`, `end`, `prot`, `shared`, `kind`, `name`, `offset`,
        `shared_memory` (its object's id, or None), `stored_bytes`,
        `inherited_bytes`, `zero_bytes`.  An fd:
        `fd`, `kind`, `what`, `path`, `flags`, `pos`, `cloexec`, `file_id`,
        `shared_with` (the other fds of the process sharing its file).  A lock:
        `fd`, `path`, `lock` (in words).
        """
        from .image import encode
        from .kinds import files, loaded, memory, task, thread

        reader = self._reader  # (loads the kinds the image uses: the others have no records here)
        shmem, locks, tcpconn, sysvipc = map(loaded, ("shmem", "locks", "tcpconn", "sysvipc"))
        objects = {(o.dev, o.ino): o for o in reader.of_type(shmem.ShmemRecord)} if shmem else {}
        ipc = sysvipc.summary(reader) if sysvipc else []
        mapped_by: dict[int, list] = {o.id: [] for o in objects.values()}

        def one_process(view) -> dict:
            if task.is_zombie(view):
                z = view.one(task.ZombieRecord)
                return {"pid": z.pid, "ppid": z.ppid, "zombie_status": z.status, "pgid": None,
                        "sid": None, "threads": [], "pages_bytes": 0, "inherited_bytes": 0, "zero_bytes": 0,
                        "vmas": [], "fds": [],
                        "locks": []}
            rec = view.one(task.TaskRecord)
            vmas = view.of_type(memory.VmaRecord)
            shm = {v.start: objects[(v.file.dev, v.file.ino)].id
                   for v in vmas if shmem and v.kind == shmem.SharedAnonymous.kind}
            for v in vmas:
                if v.start in shm:
                    mapped_by[shm[v.start]].append([rec.pid, v.start, v.offset])
            return {
                "pid": rec.pid, "ppid": rec.ppid, "pgid": rec.pgid, "sid": rec.sid, "zombie_status": None,
                "threads": [t.tid for t in thread.thread_records(view)],
                "pages_bytes": sum(p.npages for v in vmas for p in v.pages if not (p.zero or p.image)) * 4096,
                "inherited_bytes": sum(p.npages for v in vmas for p in v.pages if p.image and not p.zero) * 4096,
                "zero_bytes": sum(p.npages for v in vmas for p in v.pages if p.zero) * 4096,
                "vmas": [
                    {"start": v.start, "end": v.end, "prot": v.prot, "shared": v.shared,
                     "kind": v.kind, "name": v.name, "offset": v.offset,
                     "shared_memory": shm.get(v.start),
                     "stored_bytes": sum(p.npages for p in v.pages if not (p.zero or p.image)) * 4096,
                     "inherited_bytes": sum(p.npages for p in v.pages if p.image and not p.zero) * 4096,
                     "zero_bytes": sum(p.npages for p in v.pages if p.zero) * 4096}
                    for v in vmas
                ],
                "fds": files.summary(view),
                "locks": [
                    {"fd": lk.fd, "path": lk.path,
                     "lock": locks.lock_in_words(lk.kind, lk.type, lk.start, lk.end)}
                    for lk in (view.of_type(locks.FileLockRecord) if locks else [])
                ],
            }

        processes = [one_process(v) for v in task.process_views(self._reader)]
        root = processes[0]
        from .image.chain import parent_record

        above = parent_record(self._reader)
        return {
            "path": self._where,
            "header": encode(self.header),
            # an incremental image: its parent image (`path` as written, relative to the
            # image; `resolved`; `depth`: images up the chain), else None; and the bytes
            # of memory kept in the images up the chain (`inherited_bytes`)
            "parent": None if above is None else {
                "path": above.path, "resolved": os.path.normpath(os.path.join(self._where, above.path)),
                "depth": above.depth},
            "inherited_bytes": sum(p["inherited_bytes"] for p in processes),
            "pages_bytes": sum(p["pages_bytes"] for p in processes)
            + sum(r.stored for o in objects.values() for r in o.runs) + sum(o["stored_bytes"] for o in ipc),
            "processes": processes,
            # shared anonymous memory objects, each saved once: [pid, start, offset] of its windows
            "shared_memory": [
                {"id": o.id, "size": o.size, "stored_bytes": sum(r.stored for r in o.runs),
                 "mapped_by": mapped_by[o.id]}
                for o in objects.values()
            ],
            # SysV shared memory segments (and a tree's own namespace's semaphore sets and
            # message queues): `what`, `detail`, `stored_bytes`
            "sysv_ipc": ipc,
            "vmas": root["vmas"],
            "fds": root["fds"],
            "locks": root["locks"],
            "records": [type(r).__name__ for r in self.records],
            # TCP connections to peers outside the image: count, established, half_closed,
            # restore (what a restore does with them, in words)
            "tcp_outside": (tcpconn.outside_summary(reader) if tcpconn else
                            dict(count=0, established=0, half_closed=0, closed=0, restore="")),
        }


def _progress(progress):
    """dump/restore/verify's `progress=` as a Progress: None (a bar when stderr
    is a terminal), True, False, or a Progress (what the CLI passes)."""
    from .progress import Progress

    if progress is None or isinstance(progress, bool):
        return Progress(progress)
    if isinstance(progress, Progress):
        return progress
    raise TypeError(f"progress must be True, False or None, not {type(progress).__name__}")


def dump(pid: int, path: str | os.PathLike, *, kill: bool = False,
         max_deleted_size: int = 64 << 20, precopy: bool = False, parent: str | os.PathLike | None = None,
         progress=None) -> Image:
    """Dump the running process `pid` into the new or empty directory `path`.

    The process is stopped only while pyckpt reads it and then carries on as
    before — unless `kill=True`, which kills it once the image is complete on
    disk.  Returns the `Image`.  Raises a `PyckptError` subclass when the
    process cannot be dumped; the target is then left running as it was and
    the directory is marked INCOMPLETE.  Once complete, though, the image is
    never removed: an error after that point (the kill failing, say) is
    returned in `image.dump_stats.late_error` instead of raised.  The content
    of deleted-but-open files is kept in the image up to `max_deleted_size`
    bytes each.

    With `precopy=True` the process's private memory is copied while it keeps
    running (its writes tracked with userfaultfd write-protect), and the
    freeze copies only what it wrote meanwhile: a much shorter stop for a
    large process that changes little (`Image.dump_stats.freeze`).

    With `parent=DIR` (an image of the same process, dumped earlier) the image is
    incremental: memory is compared with the parent's in 256 KiB pieces, and of
    a piece that changed only the pages (4 KiB) that differ are stored; the
    image names its parent (by a path
    relative to itself, and its identity) and a restore reads the rest from
    there, so the parent (and its own parents) must stay where they are.  With
    `precopy=True` too, the comparison is made while the process runs.  A bad
    parent raises `ImageError` before the process is touched.

    `progress=None` (the default) draws a progress bar on stderr when it is a
    terminal and the work lasts over a second; `True` always, `False` never
    (`restore()` and `Image.verify()` take the same).

    Errors: `NoSuchProcessError` (`.pid`), `UnsuitableProcessError` (`.pid`;
    a kernel thread, a zombie, a stopped process, pyckpt itself;
    `AlreadyTracedError` also `.tracer`), `UnsupportedError` (`.pid`;
    `UnsupportedFdError` also `.fd`, `.kind`), `ImageWriteError` (`.path`),
    `DumpError`, `PtraceError`.  SIGINT, SIGTERM, SIGHUP or SIGQUIT during
    the dump ends it as `KeyboardInterrupt`, the process running on.
    """
    from .dumper import dump as _dump
    from .kinds.context import DumpOptions
    from .limits import fd_room, translated

    options = DumpOptions(max_deleted_size=max_deleted_size, precopy=precopy,
                          parent=None if parent is None else os.fspath(parent))
    progress = _progress(progress)
    with fd_room(), translated(f"dumping process {pid} (it was left running as before)"):
        return _dump(pid, path, kill=kill, progress=progress, options=options)


def restore(path: str | os.PathLike, *, fds: dict | None = None, inherit_stdio: bool = False,
            allow_changed_files: bool | list[str] = False, deleted_dir: str | os.PathLike | None = None,
            new_pidns: bool = False, new_netns: bool = False, trust_image: bool = False,
            shell_job: bool = False, tcp_established: bool = False, port_map: dict | None = None,
            progress=None, _process=True, lazy: bool | str = False):
    """Re-create the process saved at `path`, with its PID; returns a `psutil.Process`.

    The restored process is a child of the caller (reap it when it ends).
    Everything is checked before any process is made (but the page digests of
    a big image, 16 MiB of pages or more, checked while its memory is read in and
    before the process runs; a bad one kills what was made): a bad image raises
    `ImageError`; then whatever stops a restore here and now — a PID in use
    (`PidInUseError`), a file that differs from the dump (`FileChangedError`,
    unless `allow_changed_files`: True for any file, or a list of paths or
    globs — a glob without "/" matches the file's name; a log the process only
    appends to, O_APPEND, may grow without it), an fd outside the image with
    nothing to put there, a port in use (`RestoreError`) — raises the first such
    problem; `Image.check_restore()` lists them all, with the options that avoid
    each.  Nothing is left behind on failure.

    `fds={n: f}` gives the restored process `f` instead of the file its fd `n`
    had, whatever that was (a regular file such as a log, a pipe, a socket,
    a terminal): it is how a harness gives every copy its own output.  `n` is
    an fd of the image's (first) process; `f` is an open fd (int), an object
    with `fileno()` (a file, a socket), or a path (str, bytes, os.PathLike)
    opened with the access mode fd `n` had (created, mode 0644, and appended
    to when that was writing).  What fd `n` had is replaced wherever the
    process tree shared it — fds dup'ed from it (`2>&1`), the stdout children
    inherited — unless such an fd of the first process has its own entry in
    `fds`: `fds={1: log}` puts both stdout and a shared stderr into `log`,
    `fds={1: out, 2: err}` splits them.  A replaced file is not opened, so
    not checked for changes.  The caller keeps its own `f` (pyckpt uses a
    copy, made as restore() starts: an fd closed then stays refused even if
    its number is reused meanwhile).  A wrong type is a `TypeError` naming the
    fd; an fd number the image does not have, a closed fd or a path that
    cannot be opened is a `RestoreError`.

    Files pyckpt cannot re-create because they belonged to something outside
    the image (a terminal, a pipe to another process) need a replacement
    (`fds=`), or `inherit_stdio=True` to give fds 0-2 the caller's own
    stdio.  Deleted-but-open files are re-created next to where they were,
    or in `deleted_dir`, and unlinked again.

    `shell_job=True` restores a process that ran on a terminal outside the
    image (started from a shell) onto the caller's terminal, as a job of the
    caller's session in the terminal's foreground: every fd that was such a
    terminal gets a new open of the caller's controlling terminal, and input
    and Ctrl-C reach the process.  The caller waits for it (it is its child)
    and takes the foreground back (`pyckpt restore --shell-job` does both).
    A pseudo-terminal pair with both ends in the image needs no option (see
    kinds/tty.py).

    TCP connections to peers outside the image (clients of a server, a
    client's server) come back, by default, as connections the peer has reset
    (their unread data, then ECONNRESET; a half-closed one as it was), so
    servers drop them and clients reconnect.  `tcp_established=True` keeps
    them instead, after an in-place `dump(kill=True)` on the same host while
    the peers hold their ends (see kinds/tcpconn.py); one that cannot be kept
    comes back reset, and the returned process's `restore_warnings` (a list
    of str) says so.

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

    `port_map={old: new}` makes the image's TCP listeners on port `old` listen
    on `new` instead (on the same address), and its connections within the
    image follow (both ends' ports): a copy beside the original without a
    network namespace (with `new_pidns=True` for its PIDs).  A program that
    reads its listener's port again (getsockname) sees the new one; one that
    kept the old in a variable still says it.  Connections to peers outside
    the image keep their addresses (so, reset by default: their peers knew
    the old port).  A port the image does not
    listen on is a `RestoreError`; UDP ports are not mapped.

    Restore runs as root (else `PrivilegeError`, before anything is read) and
    does what the image says.  An image directory owned by another user than
    root (the directory or a file in it) restores only with what that user has:
    its user and group ids, no capabilities, files it may open itself, and so
    on — anything more is an `UntrustedImageError` (`.owner`, `.wants`) unless
    `trust_image=True`: pass it only for images whose writer you trust.  Running
    out of fds or memory is a `ResourceError`, never a damaged image.

    With `lazy=True` the process runs before its private anonymous memory is
    filled: each page comes from the image when first touched, served by a
    handler process that pushes the rest in the background and exits once all
    are in (`lazy="touch"`: touched pages, and one a second; the handler stays
    until all are in or the process ends).
    If the handler dies first, its guard kills the process: never left with
    missing memory.  The checksums of those pages are checked as they are served
    (everything else before any process exists): a page of the image that fails
    its checksum is never copied, but kills the process, maybe after it ran a
    while (an `ImageError` if the restore has not returned yet).  The returned
    process's `lazy_handlers` lists them (`pyckpt.lazy.Handler`: pid, handler,
    guard; `.wait()` says why a handler killed them); see pyckpt/lazy.py.
    """
    # (`_process=False`: the `pyckpt` command, which prints the PID, gets an object with
    # `pid` and `restore_warnings` instead, and does not load psutil.)
    from .kinds.files import pinned_caller_fds
    from .limits import fd_room
    from .restorer import restore as _restore

    opts = _restore_options(fds, inherit_stdio, allow_changed_files, deleted_dir, new_pidns, new_netns,
                            trust_image, shell_job, tcp_established, port_map)
    if lazy not in (False, True, "touch"):
        raise ValueError(f"lazy must be False, True or \"touch\", not {lazy!r}")
    opts.lazy = lazy
    # The caller's fds (fds={n: fd}, inherit_stdio) are copied now, before pyckpt opens any
    # file: a number left closed could otherwise be reused by one of pyckpt's own files.
    with fd_room(), pinned_caller_fds(opts) as opts:
        return _restore(path, progress=_progress(progress), options=opts, process=_process)


def _restore_options(fds, inherit_stdio, allow_changed_files, deleted_dir, new_pidns, new_netns,
                     trust_image=False, shell_job=False, tcp_established=False, port_map=None):
    """restore()'s keywords as RestoreOptions; `fds` checked for types (TypeError)."""
    from .kinds.context import RestoreOptions

    if fds is not None and not isinstance(fds, dict):
        raise TypeError(f"fds must be a dict {{fd number: replacement}}, not {type(fds).__name__}")
    given = {}
    for n, f in (fds or {}).items():
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"fds: a key must be an fd number of the image (an int), not {n!r}")
        given[n] = _replacement(n, f)
    return RestoreOptions(
        fds=given,
        inherit_stdio=inherit_stdio,
        allow_changed_files=_changed_files(allow_changed_files),
        deleted_dir=None if deleted_dir is None else os.fspath(deleted_dir),
        new_pidns=new_pidns,
        new_netns=new_netns,
        trust_image=bool(trust_image),
        shell_job=bool(shell_job),
        tcp_established=bool(tcp_established),
        port_map=_port_map(port_map),
    )


def _port_map(port_map) -> dict[int, int]:
    """port_map= checked: {old port: new port}, ints in 1..65535, no new port twice
    (TypeError, ValueError)."""
    if port_map is None:
        return {}
    if not isinstance(port_map, dict):
        raise TypeError(f"port_map must be a dict {{port of the image: new port}}, not "
                        f"{type(port_map).__name__}")
    for old, new in port_map.items():
        for p in (old, new):
            if not isinstance(p, int) or isinstance(p, bool):
                raise TypeError(f"port_map: ports are ints, not {p!r}")
            if not 0 < p < 65536:
                raise ValueError(f"port_map: {p} is no TCP port (1-65535)")
    seen: dict[int, int] = {}
    for old, new in port_map.items():
        if new in seen:
            raise ValueError(f"port_map: ports {seen[new]} and {old} both map to {new}")
        seen[new] = old
    return dict(port_map)


def _changed_files(allow):
    """allow_changed_files= as a bool or a list of globs (TypeError for anything else)."""
    if isinstance(allow, (str, os.PathLike)):
        return [os.fspath(allow)]
    if isinstance(allow, (list, tuple, set, frozenset)):
        globs = [os.fspath(g) if isinstance(g, (str, os.PathLike)) else g for g in allow]
        if not all(isinstance(g, str) for g in globs):
            raise TypeError(f"allow_changed_files: paths or globs (str) expected, not {allow!r}")
        return sorted(globs) if isinstance(allow, (set, frozenset)) else globs
    return bool(allow)


def _replacement(n: int, f):
    """An fd number (int) or a path (str/bytes) for `fds[n]`."""
    if isinstance(f, int) and not isinstance(f, bool):
        return f
    if isinstance(f, (str, bytes, os.PathLike)):
        return os.fspath(f)
    fileno = getattr(f, "fileno", None)
    if callable(fileno):
        try:
            fd = fileno()
        except Exception as e:  # io.UnsupportedOperation (BytesIO), ValueError (closed)...
            raise TypeError(f"fds[{n}]: {type(f).__name__} object has no usable fd "
                            f"(fileno() raised {type(e).__name__}: {e})") from None
        if isinstance(fd, int) and not isinstance(fd, bool):
            return fd
        raise TypeError(f"fds[{n}]: {type(f).__name__}.fileno() returned {fd!r}, not an int")
    raise TypeError(f"fds[{n}]: a replacement must be an fd (int), an object with fileno() "
                    f"(a file, a socket) or a path, not {type(f).__name__}")


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
    """Open and validate an image (records, checksums and references; pages with
    `.verify()`).  A damaged, incomplete or foreign image raises `ImageError`."""
    return Image(path)


def template(path: str | os.PathLike, **restore_options) -> Template:
    """Fresh copies of one image, each in its own PID namespace: `t.copy()` returns a
    `psutil.Process` (the image's PIDs inside its namespace), `t.kill(p)` ends one,
    `t.close()` (or leaving the `with` block) ends them all.  Takes `restore()`'s
    keywords (`new_netns=True`, `fds=`, ...) for every copy.  The image is restored
    once into a stopped template and each copy forked from it (pages shared
    copy-on-write); an image that path does not handle yet (`t.fast` False,
    `t.reason` says why) gets a full `restore(path, new_pidns=True, ...)` per copy:
    see the module docstring of `pyckpt.templates` (`Template`).  Call `copy()` from the
    thread that made the template."""
    from .templates import Template

    return Template(path, **restore_options)


def load_ipython_extension(ipython):
    """`%load_ext pyckpt` in a notebook kernel: the `%pyckpt save NAME` / `restore NAME` /
    `list` magic, which asks the Jupyter server running the kernel (pyckpt/jupyter/magics.py)."""
    from .jupyter.magics import load

    load(ipython)
