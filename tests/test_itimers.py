"""Interval timers keep firing across dump and restore, with their interval."""

from conftest import check, dump_kill_restore

TARGET = r"""
import os, signal, sys, time
fired = 0
def on_alarm(*a):
    global fired
    fired += 1
signal.signal(signal.SIGALRM, on_alarm)
signal.signal(signal.SIGVTALRM, lambda *a: None)
signal.setitimer(signal.ITIMER_REAL, 0.25, 0.05)
signal.setitimer(signal.ITIMER_VIRTUAL, 1000.0, 500.0)
import selfcheck
def check():
    before = fired
    time.sleep(0.5)
    real = signal.getitimer(signal.ITIMER_REAL)
    virt = signal.getitimer(signal.ITIMER_VIRTUAL)
    ok = fired >= before + 3 and abs(real[1] - 0.05) < 1e-6 and abs(virt[1] - 500.0) < 1e-6 \
        and 0 < virt[0] <= 1000.1
    return [] if ok else [f"fired {before}->{fired} {real} {virt}"]
selfcheck.listen()
print("READY", flush=True)
selfcheck.serve(check)
"""


def test_interval_timer_keeps_firing(spawn, python_exe, tmp_path):
    t = spawn([python_exe, "-c", TARGET])
    t.wait_for("^READY")
    before = check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    assert check(t) > before


POSIX_TARGET = r"""
import ctypes, signal, time
libc = ctypes.CDLL(None, use_errno=True)
class sigevent(ctypes.Structure):
    _fields_ = [("value", ctypes.c_uint64), ("signo", ctypes.c_int), ("notify", ctypes.c_int),
                ("pad", ctypes.c_byte * 48)]
class itimerspec(ctypes.Structure):
    _fields_ = [("isec", ctypes.c_long), ("insec", ctypes.c_long), ("vsec", ctypes.c_long),
                ("vnsec", ctypes.c_long)]
fired = 0
def on_usr2(*a):
    global fired
    fired += 1
signal.signal(signal.SIGUSR2, on_usr2)
ids = []
for value in (0x1111, 0x2222, 0x3333):
    tid = ctypes.c_int()
    ev = sigevent(value=value, signo=signal.SIGUSR2, notify=0)
    assert libc.timer_create(1, ctypes.byref(ev), ctypes.byref(tid)) == 0
    ids.append(tid.value)
libc.timer_delete(ids.pop(1))  # a gap in the ids
assert libc.timer_settime(ids[1], 0, ctypes.byref(itimerspec(0, 50_000_000, 0, 300_000_000)), None) == 0
before = open("/proc/self/timers").read()
import selfcheck
def check():
    start = fired
    time.sleep(0.5)
    spec = itimerspec()
    ok = libc.timer_gettime(ids[1], ctypes.byref(spec)) == 0 and spec.insec == 50_000_000
    ok = ok and fired >= start + 3 and open("/proc/self/timers").read() == before
    return [] if ok else [f"fired {start}->{fired}"]
selfcheck.listen()
print("READY", flush=True)
selfcheck.serve(check)
"""


def test_posix_timers_keep_their_ids_and_keep_firing(spawn, python_exe, tmp_path):
    t = spawn([python_exe, "-c", POSIX_TARGET])
    t.wait_for("^READY")
    before = check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    assert check(t) > before
