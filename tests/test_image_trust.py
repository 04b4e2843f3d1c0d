"""The image directory is pyckpt's alone, and reading an image never hangs, never
exhausts memory, never fails untyped (issue 9, items 2 and 3).

Dump: an existing directory of another user, or one others can write to, is
refused before anything is touched; no file is ever written through a symbolic
link (markers are renamed into place).  Read: only regular files are read
(a symlink, FIFO or device is refused without being opened), sizes are
bounded, deep JSON is an ImageError, references are checked before `show`,
`check`, `restore` or `--fd` use them, and the only text of the directory ever
printed is a reason pyckpt wrote, in its own form.  A marker left by a dead
pyckpt says the dump was interrupted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import xxhash

import pyckpt
from pyckpt.image import ImageWriter, incomplete_reason

TICKER = Path(__file__).parent / "targets" / "ticker.py"
SECRET = "TOP-SECRET-6f1d2c"  # must never appear in any output


def run_cli(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    """The command, bounded: a hang fails the test (TimeoutExpired) instead of blocking it."""
    return subprocess.run([sys.executable, "-m", "pyckpt", "--no-progress", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          start_new_session=True)


def one_line(r: subprocess.CompletedProcess, command: str, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pyckpt {command}: error: "), r.stderr
    assert "internal error" not in r.stderr and SECRET not in r.stdout + r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small real image of a ticker, killed at the dump and reaped (its PID is free)."""
    base = tmp_path_factory.mktemp("trust")
    log = base / "ticker.log"
    with open(log, "wb") as out:
        p = subprocess.Popen([sys.executable, str(TICKER)], stdin=subprocess.DEVNULL, stdout=out,
                             stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "tick 1\n" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        pyckpt.dump(p.pid, base / "img", kill=True)
    finally:
        p.kill()
        p.wait()
    return base / "img"


def copy_of(good: Path, dest: Path) -> Path:
    shutil.copytree(good, dest)
    return dest


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file only root may read, whose content must never be printed."""
    f = tmp_path / "secret"
    f.write_text(f"{SECRET}\n")
    f.chmod(0o600)
    return f


def ticker(spawn, python_exe):
    t = spawn([python_exe, str(TICKER)], name="ticker")
    t.wait_for(r"^tick 1$")
    return t


# --- dump: which directory ---------------------------------------------------------------------

@pytest.mark.parametrize("how", ["other-user", "group-writable", "world-writable", "sticky-world"])
def test_dump_refuses_a_directory_not_its_own(how, spawn, python_exe, tmp_path):
    t = ticker(spawn, python_exe)
    img = tmp_path / "img"
    img.mkdir()
    if how == "other-user":
        os.chown(img, 65534, 65534)
        img.chmod(0o700)
    else:
        img.chmod({"group-writable": 0o770, "world-writable": 0o777, "sticky-world": 0o1777}[how])
    before = img.stat()
    with pytest.raises(pyckpt.ImageWriteError) as ei:
        pyckpt.dump(t.pid, img)
    msg = str(ei.value)
    assert ei.value.path == str(img) and str(img) in msg and "choose a new path" in msg, msg
    assert ("uid 65534" in msg) if how == "other-user" else ("can be written by" in msg), msg
    after = img.stat()
    assert list(img.iterdir()) == [] and (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)
    assert t.alive() and t.state() not in "tT"
    line = one_line(run_cli("dump", t.pid, img), "dump", pyckpt.ImageWriteError.exit_code)
    assert "choose a new path" in line and list(img.iterdir()) == []


def test_dump_through_a_symlink_the_user_made(spawn, python_exe, tmp_path):
    """The path given may be a symbolic link to the user's own directory: their choice."""
    t = ticker(spawn, python_exe)
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    link = tmp_path / "link"
    link.symlink_to(real)
    pyckpt.dump(t.pid, link)
    assert sorted(p.name for p in real.iterdir()) == ["COMPLETE", "pages.img", "records.img"]
    assert real.stat().st_mode & 0o777 == 0o700
    pyckpt.open_image(link).verify()


def test_markers_never_written_through_a_symlink(tmp_path, secret):
    """A link planted where a marker goes is replaced, not written through: abandon()
    (a failed dump) and finish() (a complete one)."""
    before = secret.read_bytes()
    d = tmp_path / "a"
    w = ImageWriter(d)
    assert re.fullmatch(rf"dump in progress by pyckpt pid {os.getpid()} \(started \d+ ticks after "
                        r"boot [0-9a-f-]{36}\)\n", (d / "INCOMPLETE").read_text())
    for name in ("INCOMPLETE", ".INCOMPLETE.tmp"):
        (d / name).unlink(missing_ok=True)
        (d / name).symlink_to(secret)
    w.abandon("disk full")
    assert secret.read_bytes() == before
    assert not (d / "INCOMPLETE").is_symlink() and (d / "INCOMPLETE").read_text() == "dump failed: disk full\n"
    assert sorted(p.name for p in d.iterdir()) == ["INCOMPLETE"]
    assert incomplete_reason(d) == "dump failed: disk full"

    d = tmp_path / "b"
    w = ImageWriter(d)
    for name in ("COMPLETE", ".COMPLETE.tmp"):
        (d / name).symlink_to(secret)
    w.finish(sync=False)
    assert secret.read_bytes() == before
    assert not (d / "COMPLETE").is_symlink() and json.loads((d / "COMPLETE").read_text())["pages_size"] == 0
    # and a demotion after finish() (a signal before commit) too
    (d / "INCOMPLETE").symlink_to(secret)
    w.abandon("interrupted")
    assert secret.read_bytes() == before and (d / "INCOMPLETE").read_text() == "dump failed: interrupted\n"


def test_a_failed_dumps_reason_is_one_bounded_line(tmp_path):
    d = tmp_path / "img"
    ImageWriter(d).abandon("bad\x1b[2J\nthing " + "x" * 5000)
    text = (d / "INCOMPLETE").read_text()
    assert text.startswith("dump failed: bad\\x1b[2J | thing ") and text.endswith("...\n")
    assert len(text) < 1100 and text[:-1].isprintable()
    assert incomplete_reason(d) == text[:-1]


# --- a marker left by a dead pyckpt ---------------------------------------------------------------

def test_marker_of_a_running_pyckpt_says_in_progress(tmp_path):
    d = tmp_path / "img"
    w = ImageWriter(d)
    try:
        with pytest.raises(pyckpt.ImageError, match=rf"a dump is in progress: pyckpt \(pid {os.getpid()}\)"):
            pyckpt.open_image(d)
    finally:
        w.abandon("test over")


def test_marker_of_a_dead_pyckpt_says_interrupted(tmp_path):
    """A pyckpt killed mid-dump (SIGKILL: no abandon()) leaves its in-progress marker;
    a zombie, a process gone, or another process with that PID: interrupted."""
    d = tmp_path / "img"
    code = textwrap.dedent(f"""
        import os, signal
        from pyckpt.image import ImageWriter
        w = ImageWriter({str(d)!r})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":  # not reaped yet
        assert time.monotonic() < deadline, "the child did not die"
        time.sleep(0.01)
    expected = f"the dump was interrupted: pyckpt (pid {p.pid}) ended before it finished"
    assert incomplete_reason(d) == expected  # a zombie has ended
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert incomplete_reason(d) == expected  # gone
    for command in ("check", "show", "restore"):
        line = one_line(run_cli(command, d), command, pyckpt.ImageError.exit_code)
        assert f"incomplete ({expected})" in line, line
    # the PID of a live process of another start time (ours, with another number)
    text = (d / "INCOMPLETE").read_text()
    (d / "INCOMPLETE").write_text(re.sub(r"pid \d+ \(started \d+", f"pid {os.getpid()} (started 1", text))
    assert incomplete_reason(d) == f"the dump was interrupted: pyckpt (pid {os.getpid()}) ended before it finished"


# --- reading: never print what the directory holds ------------------------------------------------

@pytest.mark.parametrize("how", ["symlink", "hardlink", "escape", "long", "fifo", "foreign"])
def test_incomplete_marker_is_quoted_only_in_pyckpts_form(how, good, tmp_path, secret):
    img = copy_of(good, tmp_path / "img")
    (img / "COMPLETE").unlink()
    m = img / "INCOMPLETE"
    if how == "symlink":
        m.symlink_to(secret)
    elif how == "hardlink":
        secret.write_text(f"dump failed: {SECRET}\n")
        os.link(secret, m)
    elif how == "escape":
        m.write_text(f"dump failed: \x1b]0;{SECRET}\x07\n")
    elif how == "long":
        m.write_text(f"dump failed: {SECRET}{'x' * 5000}\n")
    elif how == "fifo":
        os.mkfifo(m)
    else:
        m.write_text(f"{SECRET}\n")
    for command in ("check", "show", "restore") if how in ("symlink", "fifo") else ("check",):
        line = one_line(run_cli(command, img), command, pyckpt.ImageError.exit_code)
        assert line.endswith(f"image at {img} is incomplete (the reason is unreadable); it cannot be used"), line
    assert incomplete_reason(img) == "the reason is unreadable"


def test_a_valid_reason_is_quoted(good, tmp_path):
    img = copy_of(good, tmp_path / "img")
    (img / "COMPLETE").unlink()
    (img / "INCOMPLETE").write_text("dump failed: cannot write image at /x: No space left on device\n")
    line = one_line(run_cli("check", img), "check", pyckpt.ImageError.exit_code)
    assert "(dump failed: cannot write image at /x: No space left on device)" in line, line


# --- reading: only regular files, bounded --------------------------------------------------------

def _replace(img: Path, name: str, how: str, good: Path, tmp_path: Path) -> None:
    f = img / name
    f.unlink()
    if how == "symlink":
        f.symlink_to(good / name)  # to the very same, intact file: still not followed
    elif how == "symlink-dev-zero":
        f.symlink_to("/dev/zero")
    elif how == "fifo":
        os.mkfifo(f)
    elif how == "dev-zero":
        os.mknod(f, stat.S_IFCHR | 0o600, os.makedev(1, 5))
    elif how == "directory":
        f.mkdir()
    elif how == "huge":  # sparse: a size no image has, read would exhaust memory
        with open(f, "wb") as out:
            out.truncate(3 << 30 if name == "records.img" else 1 << 20)


@pytest.mark.parametrize("name,how", [
    (name, how) for how in ["symlink", "symlink-dev-zero", "fifo", "dev-zero", "directory", "huge"]
    for name in ["records.img", "COMPLETE", "pages.img"]
    if (name, how) != ("pages.img", "huge")  # only a size mismatch: test_refusals has it
])
def test_only_regular_files_are_read(name, how, good, tmp_path):
    img = copy_of(good, tmp_path / "img")
    _replace(img, name, how, good, tmp_path)
    words = {"symlink": "is a symbolic link", "symlink-dev-zero": "is a symbolic link",
             "fifo": "is a FIFO", "dev-zero": "is a character device", "directory": "is a directory",
             "huge": "holds"}[how]
    t = time.monotonic()
    with pytest.raises(pyckpt.ImageError) as ei:
        pyckpt.open_image(img)  # a FIFO opened for reading would block here: run_cli below is bounded
    assert ei.value.path == str(img) and f"{name} {words}" in str(ei.value), str(ei.value)
    for command in ("check", "show", "restore") if how == "fifo" else ("check",):
        line = one_line(run_cli(command, img, timeout=30), command, pyckpt.ImageError.exit_code)
        assert f"{name} {words}" in line, line
    assert time.monotonic() - t < 30


def test_the_image_path_itself_may_be_a_users_symlink(good, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(good)
    pyckpt.open_image(link).verify()
    r = run_cli("check", link)
    assert r.returncode == 0, r.stderr


def test_the_image_path_as_a_fifo_or_device(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    os.mknod(tmp_path / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    for p in (tmp_path / "fifo", tmp_path / "zero"):
        line = one_line(run_cli("check", p, timeout=30), "check", pyckpt.ImageError.exit_code)
        assert line.endswith(f"no image at {p}: not a directory"), line


# --- reading: JSON depth, and every reader checks references first --------------------------------

def _resign(img: Path, records: bytes) -> None:
    marker = json.loads((img / "COMPLETE").read_text())
    marker["records_xxh3"] = xxhash.xxh3_64_intdigest(records)
    (img / "records.img").write_bytes(records)
    (img / "COMPLETE").write_text(json.dumps(marker))


@pytest.mark.parametrize("depth", [1000, 100000])  # just about Python's recursion limit, and far above
def test_deeply_nested_json(depth, good, tmp_path):
    img = copy_of(good, tmp_path / "img")
    n = min(depth, 2000)  # COMPLETE holds at most 4 KiB
    (img / "COMPLETE").write_text("[" * n + "]" * n)
    for command in ("check", "show"):
        line = one_line(run_cli(command, img), command, pyckpt.ImageError.exit_code)
        assert "the COMPLETE marker is damaged" in line, line
    # in a record, with its checksum (and the COMPLETE digest) right
    img = copy_of(good, tmp_path / "img2")
    data = (img / "records.img").read_bytes()
    hlen = struct.unpack_from("<I", data, 12)[0]
    pos = 16 + hlen + 8
    body = b"[" * depth + b"]" * depth
    head = struct.pack("<HHI", 1, 0, len(body))
    data = data[:pos] + head + body + struct.pack("<Q", xxhash.xxh3_64_intdigest(head + body)) + data[pos:]
    _resign(img, data)
    with pytest.raises(pyckpt.ImageError, match="record #0"):
        pyckpt.open_image(img)
    one_line(run_cli("show", img), "show", pyckpt.ImageError.exit_code)


def _rewrite(good: Path, dest: Path, mutate) -> Path:
    from test_image_consistency import rewrite

    rewrite(str(good), dest, mutate)
    return dest


def dangling_fd(recs):
    from pyckpt.kinds import files

    for r in recs:
        if isinstance(r, files.FdRecord) and r.fd == 1:
            r.file_id = 999
    return recs


def orphan(recs):
    from pyckpt.kinds import task

    recs = list(recs)
    t = next(r for r in recs if isinstance(r, task.TaskRecord))
    # a second process whose parent is not in the image
    return recs + [task.ProcessRecord(pid=t.pid + 1, ppid=t.pid + 2),
                   task.ZombieRecord(pid=t.pid + 1, ppid=t.pid + 2, status=0)]


def no_process(recs):
    return []


def bad_rlimit(recs):
    from pyckpt.kinds import task

    t = next(r for r in recs if isinstance(r, task.TaskRecord))
    t.rlimits = t.rlimits + [(1 << 40, 0, 0)]
    return recs


@pytest.mark.parametrize("mutate", [dangling_fd, orphan, no_process, bad_rlimit])
def test_every_reader_checks_references_first(mutate, good, tmp_path):
    img = _rewrite(good, tmp_path / "img", mutate)
    with pytest.raises(pyckpt.ImageError):
        pyckpt.open_image(img)
    out = tmp_path / "out.log"
    every = [["show", img], ["show", "--json", img], ["check", img], ["check", "--restore", img],
             ["restore", "--fd", f"1={out}", img], ["check", "--restore", "--fd", f"1={out}", img]]
    for argv in every if mutate is dangling_fd else [every[0], every[4]]:
        one_line(run_cli(*argv), argv[0], pyckpt.ImageError.exit_code)
    assert not out.exists()


def test_show_prints_no_control_characters(good, tmp_path):
    from pyckpt.kinds import memory

    def evil_names(recs):
        for r in recs:
            if isinstance(r, memory.VmaRecord):
                r.name = "\x1b]0;owned\x07\x1b[2J\udcff"  # a title, a clear screen, a non-UTF-8 byte
        return recs

    img = _rewrite(good, tmp_path / "img", evil_names)
    r = run_cli("show", img)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\\x1b]0;owned\\x07" in r.stdout
    r = run_cli("show", "--json", img)
    assert r.returncode == 0 and "\x1b" not in r.stdout
    assert json.loads(r.stdout)["processes"][0]["pid"] == pyckpt.open_image(img).pid


def test_pages_are_reopened_only_as_the_file_checked(good, tmp_path):
    """Restore reads pages.img through fds the reader opens: the regular file it checked,
    not one put in its place since."""
    from pyckpt.image import ImageReader

    img = copy_of(good, tmp_path / "img")
    reader = ImageReader(img)
    os.close(reader.open_pages())
    shutil.copy(img / "pages.img", tmp_path / "pages.copy")
    os.replace(tmp_path / "pages.copy", img / "pages.img")  # same bytes, another file
    with pytest.raises(pyckpt.ImageError, match="pages.img was replaced or changed"):
        reader.open_pages()
    (img / "pages.img").unlink()
    (img / "pages.img").symlink_to(good / "pages.img")
    with pytest.raises(pyckpt.ImageError, match="pages.img is a symbolic link"):
        reader.open_pages()


def test_the_writer_keeps_to_the_readers_bound(tmp_path, monkeypatch):
    import pyckpt.image as image

    monkeypatch.setattr(image, "MAX_RECORDS_FILE", 100)
    w = ImageWriter(tmp_path / "img")
    with pytest.raises(pyckpt.ImageWriteError, match="records exceed"):
        w.write_header(image.Header(2, "0", "k", "x86_64", 0.0, 1, "x" * 200))
    w.abandon("too big")
