"""The `pyckpt` command's rough edges: options after the command, --debug's exit code,
hints that name the way out, what a failed dump leaves behind, `dump --kill` and the
PID it frees, the one-line summary of a dump on a terminal, progress bars.

Only processes these tests start (and restore) are signalled or killed, by PID.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import kill_own

import pyckpt
from pyckpt import cli, errors
from pyckpt.progress import Progress
from test_refusals import image_with_changed_log, pid_exists, start_ticker


def run_cli(*args, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([sys.executable, "-m", "pyckpt", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, start_new_session=True, **kw)


def one_error_line(stderr: str, command: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pyckpt {command}: "), stderr
    return lines[0]


# --- 1. --debug and --no-progress, before or after the command ----------------------------------

@pytest.mark.parametrize("argv", [
    ["--debug", "--no-progress", "check", "D"],
    ["check", "--debug", "--no-progress", "D"],
    ["--debug", "check", "--no-progress", "D"],
    ["--no-progress", "check", "D", "--debug"],
])
def test_common_options_anywhere(argv):
    args = cli.build_parser().parse_args(argv)
    assert args.debug is True and args.no_progress is True and args.dir == "D"


@pytest.mark.parametrize("command", [["dump", "1", "D"], ["restore", "D"], ["show", "D"], ["check", "D"]])
def test_common_options_default_off(command):
    args = cli.build_parser().parse_args(command)
    assert args.debug is False and args.no_progress is False
    # given before the command, not undone by the subcommand's parser
    args = cli.build_parser().parse_args(["--debug", *command])
    assert args.debug is True and args.no_progress is False


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_keeps_the_exit_code(where, tmp_path):
    missing = tmp_path / "no-image"
    args = ["--debug", "show", missing] if where == "before" else ["show", missing, "--debug"]
    r = run_cli(*args)
    assert r.returncode == pyckpt.ImageError.exit_code, r.stderr
    assert "Traceback (most recent call last)" in r.stderr
    assert "pyckpt.errors.ImageError" in r.stderr
    assert r.stderr.splitlines()[-1].startswith("pyckpt show: error: no image at "), r.stderr
    assert r.stdout == ""
    # without --debug: the one line only, same code
    r = run_cli("show", missing)
    assert r.returncode == pyckpt.ImageError.exit_code
    one_error_line(r.stderr, "show")


@pytest.mark.parametrize("raised, code, words", [
    (errors.PidInUseError(1), errors.PidInUseError.exit_code, "error: PID 1 is in use"),
    (KeyboardInterrupt("signal 2"), errors.Interrupted.exit_code, "interrupted"),
    (ValueError("a bug"), 1, "internal error: ValueError: a bug"),
])
def test_debug_every_kind_of_error(raised, code, words, monkeypatch, capsys):
    def command(args, progress):
        raise raised

    monkeypatch.setitem(cli.COMMANDS, "show", command)
    assert cli.main(["show", "D", "--debug"]) == code
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)"), err
    assert words in err.splitlines()[-1], err
    assert cli.main(["show", "D"]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and words in err and len(err.splitlines()) == 1, err


# --- 6. hints that name the way out -------------------------------------------------------------

def test_pid_in_use_names_new_pidns(spawn, python_exe, tmp_path):
    t, _ = start_ticker(spawn, python_exe)
    img = tmp_path / "img"
    r = run_cli("--no-progress", "dump", t.pid, img)
    assert r.returncode == 0, r.stderr
    r = run_cli("--no-progress", "restore", img)
    assert r.returncode == pyckpt.PidInUseError.exit_code, r.stderr
    line = one_error_line(r.stderr, "restore")
    assert f"PID {t.pid} is in use" in line and "--new-pidns" in line and "new_pidns=True" in line, line
    # and the way out works: a copy beside the running original (which has written
    # to its log since: the next hint's way out, see below)
    r = run_cli("--no-progress", "restore", "--new-pidns", "--allow-changed-files", img)
    assert r.returncode == 0, r.stderr
    outer = int(r.stdout)
    init = psutil.Process(outer).ppid()
    spawn.track(init)  # the namespace's init, reparented to pytest; killing it ends the copy
    assert psutil.Process(outer).status() in (psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING)
    kill_own(init)
    assert t.alive()


def test_pid_in_use_api_message():
    e = pyckpt.PidInUseError(1234, " by python3 (state Z)")
    assert "--new-pidns" in str(e) and "new_pidns=True" in str(e)
    # inside a new namespace already: that is no way out
    e = pyckpt.PidInUseError(1234, " inside the new namespace")
    assert "new-pidns" not in str(e) and "end (and reap)" in str(e)


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_file_changed_names_the_way_out(how, spawn, python_exe, tmp_path):
    img, pid, log = image_with_changed_log(spawn, python_exe, tmp_path, how)
    spawn.track(pid)
    r = run_cli("--no-progress", "restore", img)
    assert r.returncode == pyckpt.FileChangedError.exit_code, r.stderr
    line = one_error_line(r.stderr, "restore")
    assert log in line and "--fd N=PATH" in line and "fds={N: file}" in line, line
    if how == "removed":
        # --allow-changed-files cannot bring a removed file back: not offered
        assert "allow-changed-files" not in line and "put it back" in line, line
        return
    assert "--allow-changed-files" in line and "allow_changed_files=True" in line, line
    # and the way out works
    r = run_cli("--no-progress", "restore", "--allow-changed-files", img)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == pid
    assert psutil.Process(pid).status() in (psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING)


def test_file_changed_api_message():
    e = pyckpt.FileChangedError("/x/log", "size 12, was 10")
    assert e.path == "/x/log" and "--allow-changed-files" in str(e) and "fds=" in str(e)
    e = pyckpt.FileChangedError("/x/log", "it no longer exists")
    assert "allow" not in str(e) and "fds=" in str(e)


# --- 2. progress: the restore bar moves while pages are read; one set of units ------------------

class RecordingProgress(Progress):
    """A `progress=` object that records every bar's updates."""

    def __init__(self):
        super().__init__(False)
        self.updates: dict[str, list[int]] = {}
        self.totals: dict[str, int] = {}

    def bar(self, total: int, desc: str):
        self.totals[desc] = total
        updates = self.updates.setdefault(desc, [])

        class Bar:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def update(self, n=1):
                updates.append(n)

        return Bar()


def test_restore_bar_moves_while_pages_are_read(spawn, ctarget, tmp_path):
    from conftest import check, reap_dumped, start_ctarget
    from pyckpt.kinds import memory

    t = start_ctarget(spawn, ctarget, tmp_path)
    before = check(t)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    # the 64 MiB buffer is one run of pages, larger than a piece
    runs = [length for v in pyckpt.open_image(img).records if isinstance(v, memory.VmaRecord)
            for _, length, _ in memory._coalesced(v.pages)]
    assert max(runs) > memory.READ_CHUNK, runs

    progress = RecordingProgress()
    proc = pyckpt.restore(img, progress=progress)
    spawn.track(proc.pid)
    t.popen = None
    updates = progress.updates["restore memory"]
    assert sum(updates) == progress.totals["restore memory"] == sum(runs)
    # one update per piece: the bar moves in steps of at most READ_CHUNK
    assert max(updates) <= memory.READ_CHUNK, sorted(updates)[-5:]
    assert len(updates) >= sum(-(-r // memory.READ_CHUNK) for r in runs)
    assert check(t) > before  # the pieces landed where they belong


def test_progress_units_are_binary_for_sizes_and_rates():
    import io

    from pyckpt.progress import binary_size

    assert [binary_size(n) for n in (0, 999, 1024, 1536, 10 << 20, 300 << 20, 1 << 30)] == [
        "0 B", "999 B", "1.00 KiB", "1.50 KiB", "10.0 MiB", "300 MiB", "1.00 GiB"]
    out = io.StringIO()
    progress = Progress(True)
    with progress.bar(1 << 30, "restore memory") as bar:
        bar.fp = out  # tqdm writes through its file attribute
        bar.update(300 << 20)
        bar.refresh()
        line = str(bar)
    assert line.startswith("restore memory:  29%|"), line
    done, rate = line.split("| ", 1)[1].split(" [")[0], line.rsplit(", ", 1)[1]
    assert done == "300 MiB/1.00 GiB", line
    # the rate in the same binary units (tqdm alone prints sizes /1024 as "300M", rates /1000 as "MB/s")
    assert rate.endswith("iB/s]") and not rate.endswith(" B/s]"), line
    assert "MB/s" not in line and "M/" not in line.replace("MiB/", ""), line
