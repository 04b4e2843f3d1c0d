"""Replacing any fd at restore (fds= / --fd), and asking before a restore whether it
would get past validation here and now (Image.check_restore / pyckpt check --restore).

Every target is started here, in its own session, and checks itself after a
restore (conftest.check); the original keeps running where an image is dumped
without kill, so its PID, files, ports and locks are really taken.
"""

import io
import os
import re
import select
import signal
import subprocess
import sys
import time

import psutil
import pytest

import pyckpt
from conftest import TARGETS, Target, check, reap_dumped
from test_trees import _end_tree, _wait_gone

# fd 1 and fd 2 are spawn's log file (one description, as `>log 2>&1` makes); on
# SIGUSR1 it prints its CHECK line on stdout and a STDERR line on stderr.
LOGGER = r"""
import os, sys, selfcheck
selfcheck.listen()
print("READY", flush=True)
def check():
    print("STDERR", os.getpid(), file=sys.stderr, flush=True)
    return []
selfcheck.serve(check)
"""


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pyckpt", *map(str, args)], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120, **kw)


def _logger(spawn, python_exe) -> Target:
    t = spawn([python_exe, "-c", LOGGER], name="logger")
    t.wait_for("^READY")
    return t


def _dumped_logger(spawn, python_exe, tmp_path) -> tuple[Target, object, bytes]:
    """A logger dumped and killed; its log then grows (so it changed since the dump)."""
    t = _logger(spawn, python_exe)
    check(t)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    t.popen = None
    with open(t.log, "ab") as f:
        f.write(b"written after the dump\n")
    return t, img, t.log.read_bytes()


def _restored(spawn, t: Target, proc, log) -> Target:
    spawn.track(proc.pid)
    assert proc.pid == t.pid
    return Target(proc.pid, log)


# --- fds= replaces whatever the fd was ---------------------------------------------------------


def test_fds_replaces_a_log_file_and_the_fds_that_shared_it(spawn, python_exe, tmp_path):
    t, img, old = _dumped_logger(spawn, python_exe, tmp_path)
    new = tmp_path / "copy.log"
    with open(new, "wb") as f:
        proc = pyckpt.restore(img, fds={1: f})  # the old log changed: not checked, it is replaced
    copy = _restored(spawn, t, proc, new)
    check(copy)  # its CHECK line comes out in the new file
    copy.wait_for(rf"^STDERR {t.pid}$")  # and fd 2, which shared fd 1's file, is replaced too
    assert os.readlink(f"/proc/{t.pid}/fd/1") == os.readlink(f"/proc/{t.pid}/fd/2") == str(new)
    assert t.log.read_bytes() == old, "the restored process wrote to the old log"


def test_fds_with_its_own_entry_splits_shared_fds_and_paths_are_appended_to(spawn, python_exe, tmp_path):
    t, img, old = _dumped_logger(spawn, python_exe, tmp_path)
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    out.write_bytes(b"kept\n")
    with open(err, "wb") as e:
        proc = pyckpt.restore(img, fds={1: out, 2: e})  # a path (PathLike) and a file object
    copy = _restored(spawn, t, proc, out)
    check(copy)
    assert out.read_text().startswith("kept\n")  # fd 1 was written to: opened appending
    Target(t.pid, err).wait_for(rf"^STDERR {t.pid}$")
    assert "STDERR" not in out.read_text()
    assert t.log.read_bytes() == old


def test_cli_fd_replaces_a_regular_file(spawn, python_exe, tmp_path):
    t, img, old = _dumped_logger(spawn, python_exe, tmp_path)
    out = tmp_path / "cli.log"
    r = _cli("restore", img, "--fd", f"1={out}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(t.pid)
    spawn.track(t.pid)
    check(Target(t.pid, out))
    assert t.log.read_bytes() == old


# The root forks a child that inherits its stdout; the child prints a line there when
# the root's check asks it to (SIGUSR2), and ends when its parent changes.
TREE = r"""
import os, signal, time, selfcheck
asked = []
signal.signal(signal.SIGUSR2, lambda *a: asked.append(1))
selfcheck.listen()
child = os.fork()
if child == 0:
    parent = os.getppid()
    while os.getppid() == parent:
        if asked:
            asked.clear()
            print("CHILD", os.getpid(), flush=True)
        time.sleep(0.02)
    os._exit(0)
print("READY", child, flush=True)
def check():
    os.kill(child, signal.SIGUSR2)
    return []
selfcheck.serve(check)
"""


def test_fds_replaces_the_stdout_children_inherited(spawn, python_exe, tmp_path):
    t = spawn([python_exe, "-c", TREE], name="tree")
    child = int(t.wait_for(r"^READY (\d+)$").group(1))
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    _wait_gone(child)
    old = t.log.read_bytes()
    new = tmp_path / "tree-copy.log"
    proc = pyckpt.restore(img, fds={1: str(new)})
    try:
        copy = Target(proc.pid, new)
        check(copy)
        copy.wait_for(rf"^CHILD {child}$")  # the child's stdout, inherited: replaced as well
        assert t.log.read_bytes() == old
    finally:
        _end_tree([proc.pid, child])


def test_bad_replacements_are_refused_clearly(spawn, python_exe, tmp_path):
    t, img, _ = _dumped_logger(spawn, python_exe, tmp_path)
    image = pyckpt.open_image(img)
    fds_before = set(os.listdir("/proc/self/fd"))
    closed = os.open(os.devnull, os.O_RDONLY)
    os.close(closed)
    for fds, error, words in [
        ({1: object()}, TypeError, r"fds\[1\]: .*not object"),
        ({1: io.BytesIO()}, TypeError, r"fds\[1\]: BytesIO object has no usable fd"),
        ({"1": 1}, TypeError, r"key must be an fd number .*'1'"),
        ({1: True}, TypeError, r"fds\[1\]"),
        ({7: str(tmp_path / "x")}, pyckpt.RestoreError, r"fds=\{7: \.\.\.\}: process \d+ of the image has no fd 7"),
        ({1: closed}, pyckpt.RestoreError, rf"fd {closed} of the caller is not open"),
        ({1: tmp_path / "no-such-dir" / "x"}, pyckpt.RestoreError, r"cannot open .*no-such-dir/x.* as fd 1"),
    ]:
        with pytest.raises(error, match=words):
            pyckpt.restore(img, fds=fds, allow_changed_files=True)  # (the log changed)
        assert not psutil.pid_exists(t.pid)
        if error is TypeError:
            with pytest.raises(TypeError, match=words):
                image.check_restore(fds=fds, allow_changed_files=True)
        else:  # the same refusal, as a problem of the check
            problems = image.check_restore(fds=fds, allow_changed_files=True)
            assert [(type(p.error), p.fixes) for p in problems] == [(error, ())]
            assert re.search(words, str(problems[0]))
    assert set(os.listdir("/proc/self/fd")) == fds_before
    assert not (tmp_path / "x").exists()


def _reusing_the_number(monkeypatch, number: int, path) -> list[int]:
    """Once a restore (or a check) has begun, a file is opened at fd `number`, as when the
    kernel hands a file pyckpt opens for itself the lowest free number: one the caller
    left closed.  Returns the list of fds so made (closed by the caller)."""
    from pyckpt import restorer

    made: list[int] = []
    validate = restorer._validate

    def opening_a_file_first(*args, **kw):
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if fd != number:  # (it is, when `number` is the lowest free one)
            os.dup2(fd, number, inheritable=False)
            os.close(fd)
        made.append(number)
        return validate(*args, **kw)

    monkeypatch.setattr(restorer, "_validate", opening_a_file_first)
    return made


def test_a_closed_fd_stays_refused_when_its_number_is_reused(spawn, python_exe, tmp_path, monkeypatch):
    """fds={1: N} with N closed: refused even when pyckpt's own work puts a file at N before
    the replacement is opened (the restored process once got pyckpt's pages.img at fd 1)."""
    t, img, _ = _dumped_logger(spawn, python_exe, tmp_path)
    spawn.track(t.pid)  # (should a restore wrongly succeed)
    closed = os.open(os.devnull, os.O_RDONLY)
    os.close(closed)
    fds_before = set(os.listdir("/proc/self/fd"))
    made = _reusing_the_number(monkeypatch, closed, tmp_path / "not-the-callers")
    try:
        with pytest.raises(pyckpt.RestoreError, match=rf"fd {closed} of the caller is not open"):
            pyckpt.restore(img, fds={1: closed}, allow_changed_files=True)
        assert made == [closed]
        assert not psutil.pid_exists(t.pid)
        os.close(made.pop())
        problems = pyckpt.open_image(img).check_restore(fds={1: closed}, allow_changed_files=True)
        assert made == [closed]
        assert [(type(p.error), p.fixes) for p in problems] == [(pyckpt.RestoreError, ())]
        assert f"fd {closed} of the caller is not open" in str(problems[0])
    finally:
        for fd in made:
            os.close(fd)
    assert set(os.listdir("/proc/self/fd")) == fds_before  # the pinned copies are closed again


def test_an_open_fd_given_is_the_one_restored(spawn, python_exe, tmp_path, monkeypatch):
    """The copy is taken as restore() starts: what the caller's fd held then is what the
    process gets, whatever happens to that number meanwhile."""
    t, img, old = _dumped_logger(spawn, python_exe, tmp_path)
    out = tmp_path / "given.log"
    with open(out, "ab") as f:
        made = _reusing_the_number(monkeypatch, f.fileno(), tmp_path / "not-the-callers")
        proc = pyckpt.restore(img, fds={1: f.fileno()})
        assert made == [f.fileno()]
    copy = _restored(spawn, t, proc, out)
    assert os.readlink(f"/proc/{t.pid}/fd/1") == str(out)
    check(copy)
    assert t.log.read_bytes() == old


# --- check --restore ---------------------------------------------------------------------------


def test_pid_in_use_is_reported_and_new_pidns_avoids_it(spawn, python_exe, tmp_path):
    t = _logger(spawn, python_exe)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)  # without kill: the original runs on with its PID
    image = pyckpt.open_image(img)
    children = {c.pid for c in psutil.Process().children()}
    fds = set(os.listdir("/proc/self/fd"))
    copy_log = tmp_path / "copy.log"

    problems = image.check_restore()
    assert [type(p.error) for p in problems] == [pyckpt.PidInUseError]
    assert problems[0].error.pid == t.pid and problems[0].fixes == (pyckpt.Fix("new_pidns"),)
    assert str(problems[0].fixes[0]) == "--new-pidns" and problems[0].fixes[0].keyword == "new_pidns=True"
    assert image.check_restore(new_pidns=True, fds={1: copy_log}) == []
    assert not copy_log.exists(), "a check created the replacement file"
    assert {c.pid for c in psutil.Process().children()} == children, "a check made a process"
    assert set(os.listdir("/proc/self/fd")) == fds, "a check left an fd open"
    with pytest.raises(pyckpt.PidInUseError):  # restore meets the same first problem
        pyckpt.restore(img)

    r = _cli("check", "--restore", img)
    assert r.returncode == pyckpt.PidInUseError.exit_code, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"image {img} is complete and intact ({len(image.records)} records)"
    assert re.fullmatch(rf"problem: PID {t.pid} is in use .*\[fix: --new-pidns\]", lines[1])
    assert lines[2:] == ["restorable with: --new-pidns"]
    r = _cli("check", "--restore", img, "--new-pidns")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[1:] == ["restorable here and now: a restore with --new-pidns gets "
                                         "past every check"]

    # and so it is: a copy beside the original, with a log of its own
    proc = pyckpt.restore(img, new_pidns=True, fds={1: copy_log})
    spawn.track(proc.ppid())  # the namespace's init: ending it ends the copy
    check(Target(proc.pid, copy_log))
    check(t)  # the original carries on, in its own log
    assert "READY" not in copy_log.read_text()


# fd 1 and 2 a terminal, fd 5 a pipe whose other end the test holds, and a data file
MANY = r"""
import os, sys, selfcheck
n = int(sys.argv[1])
os.dup2(n, 5)
os.close(n)
data = os.open(sys.argv[2], os.O_RDONLY)
selfcheck.listen()
print("READY", flush=True)
def check():
    os.write(5, b"FIVE\n")
    return [] if os.pread(data, 4, 0) == b"abcd" else ["data"]
selfcheck.serve(check)
"""


def _read_until(fd: int, pattern: bytes, timeout: float = 10.0) -> bytes:
    seen, deadline = b"", time.monotonic() + timeout
    while pattern not in seen:
        left = deadline - time.monotonic()
        assert left > 0 and select.select([fd], [], [], left)[0], f"no {pattern!r} in {seen!r}"
        seen += os.read(fd, 4096)
    return seen


def test_every_problem_is_listed_with_what_avoids_it(spawn, python_exe, tmp_path):
    data = tmp_path / "data.txt"
    data.write_bytes(b"abcdefgh")
    master, slave = os.openpty()
    r, w = os.pipe()
    p = subprocess.Popen([python_exe, "-c", MANY, str(w), str(data)], stdin=subprocess.DEVNULL,
                         stdout=slave, stderr=slave, pass_fds=(w,), start_new_session=True,
                         env=dict(os.environ, PYTHONPATH=str(TARGETS)))
    spawn.track(p.pid)
    os.close(slave)
    os.close(w)
    try:
        _read_until(master, b"READY")
        img = tmp_path / "img"
        pyckpt.dump(p.pid, img)  # the original runs on
        with open(data, "ab") as f:
            f.write(b"ij")
        data_fd = next(f["fd"] for f in pyckpt.open_image(img).summary()["fds"] if f["path"] == str(data))

        problems = pyckpt.open_image(img).check_restore()
        assert [type(p.error) for p in problems] == [pyckpt.PidInUseError, pyckpt.FileChangedError,
                                                     pyckpt.RestoreError, pyckpt.RestoreError]
        assert [p.fixes for p in problems] == [
            (pyckpt.Fix("new_pidns"),), (pyckpt.Fix("allow_changed_files"), pyckpt.Fix("fds", data_fd)),
            (pyckpt.Fix("inherit_stdio"), pyckpt.Fix("fds", 1)), (pyckpt.Fix("fds", 5),)]
        assert problems[1].error.path == str(data)
        out = _cli("check", "--restore", img)
        assert out.returncode == pyckpt.PidInUseError.exit_code, out.stderr  # the first problem's
        lines = out.stdout.splitlines()[1:]
        assert len(lines) == 5, out.stdout
        assert re.fullmatch(rf"problem: PID {p.pid} is in use .*\[fix: --new-pidns\]", lines[0])
        assert re.fullmatch(rf"problem: file '{data}' changed since the dump: size 10, was 8.*"
                            rf"\[fix: --allow-changed-files or --fd {data_fd}=PATH\]", lines[1])
        assert re.fullmatch(rf"problem: fd 1 of process {p.pid} was terminal /dev/pts/\d+ \(and so was "
                            r"fd 2\), outside the image.*\[fix: --inherit-stdio or --fd 1=PATH\]", lines[2])
        assert re.fullmatch(rf"problem: fd 5 of process {p.pid} was pipe:\[\d+\].*outside the image.*"
                            r"\[fix: --fd 5=PATH\]", lines[3])
        assert lines[4] == "restorable with: --new-pidns --inherit-stdio --allow-changed-files --fd 5=PATH"

        five = tmp_path / "five.out"
        out = _cli("check", "--restore", img, "--new-pidns", "--inherit-stdio", "--allow-changed-files",
                   "--fd", f"5={five}")
        assert out.returncode == 0, out.stdout + out.stderr
        assert not five.exists()

        # A restore with such options does get past validation; here fd 1 (and with it
        # fd 2) gets a file rather than this test's stdio.
        log = tmp_path / "copy.log"
        proc = pyckpt.restore(img, new_pidns=True, allow_changed_files=True, fds={1: log, 5: five})
        spawn.track(proc.ppid())
        check(Target(proc.pid, log))
        assert five.read_bytes() == b"FIVE\n"
    finally:
        os.close(master)
        os.close(r)


PORT = r"""
import socket, selfcheck
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen()
port = s.getsockname()[1]
selfcheck.listen()
print("READY", port, flush=True)
def check():
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        a, _ = s.accept()
        with a:
            c.sendall(b"ping")
            return [] if a.recv(4) == b"ping" else ["listener"]
selfcheck.serve(check)
"""


def test_port_in_use_is_reported_and_new_netns_avoids_it(spawn, python_exe, tmp_path):
    t = spawn([python_exe, "-c", PORT], name="listener")
    port = int(t.wait_for(r"^READY (\d+)$").group(1))
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)
    problems = pyckpt.open_image(img).check_restore(new_pidns=True)
    assert len(problems) == 1 and type(problems[0].error) is pyckpt.RestoreError
    assert f"cannot listen on TCP 127.0.0.1:{port}" in str(problems[0])
    listener = next(f["fd"] for f in pyckpt.open_image(img).summary()["fds"] if f["kind"] == "tcp-listen")
    # (giving that fd something else would avoid it too, but is no way to restore a server)
    assert problems[0].fixes == (pyckpt.Fix("new_netns"), pyckpt.Fix("fds", listener))
    r = _cli("check", "--restore", img)
    assert r.returncode == pyckpt.PidInUseError.exit_code
    assert r.stdout.splitlines()[-1] == "restorable with: --new-pidns --new-netns"
    assert _cli("check", "--restore", img, "--new-pidns", "--new-netns").returncode == 0
    check(t)  # the check took no connection of the original's
    log = tmp_path / "copy.log"
    proc = pyckpt.restore(img, new_pidns=True, new_netns=True, fds={1: log})
    spawn.track(proc.ppid())
    check(Target(proc.pid, log))  # its own listener, on the same port, in its own network


def test_locks_held_by_another_process_are_reported_and_no_option_avoids_them(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    t = spawn([python_exe, str(TARGETS / "lock_holder.py"), str(work)], name="lock-holder")
    t.wait_for("^READY")
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)
    image = pyckpt.open_image(img)
    problems = image.check_restore(new_pidns=True)  # a new PID namespace does not free a lock
    assert sorted(p.error.lock for p in problems) == [
        "OFD write lock on bytes 10-19", "POSIX write lock on bytes 0-9", "flock exclusive lock"], problems
    for p in problems:
        assert type(p.error) is pyckpt.LockConflictError and p.fixes == ()
        assert p.error.holder_pids == [t.pid], p.error
    r = _cli("check", "--restore", img, "--new-pidns")
    assert r.returncode == pyckpt.LockConflictError.exit_code
    assert r.stdout.count("[no restore option avoids this]") == 3
    assert r.stdout.splitlines()[-1] == ("not restorable here: 3 of the 3 problem(s) of a restore with "
                                         "--new-pidns no restore option avoids")

    os.kill(t.pid, signal.SIGKILL)  # the holder (ours) ends: the locks and its PID are free
    t.reap()
    assert image.check_restore() == []
    spawn.track(pyckpt.restore(img).pid)
    t.popen = None
    check(t)  # it holds exactly its locks again


def test_check_options_need_restore_and_a_bad_fd_spec_is_a_usage_error(spawn, python_exe, tmp_path):
    t, img, _ = _dumped_logger(spawn, python_exe, tmp_path)
    r = _cli("check", img, "--new-pidns")
    assert r.returncode == 2 and "--new-pidns only mean something with --restore" in r.stderr
    for spec in ("x=y", "1", "1="):
        r = _cli("check", "--restore", img, "--fd", spec)
        assert r.returncode == 2 and "--fd wants N=PATH" in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1
    r = _cli("check", "--restore", img)  # the log changed since the dump: that is all
    assert r.returncode == pyckpt.FileChangedError.exit_code
    assert r.stdout.splitlines()[-1] == "restorable with: --allow-changed-files"
    assert _cli("check", "--restore", img, "--fd", f"1={tmp_path / 'other.log'}").returncode == 0
    assert not (tmp_path / "other.log").exists()


def test_a_damaged_image_is_an_image_error_not_a_problem(spawn, python_exe, tmp_path_factory, tmp_path):
    from test_refusals import corrupt_copy, make_good_image

    good, _ = make_good_image(spawn, python_exe, tmp_path_factory, "plain")
    bad = corrupt_copy("bitflip-pages", good, tmp_path)
    image = pyckpt.open_image(bad)  # records are fine; a page is not
    with pytest.raises(pyckpt.ImageError, match="checksum"):
        image.check_restore()
    r = _cli("check", "--restore", bad)
    assert r.returncode == pyckpt.ImageError.exit_code and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "checksum" in r.stderr
