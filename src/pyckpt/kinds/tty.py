"""Terminals: pseudo-terminal pairs inside the image, controlling terminals, shell jobs.

**Pairs inside the image.**  A pty master (an fd on /dev/ptmx; fdinfo's
`tty-index` is its number) is saved with the state of its pair: termios
(flags, speeds, control characters), the window size, packet mode
(TIOCPKT), the locked state (TIOCSPTLCK), and the owner, group and mode of
/dev/pts/N, given to the new node (a program may reopen its terminal by name;
an image an ordinary user owns gives it to that user at most).  A slave fd
(/dev/pts/N) is saved as part of the image when the master of pair N is held
by a process of the image (of the same devpts instance, /dev/pts); a slave
whose master is held outside (a terminal emulator, sshd, a tmux server not in the image)
is the user's terminal: external (files.py), restored with `fds=`,
`inherit_stdio` or `shell_job` (below).  At restore pyckpt opens a new pair
(/dev/ptmx) and hands the master and each slave description (TIOCGPTPEER,
one per saved slave description, with its status flags) to the tasks.  The
pair keeps its number when /dev/pts/N is free then (pyckpt opens /dev/ptmx
until the kernel hands out N, at most PTY_TRIES times; a number whose node is
gone but which the kernel has not released yet, the pair of a process just
killed, is waited for up to PTY_RELEASE_WAIT); otherwise it gets
another, and ttyname() in the restored process shows the new /dev/pts/M (a
name the program had cached — tmux's pane_tty, $SSH_TTY — keeps the old one).

Data queued in the pair is **not** saved (as CRIU does not): what the slave
side wrote that the master had not read yet, and what was written to the
master that the slave had not read.  The master's queue can be read only by
consuming it, and written back only through the line discipline (which would
process it again), so saving it would change the target.  A program that
waits for such data after a restore waits for the next output instead.  The
byte count of the output queue at the dump is kept (`queued`; `pyckpt show`).

**Controlling terminal and foreground group.**  A session leader whose
controlling terminal is a pair of the image gets it back: at restore, right
after its fds are placed, it calls TIOCSCTTY (injected) on a slave of the new
pair, and TIOCSPGRP with the foreground process group it had, when that group
is led by a process of the image (else the leader's group stays foreground).
Every other process of its session shares it as before.

**Shell jobs** (`shell_job=True`, `pyckpt restore --shell-job`).  A process
whose controlling terminal was the user's (outside the image), started from a
shell, is restored into the caller's session (the restored tree is made from
pyckpt, so it is in pyckpt's session already), as its own process group (the
first process leads one even if it did not), with the caller's terminal in place
of every fd that was a terminal outside the image (a new open of the caller's
terminal, with the saved status flags: not the caller's own description), and
that group is made the terminal's foreground group just before the release
(also when it was a background job at the dump, as `fg` would): input reaches
it, Ctrl-C and Ctrl-Z reach it.  `pyckpt restore --shell-job`
then waits for it as a shell waits for a job (`wait_job`): it exits with the
job's exit status (128+N when signal N killed it) and gives the terminal's
foreground back to its own group; when the job stops (Ctrl-Z) pyckpt stops too,
so the shell sees a stopped job, and `fg` continues both.  Refused, before
anything is made: no controlling terminal, pyckpt not in the foreground of it,
with `new_pidns` (the job would not be pyckpt's child to wait for), a first
process that led its own session without a terminal (a daemon), and a process
that led its own session on the outside terminal (a login shell, the shell of
a tmux pane whose server is not in the image): it could only get the terminal
back by stealing it from the caller's session.  Such a process is also
what `dump(kill=True)` refuses to kill (`refuse_kill`): its image could not be
restored onto a terminal; any other process on a terminal is killed, and the
dump's summary says that a restore needs `--shell-job`.
"""

from __future__ import annotations

import fcntl
import os
import _signal as signal  # (signal's calls without its enums' import)
import stat
import time
import struct
import termios
from .._dataclass import dataclass, replace

from .. import proc
from ..errors import ImageError, RestoreError, UnsupportedError
from ..image import record
from ..inject import nr
from .context import DumpContext, RestoreContext
from .files import (DumpedFd, ExternalFileRecord, FileKind, TableHook, description_records, file_kind,
                    set_status_flags, table_hook, take_fd)

TIOCSCTTY, TIOCSPGRP = 0x540E, 0x5410
TIOCGWINSZ, TIOCSWINSZ = 0x5413, 0x5414
TIOCPKT, TIOCGPKT = 0x5420, 0x80045438
TIOCSPTLCK, TIOCGPTLCK = 0x40045431, 0x80045439
TIOCGPTN, TIOCGPTPEER = 0x80045430, 0x5441
FIONREAD = 0x541B
PTMX = (5, 2)
PTS_MAJORS = range(136, 144)
PTY_TRIES = 64  # /dev/ptmx opens to get a pair its old number back
PTY_RELEASE_WAIT = 0.1  # seconds to wait for a number whose node is gone to be free again
NCCS = 32
O_CLOEXEC = os.O_CLOEXEC
SETTABLE = os.O_APPEND | os.O_NONBLOCK | os.O_ASYNC | getattr(os, "O_DIRECT", 0) | os.O_NOATIME


@record(130, scope="image")
@dataclass
class PtyMasterRecord:
    """A pty master and the state of its pair."""

    id: int
    flags: int  # status flags of the master's description (no O_CLOEXEC)
    index: int  # N of /dev/pts/N at the dump
    iflag: int
    oflag: int
    cflag: int
    lflag: int
    ispeed: int
    ospeed: int
    cc: list[int]  # NCCS control characters
    winsize: list[int]  # rows, columns, x pixels, y pixels
    packet: bool  # TIOCPKT
    locked: bool  # TIOCSPTLCK
    queued: int  # bytes the slave side had written, unread by the master (not saved)
    uid: int = -1  # owner, group and mode of /dev/pts/N (-1: not known)
    gid: int = -1
    mode: int = 0o620


@record(131, scope="image")
@dataclass
class PtySlaveRecord:
    """A slave description of a pair whose master is in the image."""

    id: int
    flags: int
    index: int  # N of /dev/pts/N at the dump: the pair of the image's master of that number


@record(132, scope="process")
@dataclass
class CttyRecord:
    """A process's controlling terminal (only for processes that have one)."""

    index: int  # N of the pair of the image (/dev/pts/N at the dump), -1: outside the image
    name: str  # the terminal at the dump ("/dev/pts/3")
    leader: bool  # the process led the terminal's session
    foreground: int  # the terminal's foreground process group at the dump (0: none)


# --- dump ---------------------------------------------------------------------------

def read_tty_stat(pid: int) -> tuple[int, int, int, int]:
    """(session, tty_nr, tpgid, pgrp) from /proc/PID/stat."""
    s = proc.read_stat(pid)
    return s.session, s.tty_nr, s.tpgid, s.pgrp


def _devpts_dev() -> int:
    try:
        return os.stat("/dev/pts").st_dev
    except OSError:
        return -1


def masters_in(pids: list[int]) -> dict[int, tuple[int, int]]:
    """pty number -> (pid, fd) of a master some process of `pids` holds (of /dev/pts)."""
    found: dict[int, tuple[int, int]] = {}
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for n in names:
            try:
                st = os.stat(f"/proc/{pid}/fd/{n}")
                if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != PTMX:
                    continue
                index = proc.read_fdinfo(pid, int(n)).extra.get("tty-index")
                if index is not None:
                    found.setdefault(int(index), (pid, int(n)))
            except (OSError, ValueError):
                continue
    return found


def _masters(ctx: DumpContext) -> dict[int, tuple[int, int]]:
    """masters_in(the image's processes), once per dump."""
    key = "tty: masters"
    if key not in ctx.objects:
        ctx.objects[key] = masters_in(ctx.tree or [ctx.pid])
    return ctx.objects[key]


def _pts_index(rdev: int) -> int | None:
    return os.minor(rdev) if os.major(rdev) in PTS_MAJORS and os.major(rdev) == 136 else None


def _tty_name(tty_nr: int) -> str:
    """A controlling terminal's device number (/proc/PID/stat tty_nr) in words."""
    index = _pts_index(tty_nr)
    return f"/dev/pts/{index}" if index is not None else f"terminal {os.major(tty_nr)}:{os.minor(tty_nr)}"


def _ioctl_int(fd: int, request: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, request, b"\0" * 4))[0]


@file_kind
class PtyMaster(FileKind):
    name = "pty master"
    records = (PtyMasterRecord,)
    before = ("terminal",)  # regfile.Terminal takes every other terminal as external

    def claims(self, f: DumpedFd) -> bool:
        return (stat.S_ISCHR(f.st.st_mode) and (os.major(f.st.st_rdev), os.minor(f.st.st_rdev)) == PTMX
                and "tty-index" in f.info.extra)

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        copy = take_fd(f.pid, f.fd)
        try:
            index = _ioctl_int(copy, TIOCGPTN)
            iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(copy)
            ws = struct.unpack("HHHH", fcntl.ioctl(copy, TIOCGWINSZ, b"\0" * 8))
            packet = bool(_ioctl_int(copy, TIOCGPKT))
            locked = bool(_ioctl_int(copy, TIOCGPTLCK))
            queued = _ioctl_int(copy, FIONREAD)
            node = os.stat(f"/proc/{f.pid}/root/dev/pts/{index}")
        except OSError as e:
            raise UnsupportedError(f"process {f.pid}: fd {f.fd} is a pty master whose state cannot "
                                   f"be read ({e.strerror})", pid=f.pid) from None
        finally:
            os.close(copy)
        cc = [c[0] if isinstance(c, bytes) else int(c) for c in cc]
        return [PtyMasterRecord(file_id, f.info.flags & ~O_CLOEXEC, index, iflag, oflag, cflag, lflag,
                                ispeed, ospeed, cc, list(ws), packet, locked, queued,
                                node.st_uid, node.st_gid, stat.S_IMODE(node.st_mode))]

    def open(self, rctx: RestoreContext, rec: PtyMasterRecord) -> int:
        pair = _pair(rctx, rec)
        return set_status_flags(fcntl.fcntl(pair, fcntl.F_DUPFD_CLOEXEC, 3), rec.flags, SETTABLE)

    def describe(self, rec: PtyMasterRecord) -> str:
        lost = f", {rec.queued} bytes queued (not saved)" if rec.queued else ""
        return (f"pty master of /dev/pts/{rec.index} ({rec.winsize[0]}x{rec.winsize[1]}"
                f"{', packet mode' if rec.packet else ''}{', locked' if rec.locked else ''}{lost})")


@file_kind
class PtySlave(FileKind):
    name = "pty slave"
    records = (PtySlaveRecord,)
    before = ("terminal",)

    def claims(self, f: DumpedFd) -> bool:
        if not stat.S_ISCHR(f.st.st_mode) or f.st.st_dev != _devpts_dev():
            return False
        index = _pts_index(f.st.st_rdev)
        return index is not None

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        index = _pts_index(f.st.st_rdev)
        holder = _masters(ctx).get(index)
        if holder is None:  # the user's terminal: outside the image
            return [ExternalFileRecord(file_id, f"terminal {f.link}", f.info.flags & ~O_CLOEXEC)]
        return [PtySlaveRecord(file_id, f.info.flags & ~O_CLOEXEC, index)]

    def open(self, rctx: RestoreContext, rec: PtySlaveRecord) -> int:
        master = _master_record(rctx, rec.index)
        return set_status_flags(_peer(rctx, master, rec.flags), rec.flags, SETTABLE)

    def describe(self, rec: PtySlaveRecord) -> str:
        return f"pty slave /dev/pts/{rec.index} (its master in the image)"


@table_hook
class Ctty(TableHook):
    """The controlling terminal of a session leader (see the module's docstring)."""

    name = "controlling terminal"

    def dump(self, ctx: DumpContext, table: list) -> list:
        sid, tty_nr, tpgid, _ = read_tty_stat(ctx.pid)
        if tty_nr == 0:
            return []
        index = _pts_index(tty_nr)
        masters = _masters(ctx)
        name = _tty_name(tty_nr)
        internal = index is not None and index in masters
        return [CttyRecord(index if internal else -1, name, sid == ctx.pid, max(tpgid, 0))]

    def prepare(self, rctx: RestoreContext) -> None:
        if rctx.options.shell_job:  # refused here, before anything is made: no terminal,
            rctx.collect(lambda: caller_terminal(rctx))  # not in its foreground, new_pidns
            rctx.collect(lambda: _joins_caller(rctx))
        recs = rctx.image.of_type(CttyRecord)
        if not recs:
            return
        rec = recs[0]
        if rec.index >= 0:
            if rec.leader:  # a slave of the new pair to make it the controlling terminal with
                master = _master_record(rctx, rec.index)
                rctx.pass_fd(("pty ctty", rec.index), lambda: _peer(rctx, master, os.O_RDWR))
        elif rctx.options.shell_job:
            if rec.leader:
                raise RestoreError(
                    f"shell_job: process {rctx.image_pid} led its own session on the terminal "
                    f"{rec.name}, outside the image; a restored process gets the caller's terminal "
                    "by joining the caller's session, which a session leader cannot (give its "
                    "fds replacements with fds= / --fd instead; it then has no controlling terminal)")

    def restore(self, rctx: RestoreContext) -> None:
        recs = rctx.image.of_type(CttyRecord)
        if not recs or recs[0].index < 0 or not recs[0].leader:
            return
        rec, inj = recs[0], rctx.inj
        fd = rctx.passed[("pty ctty", rec.index)]
        inj.check(nr.ioctl, fd, TIOCSCTTY, 0, what=f"TIOCSCTTY (controlling terminal, was {rec.name})")
        if rec.foreground and rec.foreground != rctx.image_pid and rec.foreground in _group_leaders(rctx):
            inj.write(rctx.scratch, struct.pack("<i", rec.foreground))
            inj.check(nr.ioctl, fd, TIOCSPGRP, rctx.scratch,
                      what=f"TIOCSPGRP (foreground group {rec.foreground})")


def _joins_caller(rctx: RestoreContext) -> None:
    """shell_job: the image's first process must be able to join the caller's session."""
    from .files import PLAN
    from .task import TaskRecord

    rec = rctx.image.one(TaskRecord)
    first = rctx.image_pid == rctx.shared[PLAN].root_pid
    if first and rec.sid == rec.pid and not rctx.image.of_type(CttyRecord):  # (else: Ctty.prepare)
        raise RestoreError(
            f"shell_job: process {rec.pid} led its own session (without a terminal); a shell job "
            "joins the caller's session, which a session leader cannot: restore it without "
            "shell_job / --shell-job")


def _group_leaders(rctx: RestoreContext) -> set[int]:
    """PIDs of the image's live processes that lead their process group."""
    from .task import TaskRecord

    return {r.pid for r in getattr(rctx.image, "reader", rctx.image).records
            if isinstance(r, TaskRecord) and r.pgid == r.pid}


# --- restore of pairs -------------------------------------------------------------

def _master_record(rctx: RestoreContext, index: int) -> PtyMasterRecord:
    for d in description_records(rctx.image):
        if isinstance(d, PtyMasterRecord) and d.index == index:
            return d
    raise ImageError(f"image at {rctx.image.path}: a pty slave or controlling terminal refers to "
                     f"/dev/pts/{index}, whose master the image does not hold")


def _pair(rctx: RestoreContext, rec: PtyMasterRecord) -> int:
    """The new pair's master in pyckpt (opened once per restore, shared by the tree)."""
    trust = rctx.shared.get("trust: owner, paths")  # an image an ordinary user owns (restorer.py)
    owner = None if trust is None else trust[0]
    if owner is not None:  # the terminal is given to that user at most
        rec = replace(rec, uid=-1 if owner.uid is None else owner.uid, gid=-1)
    return rctx.pass_fd(("pty pair", rec.id), lambda: open_pair(rec))


def open_pair(rec: PtyMasterRecord) -> int:
    """A new pty pair with the state of `rec`: its master, in pyckpt, unlocked (locked
    again by _peer once a slave is open, when it was), its slave's node owned as
    `rec` says."""
    held: list[int] = []
    master = -1
    try:
        free = not os.path.exists(f"/dev/pts/{rec.index}")
        deadline = time.monotonic() + PTY_RELEASE_WAIT
        for _ in range(PTY_TRIES if free else 1):
            fd = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | O_CLOEXEC)
            number = _ioctl_int(fd, TIOCGPTN)
            if number > rec.index and free and time.monotonic() < deadline \
                    and not os.path.exists(f"/dev/pts/{rec.index}"):
                # Its node is gone but not its number: the pair of a process just
                # killed (dump --kill) is released by the kernel a moment later.
                os.close(fd)
                time.sleep(0.001)
                continue
            if number >= rec.index or not free:
                master = fd
                break
            held.append(fd)  # a lower free number: hold it, the next open gets a higher one
        else:
            master = held.pop(0) if held else os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | O_CLOEXEC)
    except OSError as e:
        raise RestoreError(f"cannot open a new pseudo-terminal pair (/dev/ptmx) for /dev/pts/{rec.index} "
                           f"of the image: {e.strerror}") from None
    finally:
        for fd in held:
            os.close(fd)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        cc: list = [bytes([c]) for c in rec.cc]
        if not rec.lflag & termios.ICANON:
            cc[termios.VMIN], cc[termios.VTIME] = rec.cc[termios.VMIN], rec.cc[termios.VTIME]
        termios.tcsetattr(master, termios.TCSANOW, [rec.iflag, rec.oflag, rec.cflag, rec.lflag,
                                                    rec.ispeed, rec.ospeed, cc])
        fcntl.ioctl(master, TIOCSWINSZ, struct.pack("HHHH", *rec.winsize))
        if rec.packet:
            fcntl.ioctl(master, TIOCPKT, struct.pack("i", 1))
        if rec.locked:
            fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 1))
        if rec.uid >= 0:  # /dev/pts/M as /dev/pts/N was: its owner may reopen it by name
            node = f"/dev/pts/{_ioctl_int(master, TIOCGPTN)}"
            os.chown(node, rec.uid, rec.gid)  # (gid -1: left as devpts made it)
            os.chmod(node, rec.mode)
    except (OSError, termios.error) as e:
        os.close(master)
        raise RestoreError(f"cannot give the new pseudo-terminal of /dev/pts/{rec.index} its saved "
                           f"state: {e}") from None
    return master


def _peer(rctx: RestoreContext, master: PtyMasterRecord, flags: int) -> int:
    """A new slave description of the new pair (TIOCGPTPEER), in pyckpt."""
    pair = _pair(rctx, master)
    access = flags & 3 if flags & 3 in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR) else os.O_RDWR
    try:
        if master.locked:
            fcntl.ioctl(pair, TIOCSPTLCK, struct.pack("i", 0))
        try:
            return fcntl.ioctl(pair, TIOCGPTPEER, access | os.O_NOCTTY | O_CLOEXEC)
        finally:
            if master.locked:
                fcntl.ioctl(pair, TIOCSPTLCK, struct.pack("i", 1))
    except OSError as e:
        raise RestoreError(f"cannot open the slave of the new pseudo-terminal for /dev/pts/"
                           f"{master.index} of the image: {e.strerror}") from None


# --- shell jobs ---------------------------------------------------------------------

SHELL_JOB = "tty: the caller's terminal"  # RestoreContext.shared


def caller_terminal(rctx: RestoreContext | None = None, *, foreground: bool = True) -> str:
    """The path of pyckpt's controlling terminal, checked for a shell job: pyckpt has
    one and (`foreground`) is in its foreground group (a RestoreError otherwise)."""
    if rctx is not None and SHELL_JOB in rctx.shared:
        return rctx.shared[SHELL_JOB]
    if rctx is not None and rctx.options.new_pidns:
        raise RestoreError("shell_job (--shell-job) and new_pidns (--new-pidns) do not go together: "
                           "in a new PID namespace the job is not pyckpt's child, to wait for")
    _, tty_nr, tpgid, pgrp = read_tty_stat(os.getpid())
    if tty_nr == 0:
        raise RestoreError("shell_job (--shell-job) gives the restored process the caller's terminal, "
                           "and pyckpt has none: run it from a terminal (or use --inherit-stdio / --fd)")
    path = None
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd) and os.fstat(fd).st_rdev == tty_nr:
                path = os.ttyname(fd)
                break
        except OSError:
            continue
    if path is None:
        index = _pts_index(tty_nr)
        path = f"/dev/pts/{index}" if index is not None else "/dev/tty"
    if foreground and tpgid != pgrp:
        raise RestoreError(f"shell_job (--shell-job): pyckpt is not in the foreground of its terminal "
                           f"{path} (run it as a foreground command, not with &)")
    if rctx is not None:
        rctx.shared[SHELL_JOB] = path
    return path


def on_outside_terminal(image) -> bool:
    """Whether a process of the image had a controlling terminal outside the image: a
    shell job, which `shell_job` restores onto the caller's terminal."""
    return any(isinstance(r, CttyRecord) and r.index < 0
               for r in getattr(image, "reader", image).records)


def open_caller_terminal(rctx: RestoreContext, flags: int) -> int:
    """A new description of the caller's terminal for an fd that was a terminal outside
    the image (shell_job), with that fd's access mode and status flags."""
    path = caller_terminal(rctx)
    access = flags & 3 if flags & 3 in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR) else os.O_RDWR
    try:
        fd = os.open(path, access | os.O_NOCTTY | O_CLOEXEC)
    except OSError as e:
        raise RestoreError(f"shell_job: cannot open the caller's terminal {path}: {e.strerror}") from None
    return set_status_flags(fd, flags, SETTABLE)


def _set_foreground(fd: int, pgid: int) -> None:
    """tcsetpgrp, as a background process may (SIGTTOU blocked meanwhile)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        os.tcsetpgrp(fd, pgid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def take_foreground(root: RestoreContext) -> None:
    """shell_job: make the restored root's process group the foreground group of the
    caller's terminal (just before the release)."""
    path = caller_terminal(root)
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | O_CLOEXEC)
    try:
        _set_foreground(fd, os.getpgid(root.pid))
    except OSError as e:
        raise RestoreError(f"shell_job: cannot put process {root.image_pid} in the foreground of "
                           f"{path}: {e.strerror}") from None
    finally:
        os.close(fd)


def wait_job(pid: int) -> int:
    """Wait for the restored shell job `pid` (a child of pyckpt) as a shell waits for a
    job; its exit status as a shell gives it (128+N for a signal).  When the job stops,
    pyckpt takes the terminal back and stops itself; continued, it gives the terminal to
    the job again and continues it.  The terminal's foreground is pyckpt's group again
    when it returns."""
    path = caller_terminal(foreground=False)  # pyckpt's own terminal (the job has its foreground)
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | O_CLOEXEC)
    pgid = os.getpgid(pid)
    try:
        while True:
            try:
                _, status = os.waitpid(pid, os.WUNTRACED)
            except InterruptedError:
                continue
            if os.WIFSTOPPED(status):
                _set_foreground(fd, os.getpgrp())
                os.kill(os.getpid(), signal.SIGSTOP)  # the shell sees this job stopped; `fg`...
                _set_foreground(fd, pgid)
                os.killpg(pgid, signal.SIGCONT)
                continue
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.WEXITSTATUS(status)
    finally:
        try:
            _set_foreground(fd, os.getpgrp())
        except OSError:
            pass  # the terminal hung up meanwhile: nobody's foreground to give back
        finally:
            os.close(fd)


def refuse_kill(pid: int) -> None:
    """dump(kill=True): refuse (UnsupportedError, before anything is touched) to kill a
    tree in which a process leads its session on a terminal outside the image: no
    restore could give it that terminal back.  Other processes on a terminal restore
    with shell_job."""
    from ..dumper import _children

    tree, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        if p not in tree:
            tree.append(p)
            todo += _children(p)
    masters = masters_in(tree)
    for p in tree:
        try:
            sid, tty_nr, _, _ = read_tty_stat(p)
        except (OSError, ValueError, IndexError):
            continue
        index = _pts_index(tty_nr)
        if tty_nr and sid == p and (index is None or index not in masters):
            name = _tty_name(tty_nr)
            raise UnsupportedError(
                f"process {p} leads its session on the terminal {name}, outside the image: killed, it "
                "could not be restored onto a terminal (--shell-job restores a process that joined a "
                "shell's session, not a session leader); dump it without --kill", pid=p)


# --- validation -----------------------------------------------------------------------

def validate(image) -> None:
    """Pair state fits the kernel's types; every slave and controlling terminal names a
    saved master; a process's controlling terminal is one record."""
    masters = [d for d in description_records(image) if isinstance(d, PtyMasterRecord)]
    indices = {d.index for d in masters}
    if len(indices) != len(masters):
        raise ImageError(f"image at {image.path}: two pty masters of one number")
    for d in image.of_type(PtyMasterRecord):
        if not (0 <= d.index < 1 << 20 and len(d.cc) == NCCS and len(d.winsize) == 4
                and all(0 <= c < 256 for c in d.cc) and all(0 <= w < 1 << 16 for w in d.winsize)
                and all(0 <= v < 1 << 32 for v in (d.iflag, d.oflag, d.cflag, d.lflag, d.ispeed, d.ospeed))
                and d.queued >= 0 and -1 <= d.uid < 1 << 32 and -1 <= d.gid < 1 << 32
                and 0 <= d.mode <= 0o7777):
            raise ImageError(f"image at {image.path}: pty master #{d.id} has a state out of range")
    for d in image.of_type(PtySlaveRecord):
        if d.index not in indices:
            raise ImageError(f"image at {image.path}: pty slave #{d.id} names no saved pty master")
    cttys = image.of_type(CttyRecord)
    if len(cttys) > 1:
        raise ImageError(f"image at {image.path}: a process has two controlling terminals")
    for c in cttys:
        if c.index != -1 and c.index not in indices:
            raise ImageError(f"image at {image.path}: a controlling terminal names no saved pty master")
        if not 0 <= c.foreground <= 1 << 22:
            raise ImageError(f"image at {image.path}: a foreground process group out of range")
