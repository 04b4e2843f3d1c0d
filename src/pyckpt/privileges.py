"""What a dump or a restore needs of pyckpt's own process, checked before any work.

pyckpt runs as root: a dump stops and reads another process with ptrace (which
needs CAP_SYS_PTRACE for a process of another user or under Yama's
ptrace_scope 1-2) and reads /proc/PID/map_files (CAP_CHECKPOINT_RESTORE or
CAP_SYS_ADMIN); a restore creates processes with chosen PIDs (clone3 with
set_tid, CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN), new namespaces
(CAP_SYS_ADMIN) and gives them the image's user ids.  Its model of
credentials assumes root besides: a restored task starts with pyckpt's
credentials (born of pyckpt's stub, or a copy of pyckpt: restorer._clone_small),
and only a change of ids away from root drops the capabilities it inherited.
So a non-root pyckpt is refused even with capabilities, and root without the
capabilities it needs (a container's root) too, before anything is frozen,
created or written, in one line that names everything missing.
"""

from __future__ import annotations

import os

from . import proc
from .errors import PrivilegeError

CAP_SETGID, CAP_SETUID, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_CHECKPOINT_RESTORE = 6, 7, 19, 21, 40
YAMA = "/proc/sys/kernel/yama/ptrace_scope"


def effective_caps() -> int:
    return int(proc.read_status("self").get("CapEff", "0"), 16)


def ptrace_scope() -> int:
    """Yama's kernel.yama.ptrace_scope (0 without Yama)."""
    try:
        return proc.read_sys_int(YAMA.removeprefix("/proc/sys/"))
    except (OSError, ValueError):
        return 0


def _has(caps: int, cap: int) -> bool:
    return bool(caps >> cap & 1)


def missing(operation: str, *, pid: int | None = None, new_namespaces: bool = False) -> list[str]:
    """What pyckpt lacks for `operation` ("dump" of `pid`, "restore"), in words; [] when nothing."""
    euid, caps, scope = os.geteuid(), effective_caps(), ptrace_scope()
    out = []
    if euid != 0:
        some = any(_has(caps, c) for c in (CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE, CAP_SYS_ADMIN))
        out.append(f"root (pyckpt runs as uid {euid}" + ("; capabilities alone do not do: a restored "
                   "task starts with pyckpt's credentials, and only leaving uid 0 drops what it inherited)"
                   if some else ")"))
    if scope >= 3:
        out.append(f"ptrace: {YAMA} is 3, which forbids tracing any process until a reboot")
    if operation == "dump" and not _has(caps, CAP_SYS_PTRACE):
        why = f"; {YAMA} is {scope}" if scope else ""
        out.append(f"CAP_SYS_PTRACE (to stop and read process {pid}{why})")
    if operation == "restore" and scope >= 2 and not _has(caps, CAP_SYS_PTRACE):
        out.append(f"CAP_SYS_PTRACE ({YAMA} is {scope}: even the tasks a restore makes cannot be "
                   "traced without it)")
    if not (_has(caps, CAP_CHECKPOINT_RESTORE) or _has(caps, CAP_SYS_ADMIN)):
        why = (f"to read /proc/{pid}/map_files" if operation == "dump"
               else "to give new processes the image's PIDs (clone3 set_tid) and their executable")
        out.append(f"CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN ({why})")
    if operation == "restore" and new_namespaces and not _has(caps, CAP_SYS_ADMIN):
        out.append("CAP_SYS_ADMIN (for --new-pidns / --new-netns)")
    if operation == "restore" and euid == 0 and not (_has(caps, CAP_SETUID) and _has(caps, CAP_SETGID)):
        out.append("CAP_SETUID and CAP_SETGID (to give restored processes the image's user ids)")
    if operation == "dump" and pid is not None and not (
            (_has(caps, CAP_CHECKPOINT_RESTORE) or _has(caps, CAP_SYS_ADMIN)) and _initial_user_ns()):
        # (the capability in the initial user namespace is what following a link of
        # map_files asks; elsewhere a link is tried: listing a Python kernel's took 0.5 ms)
        denied = _map_files_denied(pid)
        if denied:
            out.append(denied)
    return out


def _initial_user_ns() -> bool:
    """Whether pyckpt runs in the initial user namespace."""
    return proc.in_initial_user_ns("self")


def _map_files_denied(pid: int) -> str:
    """Why /proc/PID/map_files cannot be read, or '' (also when the process is gone:
    the dump reports that itself)."""
    where = f"/proc/{pid}/map_files"
    try:
        names = os.listdir(where)
        if names:
            os.stat(f"{where}/{names[0]}")  # following the link is what needs the capability
    except (PermissionError, OSError) as e:
        if isinstance(e, (FileNotFoundError, ProcessLookupError)):
            return ""
        return f"access to {where} ({e.strerror})"
    return ""


def require(operation: str, *, pid: int | None = None, path=None, new_namespaces: bool = False) -> None:
    """Raise PrivilegeError naming everything missing for `operation` (a dump of `pid`, a
    restore of the image at `path`), if anything is."""
    lacking = missing(operation, pid=pid, new_namespaces=new_namespaces)
    if not lacking:
        return
    what = f"process {pid}" if operation == "dump" else f"the image at {os.fspath(path)}"
    nothing = ("nothing was frozen or written" if operation == "dump"
               else "nothing was created")
    way_out = (f"run it as root (e.g. sudo pyckpt {operation} ...)" if os.geteuid() != 0 else
               "run it where root has them (a container's root needs them added, e.g. docker run "
               "--cap-add SYS_PTRACE --cap-add CHECKPOINT_RESTORE)")
    raise PrivilegeError(
        f"pyckpt cannot {operation} {what} without privileges it lacks here: {'; '.join(lacking)}. "
        f"pyckpt needs root with CAP_SYS_PTRACE and CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN"
        f"{', also needed for new namespaces' if new_namespaces else ''}): {way_out}; {nothing}",
        missing=lacking, operation=operation)
