"""Typed errors.  Every message says what failed, on which object, and what to do.

Each class carries an `exit_code` that the CLI returns, so scripts can tell
failures apart without parsing messages, and the objects involved as
attributes (`pid`, `fd`, `path`, ...), so programs need not parse them either.
Every attribute a class documents under "Attributes" is present on each
instance; it is None where the raise site did not know it.
"""

from __future__ import annotations

import os


class PyckptError(Exception):
    """Base class of every error pyckpt raises on purpose.

    `str(e)` says what failed, on which object, and what to do.  When an OS
    call failed, the OSError is chained as `e.__cause__`.

    Attributes:
        exit_code: the `pyckpt` command's exit status for this class (a class
            attribute; 1 for this base class).
        fixes: the restore options (`pyckpt.Fix`) any one of which avoids this
            refusal, set where restore's validation knows them (as in
            `RestoreProblem.fixes`); `()` otherwise (a class default).
    """

    exit_code = 1
    fixes: tuple = ()

    def __reduce__(self):
        # The default rebuilds with cls(*args), which breaks for classes whose
        # __init__ takes other arguments than the message: keep args and attributes.
        return _rebuild, (type(self), self.args, self.__dict__.copy())


def _rebuild(cls, args, attributes):
    e = cls.__new__(cls, *args)
    e.args = args
    e.__dict__.update(attributes)
    return e


class NoSuchProcessError(PyckptError):
    """The PID names no process, or the process ended while pyckpt seized it.

    Attributes:
        pid: the process that is gone (as psutil's `NoSuchProcess.pid`).
    """

    exit_code = 3

    def __init__(self, message: str | None = None, *, pid: int | None = None):
        self.pid = pid
        super().__init__(f"no process with PID {pid}" if message is None else message)


class UnsuitableProcessError(PyckptError):
    """The process exists but cannot be dumped (kernel thread, zombie, pyckpt itself,
    stopped, in an uninterruptible wait, not traceable); nothing was changed.

    Attributes:
        pid: the process refused.
    """

    exit_code = 4

    def __init__(self, message: str, *, pid: int | None = None):
        self.pid = pid
        super().__init__(message)


class AlreadyTracedError(UnsuitableProcessError):
    """Another tracer (a debugger, strace, another pyckpt) holds the process.

    Attributes:
        pid: the process refused.
        tracer: the PID of the process tracing it.
    """

    def __init__(self, pid: int, tracer: int):
        self.tracer = tracer
        super().__init__(
            f"process {pid} is already traced by process {tracer}; "
            "detach that tracer (debugger, strace) and try again",
            pid=pid,
        )


class UnsupportedError(PyckptError):
    """The process holds state pyckpt cannot save yet; nothing was changed.

    Attributes:
        pid: the process (of the tree being dumped) that holds it.
    """

    exit_code = 5

    def __init__(self, message: str, *, pid: int | None = None):
        self.pid = pid
        super().__init__(message)


class UnsupportedFdError(UnsupportedError):
    """An open file descriptor of a kind pyckpt cannot save yet.

    Attributes:
        pid: the process that holds the fd.
        fd: the file descriptor number.
        kind: what it is, in words (e.g. "listening unix stream socket").
        target: what it refers to: where /proc/PID/fd/FD points (e.g.
            "socket:[12345]"), sometimes with details.
    """

    def __init__(self, pid: int, fd: int, kind: str, target: str):
        self.fd = fd
        self.kind = kind
        self.target = target
        super().__init__(
            f"process {pid}: fd {fd} is a {kind} ({target}); pyckpt cannot "
            "save this kind of file yet — close it in the target or wait for full file support",
            pid=pid,
        )


class ImageError(PyckptError):
    """The image is missing, incomplete, corrupted, foreign or of another version,
    or its records do not fit together.

    Attributes:
        path: the image directory (a str).
    """

    exit_code = 6

    def __init__(self, message: str, *, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        super().__init__(message)


class ImageWriteError(PyckptError):
    """The image directory cannot be created or written (it exists and is not
    empty, the disk is full, ...); the OSError, if any, is `__cause__`.

    Attributes:
        path: the image directory (a str).
    """

    exit_code = 7

    def __init__(self, message: str, *, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        super().__init__(message)


class PidInUseError(PyckptError):
    """The PID the image needs is taken by a live process (or by a zombie).

    Attributes:
        pid: the PID the image needs.
    """

    exit_code = 8

    def __init__(self, pid: int, detail: str = ""):
        self.pid = pid
        way_out = "end (and reap) the process holding it"
        if "namespace" not in detail:  # not when restoring into a new PID namespace already
            way_out += (", or restore a copy beside it in a new PID namespace, where it keeps "
                        "its PID: --new-pidns (API: new_pidns=True)")
        super().__init__(f"PID {pid} is in use{detail}; the restored process needs it — {way_out}")


class FileChangedError(PyckptError):
    """A file the image refers to is not the one that was open at dump time.

    Attributes:
        path: the file.
        what: how it changed, in words (e.g. "size 12, was 10", "it no longer exists").
    """

    exit_code = 9

    def __init__(self, path: str, what: str):
        self.path = path
        self.what = what
        gone = "no longer" in what or "cannot be" in what  # --allow-changed-files cannot help
        if gone:
            way_out = "put it back"
        elif "allow_changed_files" in what:
            way_out = "that is --allow-changed-files on the command line"
        else:
            way_out = ("restore anyway with --allow-changed-files, or --allow-changed-files=PATH for "
                       "this file alone (API: allow_changed_files=True or [PATH])")
        super().__init__(
            f"file {path!r} changed since the dump: {what}; {way_out}, or, if it is a log or "
            "output file a copy should write elsewhere, give that fd another file with "
            "--fd N=PATH (API: fds={N: file})"
        )


class KernelMismatchError(PyckptError):
    """The running kernel or CPU differs from the dump's in a way restore cannot
    bridge yet (vDSO, size of the FPU/vector state).

    Attributes: none beyond `exit_code`; the image's kernel is
    `Image.header.kernel_release`.
    """

    exit_code = 10


class RestoreError(PyckptError):
    """Restore failed part-way, or needs an option (an fd to replace); the
    half-made process was removed.

    Attributes: none beyond `exit_code` (the OSError, if any, is `__cause__`).
    """

    exit_code = 11


class DumpError(PyckptError):
    """Dump failed part-way; the target was left running as before.

    Attributes: none beyond `exit_code` (the OSError, if any, is `__cause__`).
    """

    exit_code = 12


class PtraceError(PyckptError):
    """A ptrace request failed on a task (it may have died or been killed).

    Attributes:
        pid: the task (thread) the request was made on.
        errno: the error number (`errno.ESRCH`, ...).
        what: what was attempted (e.g. "PTRACE_GETREGSET(NT_PRSTATUS)",
            "injected syscall mmap").
    """

    exit_code = 13

    def __init__(self, what: str, pid: int, errno_: int):
        self.what = what
        self.pid = pid
        self.errno = errno_
        super().__init__(f"{what} failed on process {pid}: {os.strerror(errno_)}")


class LockConflictError(RestoreError):
    """A file lock of the image is held by someone else now; the half-made process was removed.

    Attributes:
        pid: the process of the image that held the lock.
        fd: its fd the lock is on.
        path: the locked file.
        lock: the lock of the image, in words (e.g. "POSIX write lock on bytes 0-9").
        holder: who holds the conflicting lock now, in words.
        holder_pids: the PIDs holding it (a list; empty when unknown).
    """

    exit_code = 14

    def __init__(self, pid: int, fd: int, path: str, lock: str, holder: str,
                 holder_pids: list[int] | None = None):
        self.pid = pid
        self.fd = fd
        self.path = path
        self.lock = lock  # e.g. "POSIX write lock on bytes 0-9"
        self.holder = holder  # e.g. "a POSIX write lock on bytes 0-99 held by process 123 (name)"
        self.holder_pids = holder_pids or []
        super().__init__(
            f"cannot restore the {lock} of process {pid} on {path!r} (fd {fd}): it conflicts with "
            f"{holder}; release that lock (or end that process) and restore again"
        )


class ResourceError(PyckptError):
    """pyckpt's own process ran out of something the kernel rations (open files,
    memory); the image and the process are fine: raise the limit or free some and
    run again.  Nothing was left behind (a dump leaves its target running).

    Attributes:
        resource: what ran out, in words (e.g. "open files (RLIMIT_NOFILE)").
        limit: the limit in force (e.g. the soft RLIMIT_NOFILE), or None.
        fd: the fd number that could not be placed (an image's fd above the
            limit), or None.
        errno: the error number behind it (`errno.EMFILE`, `errno.ENFILE`,
            `errno.ENOMEM`), or None.
    """

    exit_code = 15

    def __init__(self, message: str, *, resource: str | None = None, limit: int | None = None,
                 fd: int | None = None, errno_: int | None = None):
        self.resource = resource
        self.limit = limit
        self.fd = fd
        self.errno = errno_
        super().__init__(message)


class PrivilegeError(PyckptError):
    """pyckpt lacks a privilege the dump or restore needs (root, a capability,
    ptrace permission, access to /proc/PID/map_files); refused before anything
    was frozen, created or written.

    Attributes:
        missing: what is missing, in words, one item each (a list of str).
        operation: "dump" or "restore".
    """

    exit_code = 16

    def __init__(self, message: str, *, missing: list[str] | None = None,
                 operation: str | None = None):
        self.missing = list(missing or [])
        self.operation = operation
        super().__init__(message)


class UntrustedImageError(PyckptError):
    """The image directory belongs to another user than root, and the image asks for
    more than that user has (another user's or root's ids, a file that user cannot
    open, ...); restore it only if you trust whoever wrote it: `trust_image=True`
    (`--trust-image`).  Nothing was created.

    Attributes:
        path: the image directory (a str).
        owner: the uid that owns it (and so could have written anything in it); None
            when the directory is writable by others too.
        wants: what the image asks for that the owner does not have, in words
            (e.g. "uid 0", "/etc/shadow opened for reading").
    """

    exit_code = 17

    def __init__(self, message: str, *, path: str | os.PathLike | None = None,
                 owner: int | None = None, wants: str | None = None):
        self.path = None if path is None else os.fspath(path)
        self.owner = owner
        self.wants = wants
        super().__init__(message)


class Interrupted(PyckptError):
    """pyckpt was interrupted (SIGINT/SIGTERM/SIGHUP/SIGQUIT); the work was undone.

    Only the `pyckpt` command uses it, for its exit code: dump() and restore()
    let such a signal out as KeyboardInterrupt, raised at a safe point once the
    target runs on as before (dump) or the half-made process is removed (restore).

    Attributes: none beyond `exit_code` (130).
    """

    exit_code = 130


class RemoteCallError(PyckptError):
    """A syscall injected into a task returned an error (mapping memory, opening a
    file, setting a property inside the process being dumped or restored).

    Attributes:
        pid: the task the call was injected into.
        errno: the error number the call returned (`errno.ENOMEM`, ...).
    """

    def __init__(self, what: str, pid: int, errno_: int):
        self.pid = pid
        self.errno = errno_
        super().__init__(f"{what} in process {pid} failed: {os.strerror(errno_)}")


class InternalError(PyckptError):
    """A bug in pyckpt: neither the image, the target nor the machine is to blame.

    Raised at the one boundary where pyckpt's work meets its caller
    (`boundary`), for an exception no check meant to raise (a TypeError, a
    KeyError...); the original is `__cause__` (the `pyckpt` command prints its
    traceback with --debug).  A dump that fails this way leaves the target
    running as before; a restore, no process.

    Attributes:
        operation: what was being done ("dump of process 123", "restore of img/").
    """

    exit_code = 70  # EX_SOFTWARE

    def __init__(self, operation: str, cause: BaseException, after: str = ""):
        self.operation = operation
        super().__init__(f"{operation} failed: internal error: {type(cause).__name__}: {cause}"
                         f"{'; ' + after if after else ''} "
                         "(please report it, with the traceback `pyckpt --debug` prints)")


class boundary:
    """The one place errors are translated, around each public operation:
    a PyckptError (and KeyboardInterrupt) passes as it is, an OSError that no
    kind turned into a typed error becomes `os_error` (DumpError, RestoreError...),
    anything else is a bug and becomes an InternalError.  Kinds raise typed
    errors themselves; they never translate a bug into a message about the
    image or the process.

        with errors.boundary(f"restore from {path}", RestoreError, "no process was left behind"):
            ...

    `after` is what the caller may rely on (said after the reason).
    """

    def __init__(self, operation: str, os_error: type[PyckptError] | None = None, after: str = ""):
        self.operation = operation
        self.os_error = os_error
        self.after = after

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is None or isinstance(e, (PyckptError, KeyboardInterrupt)) or not isinstance(e, Exception):
            return False
        if isinstance(e, OSError) and self.os_error is not None:
            raise self.os_error(f"{self.operation} failed: {e}{'; ' + self.after if self.after else ''}") from e
        raise InternalError(self.operation, e, self.after) from e


def describe(pid: int) -> str:
    """`pid=N, name=comm` for messages; tolerant of a vanished process."""
    from .proc import read_comm

    try:
        return f"pid={pid}, name={read_comm(pid).decode(errors='replace').strip()}"
    except OSError:
        return f"pid={pid}"


class SocketPathInUseError(RestoreError):
    """A unix socket of the image cannot have its name again: a live socket holds the
    path (or abstract name), such as the original or another copy, or a file that is
    not a socket is at the path.  A stale socket file nothing listens on is replaced
    instead.

    Attributes:
        path: the path, or the abstract name as "@name".
    """

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(message)


class IpcInUseError(RestoreError):
    """A SysV IPC object of the image cannot have its id or key again in the IPC
    namespace of a restore in place: another object holds the id's slot or the key
    (the original process's segment while it is attached, another copy's...).

    Attributes:
        needed: the image's object ("SysV shared memory segment key 0x... id N").
        holder: the object that holds its id or key now.
    """

    def __init__(self, needed: str, holder: str, remove: str):
        self.needed = needed
        self.holder = holder
        super().__init__(f"{needed} cannot be re-created: its id or key is taken by {holder}; restore "
                         "a copy into a new IPC namespace, where ids and keys are its own: --new-pidns "
                         f"(API: new_pidns=True), or remove that one ({remove}) if it is a leftover")


class PortInUseError(RestoreError):
    """A socket of the image cannot have its port again: another socket holds it (the
    original process, another copy of it, or some other program).

    Attributes:
        protocol: "UDP" (or "TCP").
        address: the local address the socket was bound to.
        port: the port.
    """

    def __init__(self, protocol: str, address: str, port: int, message: str):
        self.protocol = protocol
        self.address = address
        self.port = port
        super().__init__(message)


class NotReadyError(PyckptError):
    """A process started to be snapshotted (`pyckpt.pytest.snapshot`) did not become
    ready: it never printed its ready line or never listened on its port within the
    timeout, or it exited first.

    Attributes:
        argv: the command line it was started with.
        last_lines: the last lines it printed (stdout and stderr), oldest first.
        returncode: its exit status if it exited, else None (it was killed).
    """

    def __init__(self, argv, last_lines, returncode, message: str):
        self.argv = list(argv)
        self.last_lines = list(last_lines)
        self.returncode = returncode
        super().__init__(message)
