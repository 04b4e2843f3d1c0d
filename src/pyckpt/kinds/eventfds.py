"""eventfd, signalfd and timerfd: anon-inode files whose whole state is in fdinfo.

Dump reads /proc/PID/fdinfo/N only (a read() would consume the count, a
signal or the ticks); restore creates the same kind of file in pyckpt with
the same state, and the new task inherits it.

- eventfd: the 64-bit counter and semaphore mode.  The kernel's
  `eventfd-id` is not kept (a new eventfd gets a new one).
- signalfd: the signal mask.  A signalfd reads the signals of whoever reads
  it, so the restored one needs nothing else; the pending signals
  themselves are the task's state (signals kind).
- timerfd: clock, interval, the time left and the expirations not read
  yet (`ticks`, put back exactly with TFD_IOC_SET_TICKS).  A relative timer
  gets its time left again, counted from the restore: the time the process
  spent in the image does not count.  An absolute timer on a wall clock
  (CLOCK_REALTIME[_ALARM] with TFD_TIMER_ABSTIME) keeps its wall-clock
  deadline, so one whose deadline passed while the process was in the
  image fires at once (with the periods it missed); an absolute timer on
  another clock (whose values do not carry over a reboot) is restored as
  relative.  Limits: a timer whose
  expiry was due within the instant of the dump but had not yet run shows
  as expired-with-no-ticks in fdinfo and comes back disarmed; a
  CANCEL_ON_SET timer already cancelled by a clock change comes back
  armed (fdinfo does not show the cancelled state).

Status flags: O_NONBLOCK is kept; O_ASYNC (which needs an owner fdinfo
does not show) is refused at dump.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import time
from .._dataclass import dataclass

from ..arch import libc as _libc
from ..errors import RestoreError, UnsupportedFdError
from ..image import record
from ..proc.anon_fdinfo import (
    parse_eventfd,
    parse_signalfd,
    parse_timerfd,
    read_fdinfo_text,
)
from .context import DumpContext, RestoreContext
from .files import DumpedFd, FileKind, file_kind

O_CLOEXEC = os.O_CLOEXEC
O_NONBLOCK = os.O_NONBLOCK
O_ASYNC = 0o20000
EFD_SEMAPHORE = 1
TFD_TIMER_ABSTIME = 1
TFD_TIMER_CANCEL_ON_SET = 2
TFD_IOC_SET_TICKS = 0x40085400  # _IOW('T', 0, __u64); needs CONFIG_CHECKPOINT_RESTORE
CLOCK_REALTIME, CLOCK_REALTIME_ALARM = 0, 8
CLOCK_NAMES = {0: "CLOCK_REALTIME", 1: "CLOCK_MONOTONIC", 7: "CLOCK_BOOTTIME",
               8: "CLOCK_REALTIME_ALARM", 9: "CLOCK_BOOTTIME_ALARM"}
NS = 1_000_000_000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _ts(ns: int) -> _Timespec:
    return _Timespec(ns // NS, ns % NS)


def _oserror(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def _refuse_async(f: DumpedFd, kind: str) -> None:
    if f.info.flags & O_ASYNC:
        raise UnsupportedFdError(f.pid, f.fd, f"{kind} with O_ASYNC (signal-driven I/O)", f.link)


def _status_flags(f: DumpedFd) -> int:
    return f.info.flags & ~O_CLOEXEC


# --- eventfd -----------------------------------------------------------------

@record(80, scope="image")
@dataclass
class EventfdRecord:
    id: int
    flags: int  # status flags (O_NONBLOCK), no O_CLOEXEC: that is per fd
    count: int
    semaphore: bool


@file_kind
class Eventfd(FileKind):
    name = "eventfd"
    records = (EventfdRecord,)

    def claims(self, f: DumpedFd) -> bool:
        return f.link == "anon_inode:[eventfd]"

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        _refuse_async(f, "eventfd")
        info = parse_eventfd(ctx.tables.fdinfo_text(f.pid, f.fd))
        return [EventfdRecord(file_id, _status_flags(f), info.count, info.semaphore)]

    def open(self, rctx: RestoreContext, rec: EventfdRecord) -> int:
        flags = os.EFD_CLOEXEC | (os.EFD_NONBLOCK if rec.flags & O_NONBLOCK else 0)
        fd = os.eventfd(0, flags | (EFD_SEMAPHORE if rec.semaphore else 0))
        try:
            if rec.count:  # eventfd()'s initial value is only 32 bits wide: write the count
                os.eventfd_write(fd, rec.count)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def describe(self, rec: EventfdRecord) -> str:
        return f"eventfd count={rec.count}{' semaphore' if rec.semaphore else ''}"


# --- signalfd ----------------------------------------------------------------

@record(81, scope="image")
@dataclass
class SignalfdRecord:
    id: int
    flags: int
    sigmask: int  # bit N-1 = signal N


def signal_names(mask: int) -> str:
    from ..signals import _name  # (signal's names: for words, not at start-up)

    return ",".join(_name(n) for n in range(1, 65) if mask >> (n - 1) & 1) or "none"


@file_kind
class Signalfd(FileKind):
    name = "signalfd"
    records = (SignalfdRecord,)

    def claims(self, f: DumpedFd) -> bool:
        return f.link == "anon_inode:[signalfd]"

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        _refuse_async(f, "signalfd")
        return [SignalfdRecord(file_id, _status_flags(f), parse_signalfd(ctx.tables.fdinfo_text(f.pid, f.fd)))]

    def open(self, rctx: RestoreContext, rec: SignalfdRecord) -> int:
        mask = (ctypes.c_uint64 * 16)(rec.sigmask)  # a full sigset_t; glibc passes 8 bytes of it
        flags = os.O_CLOEXEC | (O_NONBLOCK if rec.flags & O_NONBLOCK else 0)
        fd = _libc.signalfd(-1, ctypes.byref(mask), flags)
        if fd < 0:
            raise _oserror(f"signalfd with mask {rec.sigmask:#x}")
        return fd

    def describe(self, rec: SignalfdRecord) -> str:
        return f"signalfd {signal_names(rec.sigmask)}"


# --- timerfd -----------------------------------------------------------------

@record(82, scope="image")
@dataclass
class TimerfdRecord:
    id: int
    flags: int
    clockid: int
    settime_flags: int  # TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET
    value_ns: int  # time left at dump; 0: disarmed or expired
    interval_ns: int
    ticks: int  # expirations not read at dump
    clock_ns: int  # the timer's clock when fdinfo was read (for wall-clock deadlines)


@file_kind
class Timerfd(FileKind):
    name = "timerfd"
    records = (TimerfdRecord,)

    def claims(self, f: DumpedFd) -> bool:
        return f.link == "anon_inode:[timerfd]"

    def dump(self, ctx: DumpContext, f: DumpedFd, file_id: int) -> list:
        _refuse_async(f, "timerfd")
        info = parse_timerfd(read_fdinfo_text(f.pid, f.fd))
        clock_ns = time.clock_gettime_ns(_readable_clock(info.clockid))
        return [TimerfdRecord(file_id, _status_flags(f), info.clockid, info.settime_flags,
                              info.value_ns, info.interval_ns, info.ticks, clock_ns)]

    def open(self, rctx: RestoreContext, rec: TimerfdRecord) -> int:
        flags = os.O_CLOEXEC | (O_NONBLOCK if rec.flags & O_NONBLOCK else 0)
        fd = _libc.timerfd_create(rec.clockid, flags)
        if fd < 0:
            raise _oserror(f"timerfd_create on clock {rec.clockid}")
        try:
            arm_timerfd(fd, rec)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def describe(self, rec: TimerfdRecord) -> str:
        clock = CLOCK_NAMES.get(rec.clockid, f"clock {rec.clockid}")
        if rec.value_ns == 0 and rec.interval_ns == 0:
            state = "disarmed"
        else:
            state = f"{rec.value_ns / NS:.3f} s left"
            if rec.interval_ns:
                state += f", every {rec.interval_ns / NS:.3f} s"
        return f"timerfd {clock} {state}" + (f", {rec.ticks} ticks unread" if rec.ticks else "")


def _readable_clock(clockid: int) -> int:
    """The clock to read for a timer's clock (the _ALARM clocks are read as their base)."""
    return {8: 0, 9: 7}.get(clockid, clockid)


def arm_timerfd(fd: int, rec: TimerfdRecord) -> None:
    """Set timer `fd` as `rec` describes, then put back its unread ticks."""
    value, flags = rec.value_ns, 0
    if rec.value_ns == 0 and rec.interval_ns:
        value = 1  # a periodic timer is always armed; fdinfo shows 0 when due right now
    if value and rec.settime_flags & TFD_TIMER_ABSTIME and rec.clockid in (CLOCK_REALTIME, CLOCK_REALTIME_ALARM):
        value = rec.clock_ns + rec.value_ns  # the wall-clock deadline it had
        flags = TFD_TIMER_ABSTIME | (rec.settime_flags & TFD_TIMER_CANCEL_ON_SET)
    if value:
        spec = _Itimerspec(_ts(rec.interval_ns), _ts(value))
        if _libc.timerfd_settime(fd, flags, ctypes.byref(spec), None) != 0:
            raise _oserror(f"timerfd_settime ({value} ns, interval {rec.interval_ns} ns)")
    if rec.ticks:
        try:
            fcntl.ioctl(fd, TFD_IOC_SET_TICKS, struct.pack("Q", rec.ticks))
        except OSError as e:
            raise RestoreError(f"cannot put back {rec.ticks} unread expirations of a timerfd "
                               f"(TFD_IOC_SET_TICKS: {e.strerror}); the kernel needs "
                               "CONFIG_CHECKPOINT_RESTORE") from None
