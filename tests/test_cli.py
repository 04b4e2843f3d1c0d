"""The `pyckpt` command end to end: dump --kill, restore, show, show --json, check, --help.

A process restored by `pyckpt restore` is reparented to pytest (a child
subreaper, see conftest.py) when the command exits, so it is tracked and
reaped like any other target.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import check, write_mapfile



def pyckpt_cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyckpt", "--no-progress", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)




def test_cli_cycle(spawn, ctarget, tmp_path):
    mapfile = write_mapfile(tmp_path / "mapped.bin")
    t = spawn([str(ctarget), str(mapfile)], name="ctarget")
    t.wait_for(r"^READY")
    before = check(t)
    image = tmp_path / "img"

    r = pyckpt_cli("dump", t.pid, image, "--kill")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    status = t.reap()
    assert status == -signal.SIGKILL, f"the dumped target ended with {status}, not SIGKILL"
    assert not psutil.pid_exists(t.pid)

    r = pyckpt_cli("check", image)
    assert r.returncode == 0, r.stderr
    assert "complete and intact" in r.stdout

    r = pyckpt_cli("show", image)
    assert r.returncode == 0, r.stderr
    assert f"process {t.pid} " in r.stdout
    assert str(mapfile) in r.stdout
    assert str(t.log) in r.stdout

    r = pyckpt_cli("show", image, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["header"]["root_pid"] == t.pid
    vmas = info["vmas"]
    assert vmas and all(v["start"] < v["end"] for v in vmas)
    starts = [v["start"] for v in vmas]
    assert starts == sorted(starts)
    names = {v["name"] for v in vmas}
    assert str(ctarget) in names and str(mapfile) in names and "[stack]" in names
    # the 64 MiB heap buffer is stored
    assert info["pages_bytes"] >= 64 << 20
    mapped = [v for v in vmas if v["name"] == str(mapfile)]
    assert any(v["prot"] == 3 and not v["shared"] for v in mapped)
    assert any(v["shared"] for v in vmas), "the MAP_SHARED|MAP_ANONYMOUS area is missing"
    fds = {f["fd"]: f for f in info["fds"]}
    assert set(fds) == {0, 1, 2}
    assert fds[0]["path"] == "/dev/null"
    assert fds[1]["path"] == fds[2]["path"] == str(t.log)
    assert fds[1]["shared_with"] == [2]

    r = pyckpt_cli("restore", image)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [str(t.pid)] and r.stdout.endswith("\n"), repr(r.stdout)
    pid = int(r.stdout)
    spawn.track(pid)
    t.popen = None
    p = psutil.Process(pid)
    assert p.ppid() == os.getpid()  # reparented to pytest, the subreaper
    assert p.status() in (psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING), p.status()
    after = check(t)
    assert after > before
    assert check(t) > after


@pytest.mark.parametrize("command", [[], ["dump"], ["restore"], ["show"], ["check"]])
def test_cli_help(command):
    r = pyckpt_cli(*command, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: ")
    if command:
        assert f"pyckpt {command[0]}" in r.stdout
    else:
        for sub in ("dump", "restore", "show", "check", "exit codes"):
            assert sub in r.stdout


def test_cli_installed_script_help():
    # The console script installed beside the interpreter running the tests
    # (.venv/bin/pyckpt), which need not be on PATH.
    script = Path(sys.executable).parent / "pyckpt"
    r = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: pyckpt")
