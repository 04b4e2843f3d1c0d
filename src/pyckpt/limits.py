"""pyckpt's own resource limits during a dump or restore, and errors about resources.

A restore places fds at the image's numbers (an fd 200 needs a limit of open
files above 200 in pyckpt, whose copy the new task starts as) and keeps the
files it opens for the task above them; a dump holds /proc files, pidfds and
its image files open.  A caller's low *soft* RLIMIT_NOFILE (a shell's `ulimit
-n 256`, a service's) must not make that fail: `fd_room()` raises pyckpt's own
soft limit to its hard limit for the length of the work and sets it back
afterwards.  The restored process gets the image's own limits, not these.

Running out all the same (a low hard limit, the system's file table full, no
memory) is a `ResourceError` saying what ran out and how to get more, never a
damaged image: `translated()` turns any error caused by EMFILE, ENFILE or (in
pyckpt's own process) ENOMEM into one.
"""

from __future__ import annotations

import contextlib
import errno
import _thread
import resource

from . import proc
from .errors import PyckptError, ResourceError

_lock = _thread.allocate_lock()  # (threading.Lock, without importing threading)
_users = 0  # dumps and restores running in this process (threads)
_raised_to: int | None = None  # the soft limit fd_room set, when it raised it
_caller_soft: int | None = None  # the soft limit to put back


def _nr_open() -> int:
    try:
        return proc.read_sys_int("fs/nr_open")
    except (OSError, ValueError):
        return 1 << 20


@contextlib.contextmanager
def fd_room():
    """pyckpt's soft RLIMIT_NOFILE raised to its hard limit while the block runs (the
    first of nested or concurrent blocks raises it, the last sets the caller's soft
    limit back, unless the caller changed the limit meanwhile)."""
    global _users, _raised_to, _caller_soft
    with _lock:
        if _users == 0:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = _nr_open() if hard == resource.RLIM_INFINITY else hard
            _raised_to = _caller_soft = None
            if soft != resource.RLIM_INFINITY and soft < want:
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                    _raised_to, _caller_soft = want, soft
                except (OSError, ValueError):
                    pass  # keep the caller's; running out is then a ResourceError
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _raised_to is not None:
                soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                if soft == _raised_to:  # else the caller set a limit of its own meanwhile
                    try:
                        resource.setrlimit(resource.RLIMIT_NOFILE, (min(_caller_soft, hard), hard))
                    except (OSError, ValueError):
                        pass
                _raised_to = _caller_soft = None


def nofile_limit() -> int:
    """The soft RLIMIT_NOFILE now: fds pyckpt can place are below it."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return _nr_open() if soft == resource.RLIM_INFINITY else soft


def _nofile_words() -> tuple[str, int | None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    shown = lambda v: "unlimited" if v == resource.RLIM_INFINITY else str(v)  # noqa: E731
    return f"soft {shown(soft)}, hard {shown(hard)}", (None if soft == resource.RLIM_INFINITY else soft)


def _file_max() -> str:
    try:
        return proc.read_sys("fs/file-max")
    except OSError:
        return "?"


RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM)


def cause(e: BaseException) -> int | None:
    """The resource errno (EMFILE, ENFILE, ENOMEM) behind `e`: its own, or that of an
    error it was raised from or while handling (`from None` keeps the context).
    ENOMEM counts only from pyckpt's own process (an OSError), not from a call
    injected into a task, where it may be about the image's memory layout."""
    seen = 0
    while e is not None and seen < 16:
        number = getattr(e, "errno", None)
        if number in (errno.EMFILE, errno.ENFILE):
            return number
        if number == errno.ENOMEM and isinstance(e, OSError):
            return number
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def resource_error(number: int, doing: str) -> ResourceError:
    """The ResourceError for `number` (EMFILE, ENFILE, ENOMEM) met while `doing` (e.g.
    "restoring from img; no process was left behind")."""
    if number == errno.EMFILE:
        words, soft = _nofile_words()
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        how = ("raise its hard limit (as root: ulimit -Hn N, or prlimit --nofile=N:N --pid PID)"
               if soft is None or soft >= hard or hard == resource.RLIM_INFINITY
               else "raise the limit (ulimit -n, up to the hard limit)")
        return ResourceError(
            f"pyckpt ran out of file descriptors (EMFILE: its limit of open files, RLIMIT_NOFILE, "
            f"is {words}) while {doing}: {how}, or close fds the calling process holds open",
            resource="open files (RLIMIT_NOFILE)", limit=soft, errno_=number)
    if number == errno.ENFILE:
        return ResourceError(
            f"the system ran out of open files (ENFILE: fs.file-max is {_file_max()}) while "
            f"{doing}: close files elsewhere, or raise fs.file-max (sysctl -w fs.file-max=N)",
            resource="open files of the system (fs.file-max)", errno_=number)
    return ResourceError(
        f"pyckpt ran out of memory (ENOMEM) while {doing}: free memory, or raise the limit "
        "that stopped it (ulimit -v, the memory cgroup of the calling service)",
        resource="memory", errno_=number)


@contextlib.contextmanager
def translated(doing: str):
    """Errors caused by running out of fds or memory, raised in the block, come out as
    ResourceError (chained to the original) instead of what they were reported as
    (a damaged image, a failed restore, a file that 'cannot be opened')."""
    try:
        yield
    except ResourceError:
        raise
    except (PyckptError, OSError) as e:
        number = cause(e)
        if number is None:
            raise
        raise resource_error(number, doing) from e


def nofile_too_low(fd: int, where: str, room: int = 0) -> ResourceError:
    """An image's fd `fd` (of `where`, e.g. "process 12 of the image at img") cannot be
    placed: fds must be below the limit of open files, and `room` more above it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = nofile_limit()
    need = fd + 1 + room
    return ResourceError(
        f"{where} has fd {fd}, but pyckpt can place fds only below its limit of open files "
        f"(RLIMIT_NOFILE {limit}{', the hard limit' if soft == hard else ''}), and needs about "
        f"{need} of them: raise the hard limit to {need} or more (as root: ulimit -Hn {need}, "
        f"or prlimit --nofile={need}:{need} --pid PID)",
        resource="open files (RLIMIT_NOFILE)", limit=limit, fd=fd)


RLIMIT_NAMES = {getattr(resource, n): n for n in dir(resource)
                if n.startswith("RLIMIT_") and n != "RLIMIT_OFILE"}  # (OFILE: NOFILE's old name)
CAP_SYS_RESOURCE = 24


def _has_cap(cap: int) -> bool:
    return bool(int(proc.read_status("self").get("CapEff", "0"), 16) >> cap & 1)


def unraisable(rlimits: list[tuple[int, int, int]], where: str) -> list[ResourceError]:
    """The image's limits (resource, soft, hard; -1 unlimited) a restore cannot give
    (of `where`, e.g. "process 12 of the image at img"): the new task starts with
    pyckpt's, and raising a hard limit above them needs CAP_SYS_RESOURCE."""
    if _has_cap(CAP_SYS_RESOURCE):
        return []
    out = []
    for res, _soft, hard in rlimits:
        try:
            own = resource.getrlimit(res)[1]
        except (ValueError, OSError):
            continue
        if own != resource.RLIM_INFINITY and (hard == -1 or hard > own):
            name = RLIMIT_NAMES.get(res, f"resource limit {res}")
            want = "unlimited" if hard == -1 else str(hard)
            how = (f"ulimit -Hn {want}" if res == resource.RLIMIT_NOFILE
                   else f"prlimit --{name[7:].lower()}=:{want} --pid PID")
            out.append(ResourceError(
                f"{where} has a hard {name} of {want}, above pyckpt's own hard limit {own}, and pyckpt "
                f"lacks CAP_SYS_RESOURCE to raise it: run pyckpt with that hard limit (as root: {how})",
                resource=name, limit=own))
    return out
