"""Interval timers: ITIMER_REAL (also what alarm() sets), ITIMER_VIRTUAL, ITIMER_PROF.

Read with injected getitimer calls (the time left and the interval); set
again by injected setitimer in the DEFERRED stage, close to the release,
so the restore itself eats little of the time left.  A timer that expires
during the last steps delivers its signal once the task runs (all signals
are blocked while it is restored).  POSIX timers (timer_create) are not
saved yet: a process holding one is refused at dump time.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import UnsupportedError
from ..image import record
from .context import DumpContext, RestoreContext

SYS_getitimer, SYS_setitimer = 36, 38
ITIMERVAL = struct.Struct("<qqqq")  # it_interval (sec, usec), it_value (sec, usec)
NAMES = ("real", "virtual", "prof")


@dataclass
class Itimer:
    which: int  # ITIMER_REAL 0, ITIMER_VIRTUAL 1, ITIMER_PROF 2
    interval_sec: int
    interval_usec: int
    value_sec: int
    value_usec: int


@record(45)
@dataclass
class ItimersRecord:
    timers: list[Itimer]  # only the armed ones


def dump(ctx: DumpContext) -> list:
    with open(f"/proc/{ctx.pid}/timers") as f:
        if f.read().strip():
            raise UnsupportedError(
                f"process {ctx.pid} has POSIX timers (timer_create; see /proc/{ctx.pid}/timers), "
                "which pyckpt cannot save yet"
            )
    timers = []
    for which in range(3):
        ctx.inj.check(SYS_getitimer, which, ctx.scratch, what=f"getitimer({NAMES[which]})")
        isec, iusec, vsec, vusec = ITIMERVAL.unpack(ctx.inj.read(ctx.scratch, ITIMERVAL.size))
        if vsec or vusec:
            timers.append(Itimer(which, isec, iusec, vsec, vusec))
    return [ItimersRecord(timers)]


def prepare(rctx: RestoreContext) -> None:
    rec = rctx.image.one(ItimersRecord)
    if rec.timers:
        rctx.deferred.append(lambda: _arm(rctx, rec))


def _arm(rctx: RestoreContext, rec: ItimersRecord) -> None:
    for t in rec.timers:
        rctx.inj.write(rctx.scratch, ITIMERVAL.pack(t.interval_sec, t.interval_usec, t.value_sec, t.value_usec))
        rctx.inj.check(SYS_setitimer, t.which, rctx.scratch, 0, what=f"setitimer({NAMES[t.which]})")
