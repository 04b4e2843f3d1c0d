"""Interval timers keep firing across dump and restore, with their interval."""

import os
import signal

import pyckpt
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
ask = False
def on_usr1(*a):
    global ask
    ask = True
signal.signal(signal.SIGUSR1, on_usr1)
print("READY", flush=True)
counter = 0
while True:
    counter += 1
    time.sleep(0.01)
    if ask:
        ask = False
        before = fired
        time.sleep(0.5)
        real = signal.getitimer(signal.ITIMER_REAL)
        virt = signal.getitimer(signal.ITIMER_VIRTUAL)
        ok = fired >= before + 3 and abs(real[1] - 0.05) < 1e-6 and abs(virt[1] - 500.0) < 1e-6 \
            and 0 < virt[0] <= 1000.1
        print(f"CHECK ok counter={counter}" if ok else f"CHECK FAIL fired {before}->{fired} {real} {virt}",
              flush=True)
"""


def test_interval_timer_keeps_firing(spawn, python_exe, tmp_path):
    t = spawn([python_exe, "-c", TARGET])
    t.wait_for("^READY")
    before = check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    assert check(t) > before


def test_posix_timer_is_refused(spawn, python_exe, tmp_path):
    code = ("import ctypes, time\nlibc = ctypes.CDLL(None)\ntid = ctypes.c_void_p()\n"
            "assert libc.timer_create(1, None, ctypes.byref(tid)) == 0\nprint('READY', flush=True)\n"
            "time.sleep(60)\n")
    t = spawn([python_exe, "-c", code])
    t.wait_for("^READY")
    try:
        pyckpt.dump(t.pid, tmp_path / "img")
    except pyckpt.UnsupportedError as e:
        assert "POSIX timers" in str(e) and str(t.pid) in str(e)
    else:
        raise AssertionError("a process with a POSIX timer was dumped")
    assert t.state() in "SR"
    os.kill(t.pid, signal.SIGCONT)  # our own target; it must still be alive to receive it
