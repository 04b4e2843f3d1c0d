"""Stdio that belongs to something outside the image (here a terminal) is never
dropped silently: restore needs a replacement fd, pyckpt's own stdio, or fails clearly."""

import os
import subprocess
import sys
import time

import pytest

import pyckpt
from conftest import TARGETS, Target


def _start_on_terminal(spawn, tmp_path, python_exe):
    master, slave = os.openpty()
    log = tmp_path / "ticker.log"
    p = subprocess.Popen([python_exe, str(TARGETS / "ticker.py")], stdin=subprocess.DEVNULL,
                         stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    spawn.track(p.pid)
    os.set_blocking(master, False)
    deadline = time.monotonic() + 10
    seen = b""
    while b"tick 3" not in seen and time.monotonic() < deadline:
        try:
            seen += os.read(master, 4096)
        except BlockingIOError:
            time.sleep(0.02)
    assert b"tick 3" in seen, seen
    return Target(p.pid, log, p), master


def _dump(t, master, img):
    pyckpt.dump(t.pid, img, kill=True)
    t.reap()
    os.close(master)


def test_terminal_is_saved_as_external_and_shown(spawn, tmp_path, python_exe):
    t, master = _start_on_terminal(spawn, tmp_path, python_exe)
    img = tmp_path / "img"
    _dump(t, master, img)
    fds = {f["fd"]: f for f in pyckpt.open_image(img).summary()["fds"]}
    assert fds[1]["kind"] == "external" and fds[1]["what"].startswith("terminal /dev/pts/")
    assert fds[2]["shared_with"] == [1]


def test_restore_without_replacement_fails_clearly(spawn, tmp_path, python_exe):
    t, master = _start_on_terminal(spawn, tmp_path, python_exe)
    img = tmp_path / "img"
    _dump(t, master, img)
    with pytest.raises(pyckpt.RestoreError, match=r"fd 1 .* terminal /dev/pts/.*outside the image"):
        pyckpt.restore(img)
    assert not os.path.exists(f"/proc/{t.pid}")
    r = subprocess.run([sys.executable, "-m", "pyckpt", "restore", str(img)], capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == pyckpt.RestoreError.exit_code
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and "--fd 1=PATH" in r.stderr
    assert not os.path.exists(f"/proc/{t.pid}")


def test_replacement_fds_through_api_and_cli(spawn, tmp_path, python_exe):
    t, master = _start_on_terminal(spawn, tmp_path, python_exe)
    img = tmp_path / "img"
    _dump(t, master, img)
    out = tmp_path / "out.log"
    with open(out, "wb") as f:
        proc = pyckpt.restore(img, fds={1: f, 2: f.fileno()})
    spawn.track(proc.pid)
    t.log = out
    t.wait_for(r"^tick \d+$")
    proc.kill()
    os.waitpid(proc.pid, 0)

    out2 = tmp_path / "out2.log"
    r = subprocess.run([sys.executable, "-m", "pyckpt", "restore", str(img), "--fd", f"1={out2}",
                        "--fd", f"2={out2}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(t.pid)
    spawn.track(t.pid)
    t.log = out2
    t.wait_for(r"^tick \d+$")


def test_inherit_stdio_through_cli(spawn, tmp_path, python_exe):
    t, master = _start_on_terminal(spawn, tmp_path, python_exe)
    img = tmp_path / "img"
    _dump(t, master, img)
    out = tmp_path / "cli-stdout.log"
    err = tmp_path / "cli-stderr.log"
    # Files, not pipes: the restored process keeps the command's stdout and
    # stderr open, so a pipe would never reach end-of-file.
    with open(out, "wb") as f, open(err, "wb") as e:
        # (unbuffered, print() writes a line's text and its newline apart: the command's
        # line must still be one write)
        r = subprocess.run([sys.executable, "-m", "pyckpt", "restore", str(img), "--inherit-stdio"],
                           stdout=f, stderr=e, stdin=subprocess.DEVNULL, timeout=60,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, err.read_text()
    spawn.track(t.pid)
    t.log = out
    # The command's own line and the restored process's ticks share one file offset. An
    # unbuffered ticker (PYTHONUNBUFFERED, as this machine sets it) writes a tick's text
    # and its newline apart, so the command's line may land between the halves ('tick 4'
    # pid '\n' '\n'): looked for as text, not as a line of its own.
    deadline = time.monotonic() + 10
    while f"{t.pid}\n" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"{t.pid}\n" in out.read_text(), out.read_text()[-200:]
    t.wait_for(r"^tick \d+$")  # and the restored process writes to the same stdout


def test_inherit_stdio_refuses_a_closed_fd_even_when_its_number_is_reused(spawn, tmp_path, python_exe,
                                                                          monkeypatch):
    """inherit_stdio with pyckpt's own fd 1 closed: refused, even when a file opened once the
    restore has begun gets number 1 (it is not pyckpt's stdout)."""
    from test_check_restore import _reusing_the_number

    t, master = _start_on_terminal(spawn, tmp_path, python_exe)
    img = tmp_path / "img"
    _dump(t, master, img)
    spawn.track(t.pid)  # (should a restore wrongly succeed)
    saved = os.dup(1)
    try:
        os.close(1)
        made = _reusing_the_number(monkeypatch, 1, tmp_path / "not-stdout")
        with pytest.raises(pyckpt.RestoreError, match=r"inherit_stdio: pyckpt's own fd 1 is not open"):
            pyckpt.restore(img, inherit_stdio=True)
        assert made == [1]
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert not os.path.exists(f"/proc/{t.pid}")
