"""eventfd, signalfd and timerfd: fdinfo parsers, and state that survives dump and restore.

The target (targets/ev_fds.py) checks each file through its own interface
after restore: eventfd counts and semaphore mode, a signal pending at the
dump and one sent to itself after restore read from the signalfd, timers
firing about when they should (loosely timed), an expired timer's unread
tick, a wall-clock deadline.
"""

import json
import subprocess
import sys
import time

import pytest
from conftest import TARGETS, check, reap_dumped

import pyckpt
from pyckpt.proc.anon_fdinfo import parse_eventfd, parse_signalfd, parse_timerfd

EVENTFD = """\
pos:\t0
flags:\t04002
mnt_id:\t17
ino:\t1038
eventfd-count:        123456789
eventfd-id: 1
eventfd-semaphore: 1
"""

SIGNALFD = """\
pos:\t0
flags:\t02004002
mnt_id:\t17
ino:\t1038
sigmask:\t0000000008000801
"""

TIMERFD = """\
pos:\t0
flags:\t02
mnt_id:\t17
ino:\t1038
clockid: 1
ticks: 3
settime flags: 03
it_value: (1, 999951698)
it_interval: (0, 500000000)
"""


def test_eventfd_fdinfo_count_is_hex():
    info = parse_eventfd(EVENTFD)
    assert info.count == 0x123456789 and info.semaphore
    assert not parse_eventfd(EVENTFD.replace("semaphore: 1", "semaphore: 0")).semaphore


def test_signalfd_fdinfo_mask():
    mask = parse_signalfd(SIGNALFD)
    assert [n for n in range(1, 65) if mask >> (n - 1) & 1] == [1, 12, 28]  # HUP, USR2, WINCH


def test_timerfd_fdinfo():
    t = parse_timerfd(TIMERFD)
    assert (t.clockid, t.ticks, t.settime_flags) == (1, 3, 3)
    assert t.value_ns == 1_999_951_698 and t.interval_ns == 500_000_000


def test_parsers_name_a_missing_line():
    with pytest.raises(ValueError, match="eventfd-count"):
        parse_eventfd("pos:\t0\nflags:\t02\n")
    with pytest.raises(ValueError, match="it_value"):
        parse_timerfd(TIMERFD.replace("it_value: (1, 999951698)", "it_value: 1"))


def _start(spawn, python_exe):
    t = spawn([python_exe, str(TARGETS / "ev_fds.py")], name="ev_fds")
    t.wait_for("^READY")
    return t


def test_eventfd_signalfd_timerfd_survive_restore(spawn, python_exe, tmp_path):
    t = _start(spawn, python_exe)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    time.sleep(2.1)  # longer than the periodic timer had left: time in the image must not count
    proc = pyckpt.restore(img)
    spawn.track(proc.pid)
    t.popen = None
    check(t)

    show = json.loads(subprocess.run([sys.executable, "-m", "pyckpt", "show", "--json", str(img)],
                                     check=True, capture_output=True, text=True).stdout)
    kinds = sorted(f["kind"] for f in show["fds"])
    assert kinds.count("eventfd") == 3 and kinds.count("signalfd") == 1 and kinds.count("timerfd") == 4


def test_dump_consumes_nothing(spawn, python_exe, tmp_path):
    """A dump that leaves the target running takes no count, signal or tick from it."""
    t = _start(spawn, python_exe)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)
    log_size = t.log.stat().st_size
    check(t)  # the original, after the dump: every count and tick still there
    # ... and the image restores the state as it was at the dump, not after the check.
    t.popen.kill()
    t.reap()
    with open(t.log, "r+b") as f:  # the restored target writes at its dump-time offset
        f.truncate(log_size)
    proc = pyckpt.restore(img, allow_changed_files=True)  # the log grew since the dump
    spawn.track(proc.pid)
    t.popen = None
    check(t)
