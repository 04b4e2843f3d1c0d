"""Pipes and named FIFOs: unread data, sizes, ends and flags survive dump and
restore, checked by the target itself (tests/targets/pipe_target.py); a pipe
end whose other end is outside the image is external."""

import json
import os
import subprocess
import sys

import psutil
import pytest

import pyckpt
from conftest import TARGETS, Target, check, dump_kill_restore, reap_dumped
from pyckpt.image import ImageReader
from pyckpt.kinds.pipes import PipeRecord

TARGET = str(TARGETS / "pipe_target.py")


def start(spawn, tmp_path, python_exe, *scenarios, stdout=None) -> Target:
    """The target in its own session, its output appended to a log (O_APPEND:
    copies restored from one image each add their lines instead of writing
    over one another at the dumped offset)."""
    log = tmp_path / f"pipe-target-{len(list(tmp_path.glob('*.log')))}.log"
    with open(log, "ab") as out:
        p = subprocess.Popen([python_exe, TARGET, *scenarios], stdin=subprocess.DEVNULL,
                             stdout=out if stdout is None else stdout, stderr=out,
                             start_new_session=True)
    spawn.track(p.pid)
    t = Target(p.pid, log, p)
    t.wait_for(r"^READY")
    return t


def show(img) -> dict:
    r = subprocess.run([sys.executable, "-m", "pyckpt", "show", "--json", str(img)],
                       check=True, capture_output=True, text=True)
    return {f["fd"]: f for f in json.loads(r.stdout)["fds"]}


def pipes_of(img) -> list[PipeRecord]:
    return ImageReader(img).of_type(PipeRecord)


def test_unread_data_is_kept_without_consuming_it(spawn, python_exe, tmp_path):
    t = start(spawn, tmp_path, python_exe, "unread")
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)  # no kill: the target keeps running ...
    check(t)  # ... and still finds its 10 KiB unread (then reads it)
    os.kill(t.pid, 9)
    t.reap()
    assert not psutil.pid_exists(t.pid)

    fds = show(img)
    read_fd, write_fd = (int(x) for x in t.wait_for(r"^unread: fds (\d+) (\d+)").groups())
    assert fds[read_fd]["kind"] == "pipe"
    assert fds[read_fd]["what"].endswith("] read end, 10240 bytes unread")
    assert fds[read_fd]["what"].startswith("pipe:[")
    assert fds[write_fd]["what"].endswith("] write end, 10240 bytes unread")
    (pipe,) = pipes_of(img)  # both ends refer to one pipe, saved once
    assert pipe.length == 10240 and pipe.size == 65536
    r = subprocess.run([sys.executable, "-m", "pyckpt", "show", str(img)], check=True, capture_output=True,
                       text=True)
    assert f"pipe:[{pipe.ino}] read end, 10240 bytes unread" in r.stdout

    # The target's log (its stdout, a regular file) grew since the dump: accept that.
    restored = pyckpt.restore(img, allow_changed_files=True)
    spawn.track(restored.pid)
    t.popen = None
    check(t)  # the restored copy has the data again, and the pipe keeps working


def test_big_pipe_keeps_its_size_and_all_its_data(spawn, python_exe, tmp_path):
    t = start(spawn, tmp_path, python_exe, "big")
    img = tmp_path / "img"
    dump_kill_restore(spawn, t, img)
    (pipe,) = pipes_of(img)
    assert pipe.size == 1 << 20 and pipe.length == (900 << 10) - 1000
    check(t)

    # The image is not changed by restore: a second copy finds the same state.
    # (Its log grew meanwhile: a regular file the test accepts as changed.)
    os.kill(t.pid, 9)
    reap_dumped(t)
    restored = pyckpt.restore(img, allow_changed_files=True)
    spawn.track(restored.pid)
    check(t)


def test_ends_shared_by_dup_and_nonblocking_flags(spawn, python_exe, tmp_path):
    t = start(spawn, tmp_path, python_exe, "dups")
    img = tmp_path / "img"
    dump_kill_restore(spawn, t, img)
    fds = show(img)
    pipe_fds = {n: f for n, f in fds.items() if f["kind"] == "pipe"}
    assert len(pipe_fds) == 7
    groups = {tuple(sorted([n] + f["shared_with"])) for n, f in pipe_fds.items()}
    assert sorted(len(g) for g in groups) == [1, 3, 3], groups  # r r2 r3 | w w2 w3 | r_other
    assert len(pipes_of(img)) == 1
    assert sum(1 for f in pipe_fds.values() if f["flags"] & os.O_NONBLOCK) == 3
    check(t)


def test_packet_mode_pipe_keeps_packet_boundaries(spawn, python_exe, tmp_path):
    t = start(spawn, tmp_path, python_exe, "packets")
    img = tmp_path / "img"
    dump_kill_restore(spawn, t, img)
    (pipe,) = pipes_of(img)
    assert pipe.packets == [10, 200, 3000, 1]
    check(t)


def test_several_pipes_in_one_process(spawn, python_exe, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t = start(spawn, tmp_path, python_exe, "unread", "big", "dups", "packets", f"fifo={fifo}")
    dump_kill_restore(spawn, t, tmp_path / "img")
    assert len(pipes_of(tmp_path / "img")) == 5
    check(t)


def test_fifo_with_unread_bytes(spawn, python_exe, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t = start(spawn, tmp_path, python_exe, f"fifo={fifo}")
    img = tmp_path / "img"
    dump_kill_restore(spawn, t, img)
    fifo_fds = [f for f in show(img).values() if f["kind"] == "fifo"]
    assert sorted(f["what"] for f in fifo_fds) == [f"fifo {fifo} read end, 4900 bytes unread",
                                                    f"fifo {fifo} write end, 4900 bytes unread"]
    assert all(f["path"] == str(fifo) for f in fifo_fds)
    check(t)


def test_read_write_descriptions_of_a_pipe_and_a_fifo(spawn, python_exe, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t = start(spawn, tmp_path, python_exe, f"rdwr={fifo}")
    img = tmp_path / "img"
    dump_kill_restore(spawn, t, img)
    whats = sorted(f["what"] for f in show(img).values() if f["kind"] in ("pipe", "fifo"))
    assert whats[0].startswith(f"fifo {fifo} read-write, 777 bytes unread")
    assert whats[1].startswith("pipe:[") and whats[1].endswith("] read-write, 777 bytes unread")
    check(t)


@pytest.mark.parametrize("change", ["removed", "replaced", "not a fifo"])
def test_fifo_gone_at_restore_is_refused(spawn, python_exe, tmp_path, change):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t = start(spawn, tmp_path, python_exe, f"fifo={fifo}")
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    if change == "replaced":  # another FIFO (another inode) at the same path
        os.mkfifo(tmp_path / "other")
        os.rename(tmp_path / "other", fifo)
    else:
        os.unlink(fifo)
    if change == "not a fifo":
        fifo.write_bytes(b"a regular file now")
    with pytest.raises(pyckpt.FileChangedError, match=str(fifo)) as e:
        pyckpt.restore(img)
    assert e.value.path == str(fifo)
    assert not psutil.pid_exists(t.pid)
    r = subprocess.run([sys.executable, "-m", "pyckpt", "restore", str(img)], check=False, capture_output=True,
                       text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == pyckpt.FileChangedError.exit_code
    assert str(fifo) in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not psutil.pid_exists(t.pid)


def test_deleted_fifo_is_refused_at_dump(spawn, python_exe, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t = start(spawn, tmp_path, python_exe, f"fifo={fifo}")
    os.unlink(fifo)
    with pytest.raises(pyckpt.UnsupportedFdError, match=r"FIFO"):
        pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    assert t.alive()
    check(t)  # left running as before, its FIFO data untouched


# --- a pipe to a process outside the image ------------------------------------


def start_piped(spawn, python_exe, tmp_path) -> tuple[Target, object]:
    """The target with stdout a pipe to this test process (stderr: the log)."""
    t = start(spawn, tmp_path, python_exe, "stdout", stdout=subprocess.PIPE)
    return t, t.popen.stdout


def dump_piped(spawn, python_exe, tmp_path):
    t, out = start_piped(spawn, python_exe, tmp_path)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    out.close()
    t.popen = None
    return t, img


def test_stdout_pipe_to_outside_is_external(spawn, python_exe, tmp_path):
    t, img = dump_piped(spawn, python_exe, tmp_path)
    fds = show(img)
    assert fds[1]["kind"] == "external"
    assert fds[1]["what"].startswith("pipe:[") and "(write end" in fds[1]["what"]
    assert pipes_of(img) == []  # nothing of the outside pipe is saved

    with pytest.raises(pyckpt.RestoreError, match=r"fd 1 .*pipe:\[\d+\] \(write end.*outside the image"):
        pyckpt.restore(img)
    assert not psutil.pid_exists(t.pid)
    r = subprocess.run([sys.executable, "-m", "pyckpt", "restore", str(img)], check=False, capture_output=True,
                       text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == pyckpt.RestoreError.exit_code
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and "--fd 1=PATH" in r.stderr
    assert not psutil.pid_exists(t.pid)


# The target's stderr log grows with every check: restores after the first one
# accept that changed regular file (allow_changed_files / --allow-changed-files).


def _restored_writes_to(spawn, t: Target, out_path) -> None:
    spawn.track(t.pid)
    check(t)
    with open(out_path) as f:
        assert f"OUT pid={t.pid}\n" in f.read()
    os.kill(t.pid, 9)
    os.waitpid(t.pid, 0)


def test_stdout_pipe_replaced_through_api_and_cli(spawn, python_exe, tmp_path):
    t, img = dump_piped(spawn, python_exe, tmp_path)
    out = tmp_path / "api.out"
    with open(out, "wb") as f:
        proc = pyckpt.restore(img, fds={1: f}, allow_changed_files=True)
    assert proc.pid == t.pid
    _restored_writes_to(spawn, t, out)

    out = tmp_path / "cli.out"
    r = subprocess.run([sys.executable, "-m", "pyckpt", "restore", str(img), "--fd", f"1={out}",
                        "--allow-changed-files"],
                       check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(t.pid)
    _restored_writes_to(spawn, t, out)


def test_stdout_pipe_inherited_through_api_and_cli(spawn, python_exe, tmp_path):
    t, img = dump_piped(spawn, python_exe, tmp_path)
    out = tmp_path / "api.out"
    saved = os.dup(1)
    try:
        with open(out, "wb") as f:
            os.dup2(f.fileno(), 1)
        pyckpt.restore(img, inherit_stdio=True, allow_changed_files=True)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    _restored_writes_to(spawn, t, out)

    out = tmp_path / "cli.out"
    with open(out, "wb") as f:
        r = subprocess.run([sys.executable, "-m", "pyckpt", "restore", str(img), "--inherit-stdio",
                            "--allow-changed-files"],
                           check=False, stdout=f, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    with open(out) as f:
        assert f.readline().strip() == str(t.pid)  # the command's own line, then the target's
    _restored_writes_to(spawn, t, out)


# Holds only the read end of a pipe with data; its writer (a child) wrote and exited
# before the dump, so nobody holds the write end any more (issue 15, item 5).
ORPHAN_READER = r"""
import os, sys
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(r)
    os.write(w, b"last words of the writer")
    os._exit(0)
os.close(w)
os.waitpid(child, 0)
os.set_blocking(r, False)  # a writer left behind would show as EAGAIN, not hang the check
import selfcheck
def check():
    data = os.read(r, 100)
    try:
        end = os.read(r, 100)
    except BlockingIOError:
        return [f"read {data!r}, then no EOF: a writer is still there"]
    return [] if (data, end) == (b"last words of the writer", b"") else [f"read {data!r} then {end!r}"]
selfcheck.listen()
print("READY fd", r, flush=True)
selfcheck.serve(check)
"""


@pytest.mark.parametrize("kill", [True, False], ids=["in-place", "copy"])
def test_pipe_whose_writer_is_gone_comes_back_with_its_data_then_eof(spawn, python_exe, tmp_path, kill):
    t = spawn([python_exe, "-c", ORPHAN_READER])
    fd = int(t.wait_for(r"^READY fd (\d+)").group(1))
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=kill)
    fds = show(img)
    assert fds[fd]["kind"] == "pipe", fds[fd]  # not "held outside the image"
    assert fds[fd]["what"].endswith("] read end, 24 bytes unread"), fds[fd]
    [pipe] = pipes_of(img)
    assert pipe.length == 24
    if kill:
        reap_dumped(t)
        p = pyckpt.restore(img)
        spawn.track(p.pid)
        t.popen = None
    else:  # the original keeps its data; a copy beside it gets its own (and its own output)
        check(t)
        p = pyckpt.restore(img, new_pidns=True, fds={1: str(tmp_path / "copy.log")})
        spawn.track(p.ppid())
        t = Target(p.pid, tmp_path / "copy.log")
    check(t)


# Holds only the write end of a pipe whose reader (a child) exited before the dump.
ORPHAN_WRITER = r"""
import os, sys
r, w = os.pipe()
child = os.fork()
if child == 0:
    os._exit(0)
os.close(r)
os.waitpid(child, 0)
import selfcheck
def check():
    try:
        os.write(w, b"anyone?")  # Python ignores SIGPIPE: EPIPE comes as BrokenPipeError
    except BrokenPipeError:
        return []
    return ["the write went through: a reader is still there"]
selfcheck.listen()
print("READY fd", w, flush=True)
selfcheck.serve(check)
"""


def test_pipe_whose_reader_is_gone_comes_back_without_a_reader(spawn, python_exe, tmp_path):
    t = spawn([python_exe, "-c", ORPHAN_WRITER])
    fd = int(t.wait_for(r"^READY fd (\d+)").group(1))
    check(t)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    fds = show(img)
    assert fds[fd]["kind"] == "pipe" and "write end" in fds[fd]["what"], fds[fd]
    reap_dumped(t)
    spawn.track(pyckpt.restore(img).pid)
    t.popen = None
    check(t)
