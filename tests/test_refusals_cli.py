"""Every bad input, through the `pyckpt` command: the error class's exit code, one line on stderr.

Also SIGTERM / SIGINT sent to a `pyckpt dump` or `pyckpt restore` mid-way:
exit 130, the dump target runs on untouched and the image is marked
INCOMPLETE; a half-restored process is removed.  Only processes these tests
start are signalled or killed.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pyckpt
from test_refusals import (
    CORRUPTIONS,
    assert_not_complete,
    assert_untouched,
    corrupt_copy,
    free_pid,
    image_with_changed_log,
    make_good_image,
    pid_exists,
    start_ticker,
    tracer_of,
    traced_ticker,
    zombie,
)

BIG = "big768"  # MiB: a dump of it takes ~2.5 s and a restore ~3 s on the 2-vCPU VM


def pyckpt_argv(*args) -> list[str]:
    return [sys.executable, "-m", "pyckpt", *map(str, args)]


def run_cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(pyckpt_argv(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, start_new_session=True)


def assert_error_line(stderr: str, command: str, *words) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {stderr!r}"
    line = lines[0]
    assert line.startswith(f"pyckpt {command}: "), line
    for w in words:
        assert str(w) in line, f"{w!r} not in {line!r}"
    return line


def assert_fails(res: subprocess.CompletedProcess, cls, command: str, *words) -> str:
    assert res.returncode == cls.exit_code, (
        f"exit {res.returncode}, expected {cls.exit_code} ({cls.__name__}); stderr: {res.stderr!r}")
    assert res.stdout == "", res.stdout
    return assert_error_line(res.stderr, command, *words)


@pytest.fixture
def good_image(spawn, python_exe, tmp_path_factory):
    return make_good_image(spawn, python_exe, tmp_path_factory, "plain")


# --- dump: which process ----------------------------------------------------------------------------

def test_cli_nonexistent_pid(tmp_path):
    pid = free_pid()
    res = run_cli("dump", pid, tmp_path / "img")
    assert_fails(res, pyckpt.NoSuchProcessError, "dump", pid)
    assert_not_complete(tmp_path / "img")


def test_cli_pid_zero(tmp_path):
    res = run_cli("dump", 0, tmp_path / "img")
    assert_fails(res, pyckpt.NoSuchProcessError, "dump", "0")


def test_cli_own_pid(tmp_path, python_exe):
    """`pyckpt dump` given its own PID: sh execs pyckpt, so $$ is pyckpt's PID."""
    img = tmp_path / "img"
    p = subprocess.Popen(["sh", "-c", 'exec "$0" -m pyckpt dump $$ "$1"', python_exe, str(img)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == pyckpt.UnsuitableProcessError.exit_code, err
    assert out == ""
    assert_error_line(err, "dump", p.pid, "itself")
    assert_not_complete(img)


def test_cli_zombie(spawn, python_exe, tmp_path):
    z = zombie(spawn, python_exe)
    res = run_cli("dump", z.pid, tmp_path / "img")
    assert_fails(res, pyckpt.UnsuitableProcessError, "dump", z.pid, "zombie")
    assert_not_complete(tmp_path / "img")
    z.reap()


def test_cli_traced(spawn, python_exe, tmp_path):
    t, helper = traced_ticker(spawn, python_exe)
    res = run_cli("dump", t.pid, tmp_path / "img")
    assert_fails(res, pyckpt.AlreadyTracedError, "dump", t.pid, helper.pid)
    assert_not_complete(tmp_path / "img")
    assert_untouched(t, tracer=helper.pid)
    from conftest import kill_own

    kill_own(helper.pid)
    deadline = time.monotonic() + 5
    while tracer_of(t.pid) != 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert_untouched(t)


def test_cli_unsupported_fd(spawn, python_exe, tmp_path):
    t, ready = start_ticker(spawn, python_exe, "pidfd")
    fd = int(ready.split()[-1])
    img = tmp_path / "img"
    res = run_cli("dump", t.pid, img)
    line = assert_fails(res, pyckpt.UnsupportedFdError, "dump", t.pid, "pidfd")
    assert f"fd {fd}" in line, line
    assert_not_complete(img, must_exist=True)
    assert_untouched(t)


# --- dump: where the image goes --------------------------------------------------------------------

@pytest.mark.parametrize("case", ["under-regular-file", "regular-file", "non-empty-dir"])
def test_cli_unwritable_image(case, spawn, python_exe, tmp_path):
    t, _ = start_ticker(spawn, python_exe)
    if case == "under-regular-file":
        (tmp_path / "file").write_text("x\n")
        img = tmp_path / "file" / "img"
    elif case == "regular-file":
        img = tmp_path / "img"
        img.write_text("x\n")
    else:
        img = tmp_path / "img"
        img.mkdir()
        (img / "precious.txt").write_text("x\n")
    res = run_cli("dump", t.pid, img)
    assert_fails(res, pyckpt.ImageWriteError, "dump", img)
    if case == "non-empty-dir":
        assert [p.name for p in img.iterdir()] == ["precious.txt"]
    assert_untouched(t)


@pytest.mark.parametrize("kill", [False, True], ids=["keep", "kill"])
def test_cli_image_filesystem_full(kill, spawn, python_exe, tmp_path):
    """pages.img cannot grow past 8 MiB (RLIMIT_FSIZE on pyckpt: EFBIG, as on a full disk)."""
    t, _ = start_ticker(spawn, python_exe, "big64")
    img = tmp_path / "img"
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, resource.RLIM_INFINITY))  # noqa: E731
    res = subprocess.run(pyckpt_argv("dump", t.pid, img, *(["--kill"] if kill else [])),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                         start_new_session=True, preexec_fn=limit)
    assert_fails(res, pyckpt.ImageWriteError, "dump", img)
    assert_not_complete(img, must_exist=True)
    assert_untouched(t)


def test_cli_bad_command_line(tmp_path):
    """argparse's own errors: exit 2, no traceback, the bad value named."""
    res = run_cli("dump", "notapid", tmp_path / "img")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert "notapid" in res.stderr.splitlines()[-1]
    assert not (tmp_path / "img").exists()


# --- restore / check / show: bad images ------------------------------------------------------------

@pytest.mark.parametrize("command", ["restore", "check", "show"])
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_cli_bad_image(name, command, good_image, tmp_path, spawn):
    good, pid = good_image
    path = corrupt_copy(name, good, tmp_path)
    spawn.track(pid)
    res = run_cli(command, path)
    if command == "show" and name == "bitflip-pages":
        # show reads records only; page digests are for check and restore
        assert res.returncode == 0, res.stderr
        return
    assert_fails(res, pyckpt.ImageError, command, path, *CORRUPTIONS[name][1])
    assert not pid_exists(pid), f"a refused restore left PID {pid} behind"


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_cli_file_changed(how, spawn, python_exe, tmp_path):
    img, pid, log = image_with_changed_log(spawn, python_exe, tmp_path, how)
    spawn.track(pid)
    res = run_cli("restore", img)
    assert_fails(res, pyckpt.FileChangedError, "restore", log)
    assert not pid_exists(pid), f"a refused restore left PID {pid} behind"


def test_cli_pid_in_use(spawn, python_exe, tmp_path):
    t, _ = start_ticker(spawn, python_exe)
    img = tmp_path / "img"
    res = run_cli("dump", t.pid, img)
    assert res.returncode == 0, res.stderr
    assert_untouched(t)
    res = run_cli("restore", img)
    assert_fails(res, pyckpt.PidInUseError, "restore", t.pid)
    assert_untouched(t)


# --- SIGTERM / SIGINT mid-way ----------------------------------------------------------------------

def _wait_until(cond, p: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if p.poll() is not None:
            out, err = p.communicate()
            raise AssertionError(f"pyckpt ended (exit {p.returncode}) before {what}; "
                                 f"stdout {out!r} stderr {err!r}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def _pages_written(img: Path, least: int) -> bool:
    try:
        return (img / "pages.img").stat().st_size >= least
    except OSError:
        return False


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _maps(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as f:
        return [line.split()[0] + " " + line.split()[1] for line in f]


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _stop(p: subprocess.Popen) -> bool:
    """SIGSTOP our own child `p` and wait until it is stopped; False if it ended first.

    While it is stopped nothing it does can change, so a test can check that a
    phase still holds before it signals: the signal then surely lands in it.
    """
    p.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while p.poll() is None:
        try:
            if _state(p.pid) == "T":
                return True
        except OSError:
            pass
        assert time.monotonic() < deadline, f"pyckpt {p.pid} did not stop"
    return False


def _assert_interrupted(p: subprocess.Popen, out: str, err: str, img: Path, t, maps_before, label: str):
    assert p.returncode == pyckpt.Interrupted.exit_code, (
        f"{label}: exit {p.returncode}, expected 130; stderr {err!r}")
    assert out == ""
    assert_error_line(err, "dump", "interrupted")
    assert_not_complete(img, must_exist=True)
    assert "interrupted" in (img / "INCOMPLETE").read_text()
    assert_untouched(t)
    assert _maps(t.pid) == maps_before, f"{label}: the interrupted dump left the target's mappings changed"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_signal_mid_dump(sig, spawn, python_exe, tmp_path):
    t, _ = start_ticker(spawn, python_exe, BIG, timeout=60)
    maps_before = _maps(t.pid)
    phases = {
        # just after the seize: /proc reading and injection under way
        "seized": lambda img, p: tracer_of(t.pid) == p.pid,
        # copying memory into pages.img (4 MiB at a time): a third of the way
        "pages": lambda img, p: _pages_written(img, 256 << 20),
    }
    # --kill too: the target must be killed only once its image is complete
    for phase, kill in [("seized", False), ("pages", False), ("pages", True)]:
        ready = phases[phase]
        label = phase + (" --kill" if kill else "")
        for attempt in range(3):
            img = tmp_path / f"img-{phase}-{kill}-{attempt}"
            p = subprocess.Popen(pyckpt_argv("dump", t.pid, img, *(["--kill"] if kill else [])),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
            try:
                _wait_until(lambda: ready(img, p), p, f"the dump reached phase {phase!r}")
                # Stopped, pyckpt is surely still in the phase if it holds now (a slow test
                # process once saw it too late and signalled a dump that was complete).
                in_phase = _stop(p) and ready(img, p) and not (img / "COMPLETE").exists()
                if in_phase:
                    p.send_signal(sig)  # our own child
                p.send_signal(signal.SIGCONT)
                t_sig = time.monotonic()
                out, err = p.communicate(timeout=60)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            if in_phase:
                break
            # Stopped only after the phase: not signalled, it must simply have succeeded.
            assert p.returncode == 0, f"{label}: exit {p.returncode}; stderr {err!r}"
            if kill:
                t.reap()
                t, _ = start_ticker(spawn, python_exe, BIG, timeout=60)
                maps_before = _maps(t.pid)
        else:
            raise AssertionError(f"{label}: pyckpt never stopped in the phase")
        took = time.monotonic() - t_sig
        _assert_interrupted(p, out, err, img, t, maps_before, label)
        assert took < 10, f"{label}: pyckpt took {took:.1f}s to stop after the signal"


def _wait_quick(cond, p: subprocess.Popen) -> bool:
    """Poll without sleeping (the windows below last a few milliseconds); False if pyckpt ended."""
    while not cond():
        if p.poll() is not None:
            return False
    return True


# A dump whose scratch page is mapped into the target, as where the leader's frame cannot
# be armed on its stack (Injector.scratch_page's fallback): the page's mapping and unmapping
# show the test when the injected calls begin and when the injectors have cured the target,
# which nothing else outside pyckpt shows (the stack below the frame leaves no trace in maps).
_MAPPED_SCRATCH = """
import sys
from pyckpt.inject import Injector

def scratch_page(self, _own=Injector.scratch_page):
    if not self.held:
        return _own(self)
    self.use_gadget()
    if self.gadget and not self._frame_sp:
        self._arm()
    return self._map_page()

Injector.scratch_page = scratch_page
sys.argv[0] = "pyckpt"
from pyckpt.cli import main
sys.exit(main())
"""


def pyckpt_mapped_scratch_argv(*args) -> list[str]:
    return [sys.executable, "-c", _MAPPED_SCRATCH, *map(str, args)]


# Where a signal used to be lost (issue 8): after the dump's last checkpoint (before the
# last kind) nothing looked at a noted SIGINT/SIGTERM, the dump went on and exited 0 with
# a complete image — with --kill, killing the target.
WINDOWS = {
    # the injectors have cured the target (its scratch page is gone), still frozen: records
    # written, then detach (or, --kill, the image finished and fsynced before the kill)
    "cured": lambda t, p, img, before: (tracer_of(t.pid) == p.pid and _maps(t.pid) == before
                                         and not (img / "COMPLETE").exists()),
    # detached, the image being finished
    "detached": lambda t, p, img, before: (tracer_of(t.pid) != p.pid
                                            and not (img / "COMPLETE").exists()),
}


@pytest.mark.parametrize("window,kill", [("cured", False), ("detached", False), ("cured", True)],
                         ids=["cured", "detached", "cured-kill"])
def test_cli_signal_after_last_checkpoint(window, kill, spawn, python_exe, tmp_path):
    """Loop the race: stop pyckpt at the end of the dump, and when it is stopped in the window,
    SIGINT it: exit 130, no COMPLETE image, the target untouched."""
    t, _ = start_ticker(spawn, python_exe)
    before = _maps(t.pid)
    inside = WINDOWS[window]
    hits, runs = 0, 0
    while hits < 3:
        assert runs < 25, f"only {hits} of {runs} dumps were stopped in the window {window!r}"
        runs += 1
        img = tmp_path / f"img-{runs}"
        p = subprocess.Popen(pyckpt_mapped_scratch_argv("dump", t.pid, img, *(["--kill"] if kill else [])),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        try:
            hit = (_wait_quick(lambda: tracer_of(t.pid) == p.pid, p)
                   and _wait_quick(lambda: _maps(t.pid) != before, p)  # the scratch page is mapped
                   and _wait_quick(lambda: (_maps(t.pid) == before if window == "cured"
                                            else tracer_of(t.pid) != p.pid), p)
                   and _stop(p) and inside(t, p, img, before))
            if hit:
                p.send_signal(signal.SIGINT)  # our own child
            p.send_signal(signal.SIGCONT)
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        if hit:
            hits += 1
            _assert_interrupted(p, out, err, img, t, before, f"{window} (run {runs})")
        else:  # not signalled: a plain dump
            assert p.returncode == 0, f"run {runs}: exit {p.returncode}; stderr {err!r}"
            if kill:
                t.reap()
                t, _ = start_ticker(spawn, python_exe)
                before = _maps(t.pid)


@pytest.fixture
def big_image(spawn, python_exe, tmp_path_factory):
    return make_good_image(spawn, python_exe, tmp_path_factory, BIG)


def _has_open(pid: int, name: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(name):
                return True
        except OSError:
            pass
    return False


def test_cli_sigterm_mid_restore(big_image, spawn):
    img, pid = big_image
    spawn.track(pid)
    phases = {
        # verifying page digests: no process made yet
        "verify": lambda p: _has_open(p.pid, "pages.img") and not pid_exists(pid),
        # the new task has just been created
        "created": lambda p: pid_exists(pid),
        # its memory is being filled: a third of the pages are in
        "pages": lambda p: _rss(pid) >= 256 << 20,
    }
    for phase, ready in phases.items():
        for attempt in range(3):
            p = subprocess.Popen(pyckpt_argv("restore", img), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
            try:
                _wait_until(lambda: ready(p), p, f"the restore reached phase {phase!r}")
                # Stopped, pyckpt is surely still in the phase if it holds now, and has not
                # let the process go yet if it still traces it.
                in_phase = (_stop(p) and ready(p)
                            and (not pid_exists(pid) or tracer_of(pid) == p.pid))
                if in_phase:
                    p.send_signal(signal.SIGTERM)  # our own child
                p.send_signal(signal.SIGCONT)
                out, err = p.communicate(timeout=60)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            if in_phase:
                break
            # Stopped only after the phase: not signalled, the restore must simply have worked.
            assert p.returncode == 0, f"{phase}: exit {p.returncode}; stderr {err!r}"
            from conftest import kill_own

            kill_own(pid)  # the restored process, handed to us (a subreaper) when pyckpt ended
        else:
            raise AssertionError(f"{phase}: pyckpt never stopped in the phase")
        assert p.returncode == pyckpt.Interrupted.exit_code, (
            f"{phase}: exit {p.returncode}, expected 130; stdout {out!r} stderr {err!r}")
        assert out == ""
        assert_error_line(err, "restore", "interrupted")
        assert not pid_exists(pid), f"{phase}: an interrupted restore left PID {pid} behind"
    # the image is untouched and still restorable-looking
    pyckpt.open_image(img)
