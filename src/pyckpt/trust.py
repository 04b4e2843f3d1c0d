"""Who could have written an image, and what an image of an ordinary user may ask for.

Restore runs as root and does what the image says: the ids the process gets,
the files pyckpt opens for it (by path, as root), the limits and scheduling
it sets, the ports it binds.  A checksum proves an image is what was written,
not who wrote it.  So an image directory that root alone controls is trusted,
and one that an ordinary user owns (the directory or any file pyckpt reads in
it) restores only as that user could have made it:

- the user's own ids: every uid (real, effective, saved, fs) the owner's, every
  gid and supplementary group one the owner is in — hence no capabilities
  (kinds/creds.py, `beyond`);
- no chroot (CAP_SYS_CHROOT), no hard limit above pyckpt's own
  (CAP_SYS_RESOURCE), no real-time or negative-nice scheduling beyond what
  the image's own RLIMIT_RTPRIO / RLIMIT_NICE allow (CAP_SYS_NICE), no port
  below net.ipv4.ip_unprivileged_port_start (CAP_NET_BIND_SERVICE);
- every file and directory pyckpt opens by path for it (fds, mappings, the
  executable, the working directory) one the owner may reach and open with
  that access, checked by the kernel in a thread that carries the owner's
  filesystem ids and groups (setfsuid drops root's file capabilities);
  likewise the named sockets it connects to.

An image directory others can write to (without the sticky bit), or whose
files belong to several users, is nobody's: any identity is refused.  The
caller lifts all of it with `trust_image=True` (`--trust-image`).  What stays
trusted as the caller: the paths it gives itself (`fds=`, `inherit_stdio`,
`deleted_dir`).
"""

from __future__ import annotations

import ctypes
import grp  # noqa: F401  (os.getgrouplist reads the group database)
import os
import pwd
import resource
import stat
from ._dataclass import dataclass

from . import proc
from .arch import libc as _libc
from .errors import UntrustedImageError
from .inject import nr
from .limits import RLIMIT_NAMES
from .image import COMPLETE_FILE, PAGES_FILE, RECORDS_FILE
from .problems import Fix, needs

AT_FDCWD, AT_EACCESS = -100, 0x200
SCHED_FIFO, SCHED_RR, SCHED_DEADLINE = 1, 2, 6


@dataclass(frozen=True)
class Owner:
    """Who could have written an untrusted image."""

    uid: int | None  # None: nobody in particular (writable by others, several owners)
    who: str  # in words: "uid 1000 (alice)", "anyone (the directory is writable by others, mode 0777)"
    gids: frozenset[int] | None  # the owner's groups; None when unknown

    @property
    def subject(self) -> str:
        """Who the file checks were made as, in words."""
        return self.who if self.uid is not None else "an unprivileged user"

    @property
    def fs_ids(self) -> tuple[int, int, list[int]]:
        """(fsuid, fsgid, groups) to check access with: the owner's, or nobody's."""
        if self.uid is None:
            return 65534, 65534, []
        gid = _primary_gid(self.uid)
        return self.uid, 65534 if gid is None else gid, sorted(self.gids or ())


def _primary_gid(uid: int) -> int | None:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return None


def _user(uid: int) -> tuple[str, frozenset[int] | None]:
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return f"uid {uid}", None
    try:
        groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    except OSError:
        groups = [pw.pw_gid]
    return f"uid {uid} ({pw.pw_name})", frozenset(groups) | {pw.pw_gid}


def owner_of(path) -> Owner | None:
    """None when only root could have written the image at `path` (the directory and
    the files restore reads are root's, and no one else may write in the directory);
    else who could have."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        return None  # no image: reading it says so
    owners = {st.st_uid}
    for name in (RECORDS_FILE, PAGES_FILE, COMPLETE_FILE):
        f = os.path.join(path, name)
        for follow in (False, True):  # a symlink and what it points at
            try:
                owners.add(os.stat(f, follow_symlinks=follow).st_uid)
            except OSError:
                pass
    users = sorted(owners - {0})
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and not mode & stat.S_ISVTX:
        return Owner(None, f"anyone (the directory is writable by others, mode {mode:04o})", None)
    if len(users) > 1:
        return Owner(None, f"any of uids {', '.join(map(str, users))} (its files belong to them)", None)
    if not users:
        return None
    who, gids = _user(users[0])
    return Owner(users[0], who, gids)


def refusal(path, owner: Owner, wants: str) -> UntrustedImageError:
    """The error for an image of `owner` asking for `wants`, avoided by trust_image."""
    mine = (f"is owned by {owner.who}, who could have written anything in it" if owner.uid is not None
            else f"could have been written by {owner.who}")
    only = (f"pyckpt restores such an image only with what {owner.who} has"
            if owner.uid is not None else "pyckpt restores such an image with no identity at all")
    return needs(UntrustedImageError(
        f"image at {os.fspath(path)} {mine}, and asks for more: {wants}; {only}. If you trust "
        "whoever wrote it, restore it with --trust-image (API: trust_image=True)",
        path=path, owner=owner.uid, wants=wants), Fix("trust_image"))


def check_process(path, owner: Owner, view) -> list[str]:
    """What one process of the image (`view`) asks for beyond `owner`, in words."""
    from .kinds import creds, task, thread

    out: list[str] = []
    if owner.uid is None:
        rec = view.one(creds.CredsRecord)
        out.append(f"uids {'/'.join(map(str, rec.uids))}" + (" (root)" if 0 in rec.uids else ""))
    else:
        out += creds.beyond(view.one(creds.CredsRecord), owner.uid, owner.gids)
    t = view.one(task.TaskRecord)
    if t.root != "/":
        out.append(f"a chroot to {t.root} (CAP_SYS_CHROOT)")
    soft_of = {}
    for res, soft, hard in t.rlimits:
        soft_of[res] = soft
        try:
            own = resource.getrlimit(res)[1]
        except (ValueError, OSError):
            continue
        if own != -1 and (hard == -1 or hard > own):
            out.append(f"a hard {RLIMIT_NAMES.get(res, f'limit {res}')} of "
                       f"{'unlimited' if hard == -1 else hard}, above pyckpt's own {own} (CAP_SYS_RESOURCE)")
    rtprio, nice_room = soft_of.get(resource.RLIMIT_RTPRIO, 0), soft_of.get(resource.RLIMIT_NICE, 0)
    for r in thread.thread_records(view):
        if r.policy == SCHED_DEADLINE or (r.policy in (SCHED_FIFO, SCHED_RR) and rtprio != -1
                                          and r.priority > rtprio):
            out.append(f"real-time scheduling (policy {r.policy}, priority {r.priority}) for thread "
                       f"{r.tid} beyond its RLIMIT_RTPRIO {rtprio} (CAP_SYS_NICE)")
        if r.nice < 0 and nice_room != -1 and 20 - r.nice > nice_room:
            out.append(f"nice {r.nice} for thread {r.tid} beyond its RLIMIT_NICE {nice_room} (CAP_SYS_NICE)")
    out += _ports(view)
    return out


def _ports(view) -> list[str]:
    from .kinds.tcp import TcpListenerRecord
    from .kinds.tcpconn import TcpConnectionRecord

    try:
        start = proc.read_sys_int("net/ipv4/ip_unprivileged_port_start")
    except (OSError, ValueError):
        start = 1024
    from .kinds.udp import UdpSocketRecord

    ports = [r.port for r in view.of_type(TcpListenerRecord)]
    ports += [r.local_port for r in view.of_type(TcpConnectionRecord)]
    udp = {r.port for r in view.of_type(UdpSocketRecord)}
    return [f"{proto} port {p}, below net.ipv4.ip_unprivileged_port_start {start} (CAP_NET_BIND_SERVICE)"
            for proto, given in (("TCP", ports), ("UDP", udp)) for p in sorted(set(given)) if 0 < p < start]


# --- files: checked by the kernel, with the owner's filesystem ids -----------------

ACCESS_WORDS = {os.R_OK: "reading", os.W_OK: "writing", os.R_OK | os.W_OK: "reading and writing",
                os.X_OK: "search (as its working directory)", os.F_OK: "as a path"}


def _faccess(path: str, mode: int) -> int:
    """faccessat2(AT_EACCESS) with this thread's fs ids: 0 or the errno (the glibc
    wrapper may emulate AT_EACCESS with the effective uid; the syscall does not)."""
    r = _libc.syscall(nr.faccessat2, AT_FDCWD, os.fsencode(path), mode, AT_EACCESS)
    return 0 if r == 0 else ctypes.get_errno()


def as_user(uid: int, gid: int, groups: list[int], work):
    """Run `work()` in a new thread whose filesystem ids and groups are the user's
    (setfsuid/setfsgid/setgroups are per thread as raw syscalls; setfsuid away from
    0 drops the file capabilities); the thread ends with them.  Returns its result."""
    result: dict = {}

    def run():
        try:
            arr = (ctypes.c_uint * max(len(groups), 1))(*groups)
            if _libc.syscall(nr.setgroups, len(groups), arr) != 0:
                raise OSError(ctypes.get_errno(), "setgroups for the access check")
            _libc.syscall(nr.setfsgid, gid)
            _libc.syscall(nr.setfsuid, uid)
            if _libc.syscall(nr.setfsuid, -1) != uid or _libc.syscall(nr.setfsgid, -1) != gid:
                raise OSError(1, f"could not take uid {uid}'s filesystem ids for the access check")
            result["value"] = work()
        except BaseException as e:  # handed to the caller's thread
            result["error"] = e

    import threading  # (an untrusted image's check alone: not in a restore's start-up)

    t = threading.Thread(target=run, name="pyckpt access check", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


SKIPPED = {"pages", "replacement", "stdio", "deleted file", "memfd",
           "caller's terminal"}  # shell_job: the caller's own terminal, as stdio (kinds/tty.py)


def _wanted_access(key, fd: int) -> tuple[int, str]:
    kind = key if isinstance(key, str) else key[0]
    if kind == "cwd":
        return os.X_OK, "as its working directory (search)"
    if kind in ("exe", "map"):
        writable = kind == "map" and len(key) > 2 and key[2] & os.O_ACCMODE == os.O_RDWR
        return (os.R_OK | os.W_OK, "mapped shared and writable") if writable else (
            -1, "mapped" if kind == "map" else "as its executable")  # -1: read or execute
    flags = os_flags(fd)
    if flags & getattr(os, "O_PATH", 0o10000000):
        return os.F_OK, "as a path (O_PATH)"
    mode = {os.O_RDONLY: os.R_OK, os.O_WRONLY: os.W_OK, os.O_RDWR: os.R_OK | os.W_OK}[flags & os.O_ACCMODE]
    return mode, f"opened for {ACCESS_WORDS[mode]}"


def os_flags(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL)


def denied_files(owner: Owner, passed: dict, extra_paths: list[tuple[str, int, str]]) -> list[str]:
    """Files pyckpt opened for the image (`passed`: key -> fd) and named sockets it will
    connect to (`extra_paths`: path, access mode, words) that `owner` may not open so,
    in words."""
    checks = []  # (path, mode, words, (dev, ino) or None)
    for key, fd in passed.items():
        kind = key if isinstance(key, str) else key[0]
        if kind in SKIPPED:
            continue
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
            st = os.fstat(fd)
        except OSError:
            continue
        if not link.startswith("/") or link.endswith(" (deleted)"):
            continue  # a pipe, a socket, an anonymous inode, a re-created deleted file
        if stat.S_ISSOCK(st.st_mode):
            continue
        mode, words = _wanted_access(key, fd)
        checks.append((link, mode, words, (st.st_dev, st.st_ino)))
    checks += [(p, m, w, None) for p, m, w in extra_paths]
    if not checks:
        return []

    def work() -> list[str]:
        out = []
        for path, mode, words, ident in checks:
            err = (_faccess(path, os.R_OK) and _faccess(path, os.X_OK)) if mode == -1 else _faccess(path, mode)
            if not err and ident is not None:
                try:
                    now = os.stat(path)
                    if (now.st_dev, now.st_ino) != ident:
                        err = 2  # ENOENT: it is not the file that was opened (changed meanwhile)
                except OSError as e:
                    err = e.errno
            if err:
                out.append(f"{path} {words}, which {owner.subject} cannot ({os.strerror(err)})")
        return out

    uid, gid, groups = owner.fs_ids
    return as_user(uid, gid, groups, work)


def other_paths(image, deleted_dir) -> list[tuple[str, int, str]]:
    """Paths restore uses without keeping them open, as (path, access, words): the
    named sockets unix sockets connect to again (write permission on the socket),
    the inodes inotify watches (read permission), the directories deleted files are
    re-created in (unless the caller chose `deleted_dir`)."""
    from .kinds.deleted import DeletedContentRecord
    from .kinds.inotify import InotifyRecord
    from .kinds.unix import UnixSocketRecord

    out = []
    for r in image.of_type(UnixSocketRecord):
        if r.connect_to.startswith("/"):
            out.append((r.connect_to, os.W_OK, "as a socket to connect to"))
    for r in image.of_type(InotifyRecord):
        out += [(w.path, os.R_OK, "watched with inotify") for w in r.watches if w.path.startswith("/")]
    if deleted_dir is None:
        for r in image.of_type(DeletedContentRecord):
            out.append((os.path.dirname(r.path) or "/", os.W_OK | os.X_OK,
                        f"as the directory to re-create the deleted file {os.path.basename(r.path)} in"))
    return out


def foreign_objects(owner: Owner, image) -> list[str]:
    """Files restore creates with the owner and mode the image says (deleted files,
    memfds) that belong to someone else than `owner`, in words: a deleted file
    re-created as root's with mode 4755 would be a set-user-ID root program."""
    from .kinds.deleted import DeletedContentRecord
    from .kinds.memfd import MemfdRecord

    out = []
    for what, r in ([("deleted file " + x.path, x) for x in image.of_type(DeletedContentRecord)]
                    + [(f"memfd {x.name!r}", x) for x in image.of_type(MemfdRecord)]):
        if owner.uid is None or r.uid != owner.uid or owner.gids is None or r.gid not in owner.gids:
            out.append(f"a {what} owned by uid {r.uid}, gid {r.gid} (mode {r.mode:04o})")
    from .kinds.sysvipc import SHM_LOCKED, SysvMsgRecord, SysvSemRecord, SysvShmRecord

    for r in [*image.of_type(SysvShmRecord), *image.of_type(SysvSemRecord), *image.of_type(SysvMsgRecord)]:
        # SysV objects are made by pyckpt (root) with the owner the image says; a locked
        # segment would be locked with root's CAP_IPC_LOCK
        if (owner.uid is None or r.uid != owner.uid or owner.gids is None or r.gid not in owner.gids
                or (isinstance(r, SysvShmRecord) and r.mode & SHM_LOCKED)):
            out.append(f"a {r.describe()} owned by uid {r.uid}, gid {r.gid} (mode {r.mode:04o})")
    return out
