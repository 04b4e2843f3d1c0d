"""Every bad input, at the API level: a typed error that names the culprit, and no harm done.

A refused or failed dump leaves its target running as before (not stopped,
not traced, still making progress) and no COMPLETE image; a refused restore
creates no process.  Only processes these tests start are ever signalled,
traced or killed; the kernel-thread case is tested on captured /proc text.
(test_refusals_cli.py imports the helpers and image fixtures from here.)
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

import pyckpt
from conftest import kill_own
from pyckpt import proc, seize

TARGETS = Path(__file__).parent / "targets"
TICKER = str(TARGETS / "refusal_ticker.py")
TRACER = str(TARGETS / "refusal_tracer.py")


# --- helpers ---------------------------------------------------------------------------------------

def status_field(pid: int, key: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        return proc.parse_status(f.read())[key]


def tracer_of(pid: int) -> int:
    return int(status_field(pid, "TracerPid"))


def pid_exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def start_ticker(spawn, python_exe, mode: str = "plain", timeout: float = 30.0):
    """A target printing a tick every 10 ms; waits until it has ticked."""
    t = spawn([python_exe, TICKER, mode], name=f"ticker-{mode}")
    m = t.wait_for(r"^ready ", timeout=timeout)
    t.wait_for(r"^tick 1$", timeout=timeout)
    return t, m.string


def assert_untouched(t, tracer: int = 0) -> None:
    """The target runs on as before: not stopped, traced by `tracer` only, still ticking."""
    assert t.alive(), f"target {t.pid} died"
    assert t.state() not in "tT", f"target {t.pid} left stopped (state {t.state()})"
    assert tracer_of(t.pid) == tracer, f"target {t.pid} traced by {tracer_of(t.pid)}, expected {tracer}"
    size = len(t.text())
    deadline = time.monotonic() + 5
    while len(t.text()) <= size:
        assert time.monotonic() < deadline, f"target {t.pid} makes no progress (log stuck at {size} bytes)"
        time.sleep(0.02)
    assert t.state() not in "tT", f"target {t.pid} stopped (state {t.state()})"


def assert_not_complete(path: Path, *, must_exist: bool = False) -> None:
    """A failed dump never leaves a COMPLETE image; a directory it made is marked INCOMPLETE."""
    path = Path(path)
    if must_exist:
        assert path.is_dir(), f"{path} was not created"
    if path.is_dir():
        assert not (path / "COMPLETE").exists(), f"failed dump left {path}/COMPLETE"
        assert (path / "INCOMPLETE").exists(), f"failed dump left {path} without INCOMPLETE"


def free_pid() -> int:
    """A PID no process holds: that of a short process just reaped, verified absent."""
    for _ in range(20):
        p = subprocess.Popen(["true"], start_new_session=True)
        p.wait()
        if not pid_exists(p.pid):
            return p.pid
    raise AssertionError("could not find a free PID")


def zombie(spawn, python_exe):
    """A process of ours that has exited and is not reaped yet."""
    t = spawn([python_exe, "-c", "pass"], name="zombie")
    deadline = time.monotonic() + 10
    while t.state() != "Z":
        assert time.monotonic() < deadline, "child did not become a zombie"
        time.sleep(0.01)
    return t


def traced_ticker(spawn, python_exe):
    """A ticking target plus a helper of ours that PTRACE_SEIZEd it; returns (target, helper pid)."""
    t, _ = start_ticker(spawn, python_exe)
    helper = spawn([python_exe, TRACER, str(t.pid)], name="tracer")
    m = helper.wait_for(r"^(seized|seize failed)", timeout=10)
    assert m.group(1) == "seized", helper.text()
    assert tracer_of(t.pid) == helper.pid
    return t, helper


# --- good images (made once, copied for each corruption) -------------------------------------------

_IMAGES: dict[str, tuple[Path, int]] = {}


def make_good_image(spawn, python_exe, tmp_path_factory, mode: str) -> tuple[Path, int]:
    """(image dir, its PID): a ticker dumped with kill=True and reaped, so the PID is free."""
    if mode not in _IMAGES:
        t, _ = start_ticker(spawn, python_exe, mode)
        d = tmp_path_factory.mktemp(f"good-{mode}") / "img"
        image = pyckpt.dump(t.pid, d, kill=True)
        assert image.pid == t.pid
        t.reap()
        assert not pid_exists(t.pid)
        _IMAGES[mode] = (d, t.pid)
    d, pid = _IMAGES[mode]
    assert not pid_exists(pid), f"PID {pid} of the good image was taken by another process"
    return d, pid


@pytest.fixture
def good_image(spawn, python_exe, tmp_path_factory):
    return make_good_image(spawn, python_exe, tmp_path_factory, "plain")


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def _truncate_records(d: Path) -> None:
    p = d / "records.img"
    os.truncate(p, p.stat().st_size // 2)


def _flip_records(d: Path) -> None:
    p = d / "records.img"
    _flip(p, p.stat().st_size // 2)


def _flip_pages(d: Path) -> None:
    p = d / "pages.img"
    assert p.stat().st_size > 0
    _flip(p, p.stat().st_size // 2 + 123)


def _truncate_pages(d: Path) -> None:
    p = d / "pages.img"
    os.truncate(p, p.stat().st_size - 4096)


def _wrong_version(d: Path) -> None:
    with open(d / "records.img", "r+b") as f:
        f.seek(8)
        (v,) = struct.unpack("<I", f.read(4))
        f.seek(8)
        f.write(struct.pack("<I", v + 1))


def _incomplete(d: Path) -> None:
    (d / "COMPLETE").unlink()
    (d / "INCOMPLETE").write_text("dump in progress\n")


def _no_records(d: Path) -> None:
    (d / "records.img").unlink()


def _foreign_records(d: Path) -> None:
    p = d / "records.img"
    p.write_bytes(random.Random(7).randbytes(p.stat().st_size))


def _damaged_marker(d: Path) -> None:
    (d / "COMPLETE").write_bytes(b"\x00garbage")


# name -> (corrupt the copy in place; None for the special cases, words the message must hold)
CORRUPTIONS = {
    "missing-dir": (None, []),
    "empty-dir": (None, []),
    "foreign-file": (None, []),
    "no-records": (_no_records, ["records.img"]),
    "truncated-records": (_truncate_records, []),
    "bitflip-records": (_flip_records, []),
    "bitflip-pages": (_flip_pages, ["checksum"]),
    "truncated-pages": (_truncate_pages, ["pages.img"]),
    "wrong-version": (_wrong_version, ["version"]),
    "incomplete": (_incomplete, ["incomplete"]),
    "foreign-records": (_foreign_records, []),
    "damaged-complete-marker": (_damaged_marker, []),
}


def corrupt_copy(name: str, good: Path, tmp_path: Path) -> Path:
    """The path to give pyckpt for corruption `name`."""
    target = tmp_path / f"img-{name}"
    if name == "missing-dir":
        return target
    if name == "empty-dir":
        target.mkdir()
        return target
    if name == "foreign-file":
        target.write_bytes(random.Random(11).randbytes(65536))
        return target
    shutil.copytree(good, target)
    CORRUPTIONS[name][0](target)
    return target


# --- dump: which process ----------------------------------------------------------------------------

def test_nonexistent_pid(tmp_path):
    pid = free_pid()
    with pytest.raises(pyckpt.NoSuchProcessError, match=rf"\b{pid}\b"):
        pyckpt.dump(pid, tmp_path / "img")
    assert_not_complete(tmp_path / "img")


@pytest.mark.parametrize("pid", [0, -1])
def test_nonpositive_pid(tmp_path, pid):
    with pytest.raises(pyckpt.NoSuchProcessError, match=str(pid)):
        pyckpt.dump(pid, tmp_path / "img")
    assert_not_complete(tmp_path / "img")


def test_own_pid(tmp_path):
    pid = os.getpid()
    with pytest.raises(pyckpt.UnsuitableProcessError, match=rf"\b{pid}\b"):
        pyckpt.dump(pid, tmp_path / "img")
    assert_not_complete(tmp_path / "img")
    assert tracer_of(pid) == 0


def test_zombie(spawn, python_exe, tmp_path):
    z = zombie(spawn, python_exe)
    with pytest.raises(pyckpt.UnsuitableProcessError, match=rf"\b{z.pid}\b.*zombie"):
        pyckpt.dump(z.pid, tmp_path / "img")
    assert_not_complete(tmp_path / "img")
    assert z.state() == "Z"  # still ours to reap
    z.reap()
    assert not pid_exists(z.pid)


def test_stopped_by_signal(spawn, python_exe, tmp_path):
    t, _ = start_ticker(spawn, python_exe)
    os.kill(t.pid, signal.SIGSTOP)  # our own target
    deadline = time.monotonic() + 5
    while t.state() != "T":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(pyckpt.UnsuitableProcessError, match=rf"\b{t.pid}\b"):
        pyckpt.dump(t.pid, tmp_path / "img")
    assert_not_complete(tmp_path / "img")
    assert t.state() == "T" and tracer_of(t.pid) == 0
    os.kill(t.pid, signal.SIGCONT)
    assert_untouched(t)


def test_traced_by_another_tracer(spawn, python_exe, tmp_path):
    t, helper = traced_ticker(spawn, python_exe)
    with pytest.raises(pyckpt.AlreadyTracedError) as ei:
        pyckpt.dump(t.pid, tmp_path / "img")
    e = ei.value
    assert e.pid == t.pid and e.tracer == helper.pid
    assert str(t.pid) in str(e) and str(helper.pid) in str(e)
    assert_not_complete(tmp_path / "img")
    assert_untouched(t, tracer=helper.pid)  # pyckpt did not take it over

    kill_own(helper.pid)
    deadline = time.monotonic() + 5
    while tracer_of(t.pid) != 0:
        assert time.monotonic() < deadline, "tracee not released by its dead tracer"
        time.sleep(0.01)
    assert_untouched(t)


# --- kernel threads and the other refusals, on captured /proc text ---------------------------------

KTHREADD_STAT = ("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 "
                 "18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0")
KTHREADD_STATUS = "Name:\tkthreadd\nUmask:\t0000\nState:\tS (sleeping)\nTgid:\t2\nNgid:\t0\nPid:\t2\n" \
                  "PPid:\t0\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nThreads:\t1\n"
USER_STAT = ("4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 500 1000000 300 "
             "18446744073709551615 94000000000000 94000000100000 140730000000000 0 0 0 0 0 0 0 0 0 17 1 0 0 "
             "0 0 0 94000000200000 94000000300000 94000000400000 140730000001000 140730000001100 "
             "140730000001100 140730000002000 0")
USER_STATUS = "Name:\tmy (odd) prog\nState:\tS (sleeping)\nTgid:\t4242\nPid:\t4242\nPPid:\t1\n" \
              "TracerPid:\t0\nThreads:\t1\n"


def _with_state(stat_text: str, state: str) -> str:
    r = stat_text.rindex(")")
    return stat_text[: r + 2] + state + stat_text[r + 3 :]


def test_kernel_thread_from_captured_stat():
    stat = proc.parse_stat(KTHREADD_STAT)
    assert stat.pid == 2 and stat.comm == "kthreadd"
    assert stat.is_kernel_thread
    e = seize.refusal(stat, proc.parse_status(KTHREADD_STATUS), own_pid=999999)
    assert isinstance(e, pyckpt.UnsuitableProcessError)
    assert "2" in str(e) and "kernel thread" in str(e)


def test_user_process_from_captured_stat_is_acceptable():
    stat = proc.parse_stat(USER_STAT)
    assert stat.comm == "my (odd) prog" and stat.pid == 4242
    assert not stat.is_kernel_thread
    assert seize.refusal(stat, proc.parse_status(USER_STATUS), own_pid=999999) is None


@pytest.mark.parametrize("case", ["own", "zombie", "dead", "stopped", "traced"])
def test_refusal_from_captured_text(case):
    stat_text, status_text, own, cls = USER_STAT, USER_STATUS, 999999, pyckpt.UnsuitableProcessError
    if case == "own":
        own = 4242
    elif case == "zombie":
        stat_text = _with_state(USER_STAT, "Z")
    elif case == "dead":
        stat_text = _with_state(USER_STAT, "X")
    elif case == "stopped":
        stat_text = _with_state(USER_STAT, "T")
    elif case == "traced":
        status_text = USER_STATUS.replace("TracerPid:\t0", "TracerPid:\t777")
        cls = pyckpt.AlreadyTracedError
    e = seize.refusal(proc.parse_stat(stat_text), proc.parse_status(status_text), own_pid=own)
    assert isinstance(e, cls), e
    assert "4242" in str(e)
    if case == "traced":
        assert e.tracer == 777 and "777" in str(e)


# --- dump: what the process holds ------------------------------------------------------------------

def test_unsupported_fd_pidfd(spawn, python_exe, tmp_path):
    t, ready = start_ticker(spawn, python_exe, "pidfd")
    fd = int(ready.split()[-1])
    img = tmp_path / "img"
    with pytest.raises(pyckpt.UnsupportedFdError) as ei:
        pyckpt.dump(t.pid, img)
    e = ei.value
    assert e.pid == t.pid and e.fd == fd and e.kind.startswith("pidfd")
    msg = str(e)
    assert str(t.pid) in msg and f"fd {e.fd}" in msg and "pidfd" in msg
    assert_not_complete(img, must_exist=True)
    assert f"fd {e.fd}" in (img / "INCOMPLETE").read_text()
    assert_untouched(t)
    # and it still works after the refusal: fd intact
    assert os.readlink(f"/proc/{t.pid}/fd/{fd}") == "anon_inode:[pidfd]"


# --- dump: where the image goes --------------------------------------------------------------------

def test_image_path_under_regular_file(spawn, python_exe, tmp_path):
    t, _ = start_ticker(spawn, python_exe)
    (tmp_path / "file").write_text("not a directory\n")
    img = tmp_path / "file" / "img"
    with pytest.raises(pyckpt.ImageWriteError, match=str(img)):
        pyckpt.dump(t.pid, img)
    assert (tmp_path / "file").read_text() == "not a directory\n"
    assert_untouched(t)


def test_image_path_is_regular_file(spawn, python_exe, tmp_path):
    t, _ = start_ticker(spawn, python_exe)
    img = tmp_path / "img"
    img.write_text("keep me\n")
    with pytest.raises(pyckpt.ImageWriteError, match=str(img)):
        pyckpt.dump(t.pid, img)
    assert img.read_text() == "keep me\n"
    assert_untouched(t)


def test_image_dir_not_empty(spawn, python_exe, tmp_path):
    t, _ = start_ticker(spawn, python_exe)
    img = tmp_path / "img"
    img.mkdir()
    (img / "precious.txt").write_text("keep me\n")
    with pytest.raises(pyckpt.ImageWriteError, match=str(img)):
        pyckpt.dump(t.pid, img)
    assert sorted(p.name for p in img.iterdir()) == ["precious.txt"]
    assert (img / "precious.txt").read_text() == "keep me\n"
    assert_untouched(t)


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """Files this process writes stop growing at `nbytes` (EFBIG, as on a full disk)."""
    old_sig = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_sig)


@pytest.mark.parametrize("kill", [False, True], ids=["keep", "kill"])
def test_image_filesystem_full(kill, spawn, python_exe, tmp_path):
    """pages.img cannot grow past 8 MiB mid-dump: ImageWriteError, and --kill must not kill."""
    t, _ = start_ticker(spawn, python_exe, "big64")
    img = tmp_path / "img"
    with file_size_limit(8 << 20):
        with pytest.raises(pyckpt.ImageWriteError) as ei:
            pyckpt.dump(t.pid, img, kill=kill)
    assert str(img) in str(ei.value), str(ei.value)
    assert_not_complete(img, must_exist=True)
    assert_untouched(t)


# --- restore: bad images ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_bad_image_restore(name, good_image, tmp_path, spawn):
    good, pid = good_image
    path = corrupt_copy(name, good, tmp_path)
    spawn.track(pid)  # should restore wrongly create it, the finalizer removes it
    with pytest.raises(pyckpt.ImageError) as ei:
        pyckpt.restore(path)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for word in CORRUPTIONS[name][1]:
        assert word in msg, msg
    assert not pid_exists(pid), f"a refused restore left PID {pid} behind"


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_bad_image_open_and_verify(name, good_image, tmp_path):
    good, pid = good_image
    path = corrupt_copy(name, good, tmp_path)
    with pytest.raises(pyckpt.ImageError) as ei:
        pyckpt.open_image(path).verify()
    assert str(path) in str(ei.value)
    if name == "bitflip-pages":  # records are intact: only the page check finds it
        pyckpt.open_image(path)
    assert not pid_exists(pid)


def test_good_image_is_good(good_image, tmp_path):
    """The control: the uncorrupted copy opens and verifies (so the cases above test what they say)."""
    good, pid = good_image
    copy = tmp_path / "img"
    shutil.copytree(good, copy)
    image = pyckpt.open_image(copy)
    image.verify()
    assert image.pid == pid


# --- restore: a file of the process changed ------------------------------------------------------

def image_with_changed_log(spawn, python_exe, tmp_path, how: str) -> tuple[Path, int, str]:
    """Dump a ticker (kill=True), then remove or replace its log (its fds 1 and 2)."""
    t, _ = start_ticker(spawn, python_exe)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    t.reap()
    if how == "removed":
        t.log.unlink()
    else:
        t.log.rename(t.log.with_suffix(".old"))
        t.log.write_text("another file, same name\n")
    return img, t.pid, str(t.log)


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_file_changed(how, spawn, python_exe, tmp_path):
    img, pid, log = image_with_changed_log(spawn, python_exe, tmp_path, how)
    spawn.track(pid)
    with pytest.raises(pyckpt.FileChangedError) as ei:
        pyckpt.restore(img)
    assert ei.value.path == log and log in str(ei.value)
    assert not pid_exists(pid), f"a refused restore left PID {pid} behind"


# --- restore: the PID is taken ---------------------------------------------------------------------

def test_pid_in_use(spawn, python_exe, tmp_path):
    t, _ = start_ticker(spawn, python_exe)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)
    assert (img / "COMPLETE").exists()
    assert_untouched(t)
    with pytest.raises(pyckpt.PidInUseError) as ei:
        pyckpt.restore(img)
    assert ei.value.pid == t.pid and str(t.pid) in str(ei.value)
    assert_untouched(t)
    assert os.getppid() != t.pid and t.popen.poll() is None
