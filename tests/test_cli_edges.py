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
import textwrap
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
            for _, length, _, _ in memory._coalesced(v.pages)]
    assert max(runs) > memory.READ_CHUNK, runs

    progress = RecordingProgress()
    proc = pyckpt.restore(img, progress=progress)
    spawn.track(proc.pid)
    t.popen = None
    updates = progress.updates["restore memory"]
    assert sum(updates) == progress.totals["restore memory"] == sum(runs)
    # small runs are read together (one batch), big ones in pieces: the bar moves in
    # steps of at most READ_CHUNK
    assert max(updates) <= memory.READ_CHUNK, sorted(updates)[-5:]
    assert len(updates) >= -(-sum(runs) // memory.READ_CHUNK)
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


# --- 3. what a failed dump leaves behind ------------------------------------------------------

TARGETS = Path(__file__).parent / "targets"


def only_marker(img: Path, *words) -> str:
    """The directory holds the INCOMPLETE marker and nothing else; returns its text."""
    assert sorted(p.name for p in img.iterdir()) == ["INCOMPLETE"], list(img.iterdir())
    text = (img / "INCOMPLETE").read_text()
    for w in words:
        assert w in text, text
    return text


def test_interrupted_dump_keeps_only_the_marker(spawn, python_exe, tmp_path):
    from test_refusals import assert_untouched

    t, _ = start_ticker(spawn, python_exe, "big256", timeout=60)
    img = tmp_path / "img"
    p = subprocess.Popen([sys.executable, "-m", "pyckpt", "dump", str(t.pid), str(img)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ((img / "pages.img").exists() and (img / "pages.img").stat().st_size >= 64 << 20):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "the dump did not get to its pages"
            time.sleep(0.002)
        p.send_signal(signal.SIGINT)  # our own child
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == pyckpt.Interrupted.exit_code, err
    assert out == ""
    line = one_error_line(err, "dump")
    assert "interrupted" in line and f"process {t.pid} runs on as before" in line, line
    assert f"{img} holds only the INCOMPLETE marker" in line, line
    only_marker(img, "interrupted")
    assert_untouched(t)


def test_failed_dump_keeps_only_the_marker(spawn, python_exe, tmp_path):
    """pages.img stops growing at 8 MiB (RLIMIT_FSIZE, as on a full disk)."""
    from test_refusals import assert_untouched, file_size_limit

    t, _ = start_ticker(spawn, python_exe, "big64")
    img = tmp_path / "img"
    with file_size_limit(8 << 20):
        with pytest.raises(pyckpt.ImageWriteError):
            pyckpt.dump(t.pid, img)
    only_marker(img, "dump failed: ")
    with pytest.raises(pyckpt.ImageError, match="incomplete"):
        pyckpt.open_image(img)
    assert_untouched(t)
    # through the command: the message says what was kept
    import resource

    img2 = tmp_path / "img2"
    r = run_cli("--no-progress", "dump", t.pid, img2, preexec_fn=lambda: resource.setrlimit(
        resource.RLIMIT_FSIZE, (8 << 20, resource.RLIM_INFINITY)))
    assert r.returncode == pyckpt.ImageWriteError.exit_code, r.stderr
    line = one_error_line(r.stderr, "dump")
    assert line.endswith(f"; {img2} holds only the INCOMPLETE marker, with the reason"), line
    only_marker(img2)
    assert_untouched(t)


def _lease_holder(spawn, python_exe, tmp_path):
    path = tmp_path / "leased.dat"
    path.write_bytes(b"x" * 100)
    t = spawn([python_exe, str(TARGETS / "lock_probe.py"), "hold", "lease", str(path), "read", "0", "0"],
              name="leaser")
    fd = int(t.wait_for(r"^HELD pid=\d+ fd=(\d+)").group(1))
    return t, fd, path


def test_lease_refused_before_the_directory_is_made(spawn, python_exe, tmp_path):
    t, fd, path = _lease_holder(spawn, python_exe, tmp_path)
    img = tmp_path / "img"
    with pytest.raises(pyckpt.UnsupportedError) as ei:
        pyckpt.dump(t.pid, img, kill=True)
    assert "lease" in str(ei.value) and f"fd {fd} " in str(ei.value) and str(path) in str(ei.value)
    assert not img.exists()
    r = run_cli("--no-progress", "dump", t.pid, img)
    assert r.returncode == pyckpt.UnsupportedError.exit_code, r.stderr
    line = one_error_line(r.stderr, "dump")
    assert "lease" in line and line.endswith("; no image directory was made"), line
    assert not img.exists()
    assert t.alive()


def test_lease_refused_early_also_through_proc_locks(spawn, python_exe, tmp_path, monkeypatch):
    """A tree with very many fds is searched for leases through /proc/locks instead of
    each fd's fdinfo: the same refusal, before the directory is made."""
    import pyckpt.dumper

    monkeypatch.setattr(pyckpt.dumper, "LEASE_SCAN_FDS", 0)
    t, fd, path = _lease_holder(spawn, python_exe, tmp_path)
    img = tmp_path / "img"
    with pytest.raises(pyckpt.UnsupportedError) as ei:
        pyckpt.dump(t.pid, img)
    assert "lease" in str(ei.value) and f"fd {fd} " in str(ei.value) and str(path) in str(ei.value)
    assert not img.exists()
    assert t.alive()


def test_own_tree_refused_before_the_directory_is_made(python_exe, tmp_path):
    """`pyckpt dump $$` run by a shell: the shell's tree holds pyckpt itself."""
    img = tmp_path / "img"
    p = subprocess.run(["sh", "-c", '"$0" -m pyckpt --no-progress dump $$ "$1"; exit $?', python_exe, str(img)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                       start_new_session=True)
    assert p.returncode == pyckpt.UnsuitableProcessError.exit_code, p.stderr
    line = one_error_line(p.stderr, "dump")
    assert "ancestor of pyckpt" in line, line
    assert not img.exists()


def test_unsuitable_child_refused_before_the_directory_is_made(spawn, python_exe, tmp_path):
    """A tree whose child stopped itself (SIGSTOP): refused from /proc, nothing frozen."""
    code = ("import os, signal, time\n"
            "c = os.fork()\n"
            "if c == 0:\n"
            "    os.kill(os.getpid(), signal.SIGSTOP)\n"
            "    os._exit(0)\n"
            "print('child', c, flush=True)\n"
            "while True: time.sleep(0.01)\n")
    t = spawn([python_exe, "-c", code], name="tree")
    child = int(t.wait_for(r"^child (\d+)").group(1))
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(child).status() != psutil.STATUS_STOPPED:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        img = tmp_path / "img"
        img.mkdir(mode=0o755)  # given, empty: it stays so
        with pytest.raises(pyckpt.UnsuitableProcessError, match=rf"process {child} .*stopped"):
            pyckpt.dump(t.pid, img)
        assert list(img.iterdir()) == [] and img.stat().st_mode & 0o777 == 0o755
        img.rmdir()
        r = run_cli("--no-progress", "dump", t.pid, img)
        assert r.returncode == pyckpt.UnsuitableProcessError.exit_code, r.stderr
        assert not img.exists()
        assert t.alive()
    finally:
        kill_own(t.pid)  # the stopped child is then ours (pytest is a subreaper)
        kill_own(child)


@pytest.mark.parametrize("case", ["no-such-process", "zombie"])
def test_refusal_leaves_a_given_empty_directory_as_it_was(case, spawn, python_exe, tmp_path):
    from test_refusals import free_pid, zombie

    pid = free_pid() if case == "no-such-process" else zombie(spawn, python_exe).pid
    img = tmp_path / "img"
    img.mkdir(mode=0o750)
    r = run_cli("--no-progress", "dump", pid, img)
    assert r.returncode in (pyckpt.NoSuchProcessError.exit_code, pyckpt.UnsuitableProcessError.exit_code)
    assert list(img.iterdir()) == [] and img.stat().st_mode & 0o777 == 0o750


# --- 4. dump --kill returns once the PID is free, or names who holds the zombie ------------------

def _parent_and_child(spawn, python_exe, *mode) -> tuple:
    parent = spawn([python_exe, str(TARGETS / "reaper_parent.py"), *mode], name="parent")
    child = int(parent.wait_for(r"^parent \d+ child (\d+)$").group(1))
    return parent, child


def test_dump_kill_returns_once_the_pid_is_free(spawn, python_exe, tmp_path):
    """The child's parent reaps it only 0.3 s after its death: `dump --kill` waits for that,
    so `dump --kill P D && restore D` does not race the reaper."""
    parent, child = _parent_and_child(spawn, python_exe, "late", "0.3")
    img = tmp_path / "img"
    r = run_cli("--no-progress", "dump", "--kill", child, img)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and r.stdout == ""
    assert not pid_exists(child), f"dump --kill returned while PID {child} was still taken"
    assert parent.lines()[-1].startswith("reaped ")
    # (the parent wrote `reaped` to the log the child shares with it)
    r = run_cli("--no-progress", "restore", "--allow-changed-files", img)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == child
    spawn.track(child)
    assert psutil.Process(child).status() in (psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING)


def test_dump_kill_api_waits_for_the_reaper_too(spawn, python_exe, tmp_path):
    parent, child = _parent_and_child(spawn, python_exe, "late", "0.3")
    image = pyckpt.dump(child, tmp_path / "img", kill=True)
    assert image.dump_stats.unreaped == {}
    assert not pid_exists(child)


def test_dump_kill_names_the_parent_that_does_not_reap(spawn, python_exe, tmp_path):
    parent, child = _parent_and_child(spawn, python_exe, "never")
    img = tmp_path / "img"
    try:
        t = time.monotonic()
        r = run_cli("--no-progress", "dump", "--kill", child, img)
        took = time.monotonic() - t
        assert r.returncode == 0, r.stderr
        assert r.stdout == ""
        line = one_error_line(r.stderr, "dump")
        assert f"killed process {child} is a zombie its parent (pid={parent.pid}, name=python" in line, line
        assert "--new-pidns" in line, line
        assert psutil.Process(child).status() == psutil.STATUS_ZOMBIE  # never reaped by pyckpt
        assert psutil.Process(child).ppid() == parent.pid
        assert took < 30, took
        assert (img / "COMPLETE").exists()
    finally:
        kill_own(parent.pid)  # the zombie is then ours (pytest is a subreaper)
        try:
            os.waitpid(child, 0)
        except ChildProcessError:
            pass
    assert not pid_exists(child)


def test_dump_kill_api_own_child_is_left_to_the_caller(spawn, python_exe, tmp_path):
    t, _ = start_ticker(spawn, python_exe)
    image = pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    assert image.dump_stats.unreaped == {t.pid: os.getpid()}
    # not waited for: its caller reaps it (waiting would be in vain)
    assert image.dump_stats.phases["wait for the reaper"] < 1.0
    assert psutil.Process(t.pid).status() == psutil.STATUS_ZOMBIE
    assert t.reap() == -signal.SIGKILL


def run_patched_cli(patch: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    """`pyckpt ARGS`, run as the program (main() without argv) by a child Python that first
    runs `patch`: pyckpt monkeypatched to fail, or to signal itself, at a chosen point (a
    signal it sends goes to that child only)."""
    code = textwrap.dedent(patch) + "\nimport sys\nfrom pyckpt.cli import main\nsys.exit(main())\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, start_new_session=True)


def test_dump_kill_reports_an_error_after_the_image_was_complete(spawn, python_exe, tmp_path):
    """An error once the process is killed does not remove its image (the only copy): exit 0,
    one line saying the image is kept and what failed."""
    parent, child = _parent_and_child(spawn, python_exe, "late", "0")
    img = tmp_path / "img"
    r = run_patched_cli("""
        from pyckpt import seize
        real = seize.kill_and_reap_traced
        def kill_then_fail(pid, tids):
            real(pid, tids)
            raise OSError(5, "injected fault after the kill")
        seize.kill_and_reap_traced = kill_then_fail
    """, "--no-progress", "dump", "--kill", child, img)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    line = one_error_line(r.stderr, "dump")
    assert line == (f"pyckpt dump: the image at {img} is complete and kept, but after the image was "
                    "complete and its processes killed: OSError: [Errno 5] injected fault after the kill")
    assert not pid_exists(child)
    assert (img / "COMPLETE").exists()
    pyckpt.open_image(img).verify()


# --- 5. on a terminal, a dump says what it wrote and what a restore will need --------------------

def run_cli_on_terminal(*args, timeout: float = 120) -> tuple[int, str, str]:
    """(exit code, stdout, what went to stderr) with stderr a pseudo-terminal."""
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "pyckpt", *map(str, args)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=slave, start_new_session=True)
    finally:
        os.close(slave)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            assert ready, f"pyckpt {args} wrote nothing and did not end within {timeout}s"
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the last holder of the terminal is gone
                break
            if not chunk:
                break
            seen += chunk
        out = p.stdout.read().decode()
        code = p.wait(timeout=timeout)
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()
    return code, out, seen.decode().replace("\r\n", "\n")


def test_dump_on_a_terminal_says_what_it_wrote(spawn, python_exe, tmp_path):
    from pyckpt.progress import binary_size

    t, _ = start_ticker(spawn, python_exe, "big16")
    img = tmp_path / "img"
    code, out, err = run_cli_on_terminal("--no-progress", "dump", t.pid, img)
    assert code == 0, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    size = sum(f.stat().st_size for f in img.iterdir())
    assert size > 16 << 20
    assert lines[0].startswith(f"pyckpt dump: wrote {img}: 1 process, {binary_size(size)}, frozen for "), err
    assert lines[0].endswith(" s; a restore needs no options"), err
    freeze = float(lines[0].split("frozen for ")[1].split(" s")[0])
    assert 0 < freeze < 60
    # not on a pipe: scripts read stderr
    r = run_cli("--no-progress", "dump", t.pid, tmp_path / "img2")
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stderr


def test_dump_on_a_terminal_says_what_a_restore_needs(spawn, python_exe, tmp_path):
    """fd 0 a terminal, fd 7 the write end of a pipe this test reads: --inherit-stdio, --fd 7=PATH."""
    import pty

    master, slave = pty.openpty()
    r, w = os.pipe()
    try:
        code = ("import os, sys, time\n"
                "fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY); os.dup2(fd, 0); os.close(fd)\n"
                "os.dup2(int(sys.argv[2]), 7, inheritable=False); os.close(int(sys.argv[2]))\n"
                "print('ready', flush=True)\n"
                "while True: time.sleep(0.01)\n")
        t = spawn([python_exe, "-c", code, os.ttyname(slave), str(w)], name="outside", pass_fds=[w])
        t.wait_for("^ready$")
    finally:
        os.close(slave)
        os.close(w)
    try:
        img = tmp_path / "img"
        code, out, err = run_cli_on_terminal("--no-progress", "dump", "--kill", t.pid, img)
        assert code == 0, err
        assert out == ""
        line = err.splitlines()[-1]
        assert line.startswith(f"pyckpt dump: wrote {img}: 1 process, "), err
        assert ", then killed; a restore needs --inherit-stdio (fd 0: " in line, line
        assert "--fd 7=PATH (fd 7: pipe:[" in line, line
        # what the line says is what a restore needs
        t.reap()
        res = run_cli("--no-progress", "restore", img)
        assert res.returncode == pyckpt.RestoreError.exit_code, res.stderr
        res = run_cli("--no-progress", "restore", "--inherit-stdio", "--fd", f"7={tmp_path / 'fd7'}", img)
        assert res.returncode == 0, res.stderr
        spawn.track(int(res.stdout))
        t.popen = None
        assert t.alive()
    finally:
        os.close(master)
        os.close(r)


def test_restore_on_a_terminal_prints_only_the_pid(spawn, python_exe, tmp_path):
    t, _ = start_ticker(spawn, python_exe)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    t.reap()
    code, out, err = run_cli_on_terminal("--no-progress", "restore", img)
    assert code == 0, err
    spawn.track(t.pid)
    t.popen = None
    assert out == f"{t.pid}\n" and err == "", (out, err)


def test_signal_during_the_wait_for_the_reaper_ends_only_the_wait(spawn, python_exe, tmp_path):
    """The image is complete and the process killed: SIGINT then cuts the wait short, exit 0,
    and is reported as having changed nothing else."""
    parent, child = _parent_and_child(spawn, python_exe, "never")
    img = tmp_path / "img"
    p = subprocess.Popen([sys.executable, "-m", "pyckpt", "--no-progress", "dump", "--kill", str(child),
                          str(img)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ((img / "COMPLETE").exists() and psutil.Process(child).status() == psutil.STATUS_ZOMBIE):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.002)
        p.send_signal(signal.SIGINT)  # our own child, now waiting (up to 2 s) for the reaper
        sent = time.monotonic()
        out, err = p.communicate(timeout=60)
        took = time.monotonic() - sent
        assert p.returncode == 0, err
        assert out == ""
        zombie, late = err.splitlines()  # the zombie, then the signal that ended the wait for it
        assert zombie.startswith("pyckpt dump: ") and f"killed process {child} is a zombie" in zombie, err
        assert late == (f"pyckpt dump: SIGINT came after the image at {img} was complete; it stands "
                        "(nothing was undone)"), err
        assert took < 1.0, f"pyckpt waited {took:.2f}s more after the signal"
        pyckpt.open_image(img)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        kill_own(parent.pid)  # the zombie is then ours (pytest is a subreaper)
        try:
            os.waitpid(child, 0)
        except ChildProcessError:
            pass


# --- 7. a signal once the work is complete changes nothing, and is reported --------------------

SIGNAL_AFTER_DUMP = """
    import os, signal, pyckpt
    real = pyckpt.dump
    def dump_then_signal(*args, **kw):
        image = real(*args, **kw)
        os.kill(os.getpid(), signal.{sig})   # dump() has returned: the image is complete
        return image
    pyckpt.dump = dump_then_signal
"""


@pytest.mark.parametrize("kill", [False, True], ids=["", "kill"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_after_dump_returned_lets_the_image_stand(sig, kill, spawn, python_exe, tmp_path):
    """Once dump() has returned, SIGINT/SIGTERM change nothing: exit 0 (not 130, not death by
    the signal), one line saying so, the image complete, the target as asked (running, or
    killed with --kill)."""
    from test_refusals import assert_untouched

    if kill:
        parent, child = _parent_and_child(spawn, python_exe, "late", "0")
    else:
        t, _ = start_ticker(spawn, python_exe)
    pid = child if kill else t.pid
    img = tmp_path / "img"
    r = run_patched_cli(SIGNAL_AFTER_DUMP.format(sig=sig), "--no-progress", "dump", pid, img,
                        *(["--kill"] if kill else []))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert one_error_line(r.stderr, "dump") == (
        f"pyckpt dump: {sig} came after the image at {img} was complete; it stands (nothing was undone)")
    pyckpt.open_image(img).verify()
    if kill:
        assert not pid_exists(child)
    else:
        assert_untouched(t)


def test_signal_after_the_kill_inside_dump_is_reported(spawn, python_exe, tmp_path):
    """A SIGTERM after the dump's own commit (here: just before the kill) lets the dump end
    as asked, and the command says it came.  (It also ends the wait for the reaper at once:
    the zombie may then be named too.)"""
    parent, child = _parent_and_child(spawn, python_exe, "late", "0")
    img = tmp_path / "img"
    r = run_patched_cli("""
        import os, signal
        from pyckpt import dumper
        real = dumper.before_kill
        def signal_then_kill(objects):
            os.kill(os.getpid(), signal.SIGTERM)
            real(objects)
        dumper.before_kill = signal_then_kill
    """, "--no-progress", "dump", "--kill", child, img)
    assert r.returncode == 0, r.stderr
    *zombie, late = r.stderr.splitlines()
    assert late == (
        f"pyckpt dump: SIGTERM came after the image at {img} was complete; it stands (nothing was undone)")
    assert zombie == [] or (len(zombie) == 1 and zombie[0].startswith(
        f"pyckpt dump: the image is complete, but killed process {child} is a zombie")), r.stderr
    try:
        assert psutil.Process(child).status() == psutil.STATUS_ZOMBIE  # killed (maybe not reaped yet)
    except psutil.NoSuchProcess:
        pass
    pyckpt.open_image(img).verify()


@pytest.fixture
def ticker_image(spawn, python_exe, tmp_path):
    t, _ = start_ticker(spawn, python_exe)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    t.reap()
    return t.pid, img


@pytest.mark.parametrize("where", ["after restore() returned", "before the release"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_after_the_restore_was_complete_lets_it_run(sig, where, ticker_image, spawn):
    """Once the restore is complete, SIGINT/SIGTERM change nothing: the PID on stdout, exit 0,
    one line saying the process runs — which it does."""
    pid, img = ticker_image
    spawn.track(pid)
    patch = ("""
        import os, signal, pyckpt
        real = pyckpt.restore
        def restore_then_signal(*args, **kw):
            proc = real(*args, **kw)
            os.kill(os.getpid(), signal.{sig})
            return proc
        pyckpt.restore = restore_then_signal
    """ if where == "after restore() returned" else """
        import os, signal
        from pyckpt import restorer, seize
        real = seize.release
        def signal_then_release(*args):
            os.kill(os.getpid(), signal.{sig})   # committed, not let go yet
            real(*args)
        restorer.release = seize.release = signal_then_release  # (seize.release_all's too)
    """).format(sig=sig)
    r = run_patched_cli(patch, "--no-progress", "restore", "--allow-changed-files", img)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{pid}\n"
    assert one_error_line(r.stderr, "restore") == (
        f"pyckpt restore: {sig} came after the restore of process {pid} was complete; it runs "
        "(nothing was undone)")
    assert psutil.Process(pid).status() in (psutil.STATUS_RUNNING, psutil.STATUS_SLEEPING)


def test_signal_before_the_restore_commits_undoes_it(ticker_image, spawn):
    """The restore's last checkpoint is right before the release: a SIGTERM noted until then
    removes the finished but unreleased process (exit 130)."""
    pid, img = ticker_image
    spawn.track(pid)
    r = run_patched_cli("""
        import os, signal
        from pyckpt import restorer
        real = restorer.commit
        def signal_then_commit():
            os.kill(os.getpid(), signal.SIGTERM)   # every stage done, the process still held
            real()
        restorer.commit = signal_then_commit
    """, "--no-progress", "restore", "--allow-changed-files", img)
    assert r.returncode == pyckpt.Interrupted.exit_code, r.stderr
    assert r.stdout == ""
    assert one_error_line(r.stderr, "restore") == "pyckpt restore: interrupted; the work was undone"
    assert not pid_exists(pid)


@pytest.mark.parametrize("command", ["dump", "restore"])
def test_signal_while_pyckpt_exits_keeps_the_exit_code(command, ticker_image, spawn, python_exe, tmp_path):
    """Once the command has reported its outcome, a SIGTERM (here: from an atexit hook, as
    Python shuts down) no longer kills it: the exit code stays the outcome's."""
    pid, img = ticker_image
    spawn.track(pid)
    if command == "dump":
        t, _ = start_ticker(spawn, python_exe)
        args = ["dump", t.pid, tmp_path / "again"]
    else:
        args = ["restore", "--allow-changed-files", img]
    r = run_patched_cli("""
        import atexit, os, signal
        atexit.register(os.kill, os.getpid(), signal.SIGTERM)
    """, "--no-progress", *args)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stderr == ""
    if command == "restore":
        assert r.stdout == f"{pid}\n"
        assert psutil.Process(pid).status() in (psutil.STATUS_RUNNING, psutil.STATUS_SLEEPING)
    else:
        pyckpt.open_image(tmp_path / "again")
