"""Timers: interval timers (ITIMER_REAL — also what alarm() sets — VIRTUAL, PROF)
and POSIX timers (timer_create).

Interval timers are read with injected getitimer calls (time left and
interval).  POSIX timers are listed by /proc/PID/timers (id, signal and its
value, how they notify, clock) and read with injected timer_gettime.  Both
are armed again in the DEFERRED stage, close to the release, so the restore
itself eats little of the time left; a timer that expires during the last
steps delivers its signal once the task runs (all signals are blocked while
it is restored).  POSIX timers get their own ids back through
prctl(PR_TIMER_CREATE_RESTORE_IDS), which makes timer_create take the id it
is given.  Overrun counts are not kept.
"""

from __future__ import annotations

import struct
from .._dataclass import dataclass

from ..errors import RestoreError
from ..image import record
from ..inject import nr, spread
from ..proc import read_timers
from .context import DumpContext, RestoreContext, restore_hook

ITIMERVAL = struct.Struct("<qqqq")  # it_interval (sec, usec), it_value (sec, usec)
NAMES = ("real", "virtual", "prof")


@dataclass
class Itimer:
    which: int  # ITIMER_REAL 0, ITIMER_VIRTUAL 1, ITIMER_PROF 2
    interval_sec: int
    interval_usec: int
    value_sec: int
    value_usec: int


@record(45, scope="process")
@dataclass
class ItimersRecord:
    timers: list[Itimer]  # only the armed ones


@dataclass
class PosixTimer:
    id: int
    clock: int
    notify: int  # sigev_notify: SIGEV_SIGNAL 0, SIGEV_NONE 1, | SIGEV_THREAD_ID 4
    signo: int
    value: int  # sigev_value
    tid: int  # SIGEV_THREAD_ID: the thread to signal (image TID)
    interval_sec: int
    interval_nsec: int
    value_sec: int  # time left (0, 0: disarmed)
    value_nsec: int


@record(46, scope="process")
@dataclass
class PosixTimersRecord:
    timers: list[PosixTimer]


PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_OFF, RESTORE_IDS_ON = 77, 0, 1
ITIMERSPEC = struct.Struct("<qqqq")  # it_interval (sec, nsec), it_value (sec, nsec)
SIGEVENT = struct.Struct("<QiiI44x")  # sigev_value, signo, notify, _tid; 64 bytes


def _dump_posix(ctx: DumpContext) -> list[PosixTimer]:
    found = read_timers(ctx.pid)
    got = spread(_threads(ctx), ctx.scratch,
                 [(nr.timer_gettime, lambda at, t=t: (t["id"], at), f"timer_gettime({t['id']})") for t in found],
                 ITIMERSPEC.size)
    out = []
    for t, raw in zip(found, got):
        isec, insec, vsec, vnsec = ITIMERSPEC.unpack(raw)
        out.append(PosixTimer(t["id"], t["clock"], t["notify"], t["signo"], t["value"], t["tid"],
                              isec, insec, vsec, vnsec))
    return out


def _threads(ctx: DumpContext) -> list:
    """The injectors that may read the process's timers (they are the process's, not a
    thread's: inject.spread runs the calls in several threads at once)."""
    return list(ctx.threads.values()) or [ctx.inj]


def dump(ctx: DumpContext) -> list:
    posix = _dump_posix(ctx)
    timers = []
    got = spread(_threads(ctx), ctx.scratch,
                 [(nr.getitimer, lambda at, which=which: (which, at), f"getitimer({NAMES[which]})")
                  for which in range(3)], ITIMERVAL.size)
    for which in range(3):
        isec, iusec, vsec, vusec = ITIMERVAL.unpack(got[which])
        if vsec or vusec or isec or iusec:
            if not (vsec or vusec):
                # Expired with its signal still pending (the kernel re-arms an
                # interval timer only when that signal is taken): the pending
                # signal is saved with the others; arm it one interval on.
                vsec, vusec = isec, iusec
            timers.append(Itimer(which, isec, iusec, vsec, vusec))
    return [ItimersRecord(timers)] + ([PosixTimersRecord(posix)] if posix else [])


@restore_hook("prepare", "timers")
def prepare(rctx: RestoreContext) -> None:
    rec = rctx.image.one(ItimersRecord)
    if rec.timers:
        rctx.defer("interval timers", lambda: _arm(rctx, rec))
    for posix in rctx.image.of_type(PosixTimersRecord):
        rctx.defer("posix timers", lambda posix=posix: _create_posix(rctx, posix))


def _create_posix(rctx: RestoreContext, rec: PosixTimersRecord) -> None:
    inj, scratch = rctx.inj, rctx.scratch
    id_addr, spec_addr = scratch + 64, scratch + 128
    inj.check(nr.prctl, PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_ON, 0, 0, 0,
              what="prctl(PR_TIMER_CREATE_RESTORE_IDS) (POSIX timers need Linux 6.17 or later)")
    try:
        for t in sorted(rec.timers, key=lambda t: t.id):
            inj.write(scratch, SIGEVENT.pack(t.value, t.signo, t.notify, t.tid))
            inj.write(id_addr, struct.pack("<i", t.id))
            inj.check(nr.timer_create, t.clock, scratch, id_addr, what=f"timer_create of timer {t.id}")
            (got,) = struct.unpack("<i", inj.read(id_addr, 4))
            if got != t.id:
                raise RestoreError(f"POSIX timer {t.id} of process {rctx.image_pid} came back as {got}")
            if t.value_sec or t.value_nsec:
                inj.write(spec_addr, ITIMERSPEC.pack(t.interval_sec, t.interval_nsec,
                                                     t.value_sec, t.value_nsec))
                inj.check(nr.timer_settime, t.id, 0, spec_addr, 0, what=f"timer_settime of timer {t.id}")
    finally:
        inj.call(nr.prctl, PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_OFF, 0, 0, 0)


def _arm(rctx: RestoreContext, rec: ItimersRecord) -> None:
    for t in rec.timers:
        rctx.inj.write(rctx.scratch, ITIMERVAL.pack(t.interval_sec, t.interval_usec, t.value_sec, t.value_usec))
        rctx.inj.check(nr.setitimer, t.which, rctx.scratch, 0, what=f"setitimer({NAMES[t.which]})")
