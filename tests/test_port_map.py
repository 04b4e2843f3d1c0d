"""restore(port_map={old: new}) / `pyckpt restore --port-map OLD:NEW`: a copy of a
TCP server listens on another port beside the original (no network namespace),
its connections within the image following the listener."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import psutil
import pytest

import pyckpt
from conftest import TARGETS, Target, check

TARGET = str(TARGETS / "portmap.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ask(port: int, line: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c, c.makefile("rwb") as f:
        f.write(line.encode() + b"\n")
        f.flush()
        return f.readline().decode().strip()


def _port_line(t: Target, after: int) -> int:
    return int(t.wait_for(r"^PORT (\d+)$", after=after).group(1))


def _copy(spawn, img, log, **options) -> Target:
    """Restore a copy beside the original (a new PID namespace: its PID is the original's);
    its init (our child) is what the finalizer kills, which ends the copy with it."""
    p = pyckpt.restore(img, new_pidns=True, fds={1: str(log), 2: str(log)}, progress=False, **options)
    spawn.track(p.ppid())
    return Target(p.pid, log)


def test_a_copy_listens_on_the_mapped_port_beside_the_original(spawn, python_exe, tmp_path):
    t = spawn([python_exe, TARGET], name="server")
    port = int(t.wait_for(r"^READY (\d+)$").group(1))
    assert _ask(port, "name saved") == "saved 1"
    check(t)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)  # the original runs on, on its port
    assert _ask(port, "name original") == "original 3"

    new = _free_port()
    copy = _copy(spawn, img, tmp_path / "copy.log", port_map={port: new})
    assert copy.pid != t.pid and psutil.Process(copy.pid).status() != psutil.STATUS_ZOMBIE
    # each answers on its own port, with its own state: the copy's is the image's
    assert _ask(new, "hello") == "saved 3"
    assert _ask(port, "hello") == "original 4"
    assert _ask(new, "name copy") == "copy 4"
    assert _ask(port, "hello") == "original 5"

    n = len(copy.lines())
    check(copy)  # its connection to itself now goes to the new port, its queue kept
    assert _port_line(copy, n) == new
    n = len(t.lines())
    check(t)
    assert _port_line(t, n) == port


def test_without_the_map_the_taken_port_is_named_with_the_way_out(spawn, python_exe, tmp_path):
    t = spawn([python_exe, TARGET], name="server")
    port = int(t.wait_for(r"^READY (\d+)$").group(1))
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)
    with pytest.raises(pyckpt.RestoreError) as ei:
        pyckpt.restore(img, new_pidns=True, progress=False)
    assert f"127.0.0.1:{port}" in str(ei.value) and f"--port-map {port}:NEW" in str(ei.value)
    assert f"port_map={{{port}: new}}" in str(ei.value)

    # a port the image does not listen on: refused before any process exists
    other = _free_port()
    with pytest.raises(pyckpt.RestoreError) as ei:
        pyckpt.restore(img, new_pidns=True, port_map={other: _free_port()}, progress=False)
    assert f"listens on port {other} (it listens on {port})" in str(ei.value)
    problems = pyckpt.open_image(img).check_restore(new_pidns=True, port_map={port: other})
    assert problems == []
    with pytest.raises(ValueError, match="both map to"):
        pyckpt.restore(img, port_map={port: other, port + 1: other})
    with pytest.raises(TypeError, match="ports are ints"):
        pyckpt.restore(img, port_map={str(port): other})
    # the mapped port taken too: named as such
    with socket.create_server(("127.0.0.1", other)):
        with pytest.raises(pyckpt.RestoreError,
                           match=rf"127\.0\.0\.1:{other}, .*\(moved from port {port} by the port map\)"):
            pyckpt.restore(img, new_pidns=True, port_map={port: other}, progress=False)
    check(t)


def test_a_map_for_an_image_without_listeners_is_refused(spawn, python_exe, tmp_path):
    """(the kind that checks the map is not loaded for such an image otherwise)"""
    t = spawn([python_exe, "-c", "import selfcheck\nprint('READY', flush=True)\n"
                                 "selfcheck.serve(lambda: [])"], name="plain")
    t.wait_for("^READY$")
    pyckpt.dump(t.pid, tmp_path / "img")
    problems = pyckpt.open_image(tmp_path / "img").check_restore(new_pidns=True, port_map={1234: 5678})
    assert [str(p) for p in problems] == [
        f"--port-map 1234:5678: no TCP socket of the image at {tmp_path / 'img'} listens on port "
        "1234 (it has no listening TCP socket): map only those ports"]
    check(t)


def test_cli_port_map(spawn, python_exe, tmp_path):
    t = spawn([python_exe, TARGET], name="server")
    port = int(t.wait_for(r"^READY (\d+)$").group(1))
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)
    run = lambda *a: subprocess.run([sys.executable, "-m", "pyckpt", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    r = run("restore", img, "--new-pidns", "--port-map", f"{port}")
    assert r.returncode == 2 and "--port-map wants OLD:NEW (two TCP ports)" in r.stderr, r.stderr
    new = _free_port()
    r = run("check", "--restore", img, "--new-pidns", "--port-map", f"{port}:{new}")
    assert r.returncode == 0 and "restore with --new-pidns --port-map" in r.stdout, r.stdout + r.stderr
    r = run("check", "--restore", img, "--new-pidns")
    assert r.returncode != 0 and f"--port-map {port}:NEW" in r.stdout + r.stderr, r.stdout + r.stderr
    log = tmp_path / "copy.log"
    r = run("restore", img, "--new-pidns", "--port-map", f"{port}:{new}", "--fd", f"1={log}",
            "--fd", f"2={log}")
    assert r.returncode == 0, r.stderr
    copy = int(r.stdout.strip())
    spawn.track(psutil.Process(copy).ppid())  # its namespace's init, orphaned to this subreaper
    assert _ask(new, "hello").startswith("original ")  # the copy: its state is the image's
    n = len(Target(copy, log).lines())
    check(Target(copy, log))
    assert _port_line(Target(copy, log), n) == new
    check(t)
