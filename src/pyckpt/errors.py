"""Typed errors.  Every message says what failed, on which object, and what to do.

Each class carries an `exit_code` that the CLI returns, so scripts can tell
failures apart without parsing messages.
"""

from __future__ import annotations


class PyckptError(Exception):
    """Base class of every error pyckpt raises on purpose."""

    exit_code = 1


class NoSuchProcessError(PyckptError):
    """The PID names no process."""

    exit_code = 3


class UnsuitableProcessError(PyckptError):
    """The process exists but cannot be dumped (kernel thread, zombie, pyckpt itself...)."""

    exit_code = 4


class AlreadyTracedError(UnsuitableProcessError):
    """Another tracer (a debugger, strace, another pyckpt) holds the process."""

    def __init__(self, pid: int, tracer: int):
        self.pid = pid
        self.tracer = tracer
        super().__init__(
            f"process {pid} is already traced by process {tracer}; "
            "detach that tracer (debugger, strace) and try again"
        )


class UnsupportedError(PyckptError):
    """The process holds state pyckpt cannot save yet; nothing was changed."""

    exit_code = 5


class UnsupportedFdError(UnsupportedError):
    """An open file descriptor of a kind pyckpt cannot save yet."""

    def __init__(self, pid: int, fd: int, kind: str, target: str):
        self.pid = pid
        self.fd = fd
        self.kind = kind
        super().__init__(
            f"process {pid}: fd {fd} is a {kind} ({target}); pyckpt cannot "
            "save this kind of file yet — close it in the target or wait for full file support"
        )


class ImageError(PyckptError):
    """The image is missing, incomplete, corrupted, foreign or of another version."""

    exit_code = 6


class ImageWriteError(PyckptError):
    """The image directory cannot be created or written."""

    exit_code = 7


class PidInUseError(PyckptError):
    """The PID the image needs is taken by a live process."""

    exit_code = 8

    def __init__(self, pid: int, detail: str = ""):
        self.pid = pid
        way_out = "end (and reap) the process holding it"
        if "namespace" not in detail:  # not when restoring into a new PID namespace already
            way_out += (", or restore a copy beside it in a new PID namespace, where it keeps "
                        "its PID: --new-pidns (API: new_pidns=True)")
        super().__init__(f"PID {pid} is in use{detail}; the restored process needs it — {way_out}")


class FileChangedError(PyckptError):
    """A file the image refers to is not the one that was open at dump time."""

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
            way_out = "restore anyway with --allow-changed-files (API: allow_changed_files=True)"
        super().__init__(
            f"file {path!r} changed since the dump: {what}; {way_out}, or, if it is a log or "
            "output file a copy should write elsewhere, give that fd another file with "
            "--fd N=PATH (API: fds={N: file})"
        )


class KernelMismatchError(PyckptError):
    """The running kernel differs from the dump's in a way restore cannot bridge yet."""

    exit_code = 10


class RestoreError(PyckptError):
    """Restore failed part-way; the half-made process was removed."""

    exit_code = 11


class DumpError(PyckptError):
    """Dump failed part-way; the target was left running as before."""

    exit_code = 12


class PtraceError(PyckptError):
    """A ptrace request failed on a task (it may have died or been killed)."""

    exit_code = 13

    def __init__(self, what: str, pid: int, errno_: int):
        import os

        self.pid = pid
        self.errno = errno_
        super().__init__(f"{what} failed on process {pid}: {os.strerror(errno_)}")


class LockConflictError(RestoreError):
    """A file lock of the image is held by someone else now; the half-made process was removed."""

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


class Interrupted(PyckptError):
    """pyckpt was interrupted (SIGINT/SIGTERM); the work was undone."""

    exit_code = 130


def describe(pid: int) -> str:
    """`pid=N, name=comm` for messages; tolerant of a vanished process."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f"pid={pid}, name={f.read().strip()}"
    except OSError:
        return f"pid={pid}"
