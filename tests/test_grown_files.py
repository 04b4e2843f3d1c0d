"""Files that grew since the dump (issue 15, item 4).

A log the process only appends to (O_APPEND) may have grown: the original,
or another copy, kept writing it.  The restored process appends, so copies
restored side by side each add their own whole lines, with no option.  A
file the process writes without O_APPEND that grew would be written over at
the saved offset: refused, with the way out (its own file, or accepting it).
A file mapped shared shows the file as it is: others writing it is no error.
A changed file the process reads is still refused, unless allow_changed_files
names it (a path or a glob).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import pyckpt
from conftest import Target, check, real_program, reap_dumped

# Appends a line to its log every 20 ms, labelled with its PID as seen from the
# test (NSpid's first field: a copy in its own PID namespace has another).
LOGGER = r"""
import os, sys, time
log = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
print("READY", flush=True)
n = 0
while True:
    n += 1
    me = [l.split()[1] for l in open("/proc/self/status") if l.startswith("NSpid:")][0]
    os.write(log, f"LINE {me} {n}\n".encode())
    time.sleep(0.02)
"""

LINE = re.compile(r"^LINE (\d+) (\d+)$")


def _lines_by_writer(text: str) -> dict[int, list[int]]:
    """Writer PID -> its counters in file order; every line must be whole."""
    out: dict[int, list[int]] = {}
    assert text.endswith("\n"), text[-80:]
    for line in text.splitlines():
        m = LINE.match(line)
        assert m, f"a line that is not one writer's whole line: {line!r}"
        out.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    return out


def _wait_for_lines(log, pid: int, count: int, after: int, timeout: float = 15.0) -> list[int]:
    """The counters `pid` wrote to `log` past byte `after`, once there are `count`."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_bytes().decode()
        text = text[after:text.rfind("\n") + 1]
        mine = _lines_by_writer(text).get(pid, []) if text else []
        if len(mine) >= count:
            return mine
        assert time.monotonic() < deadline, f"{pid} wrote {len(mine)} lines after byte {after}"
        time.sleep(0.02)


def test_appending_log_copies_side_by_side_and_in_place(spawn, python_exe, tmp_path):
    log = tmp_path / "app.log"
    t = spawn([python_exe, "-c", LOGGER, str(log)])
    t.wait_for("^READY")
    _wait_for_lines(log, t.pid, 3, 0)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)  # the original runs on and keeps appending
    fds = pyckpt.open_image(img).summary()["fds"]
    assert any(f["path"] == str(log) and f["flags"] & os.O_APPEND for f in fds)
    _wait_for_lines(log, t.pid, 5, log.stat().st_size)  # it grew since the dump

    copies = []
    for _ in range(2):  # side by side, no option
        before = log.read_bytes()
        p = pyckpt.restore(img, new_pidns=True)
        spawn.track(p.ppid())  # the namespace's init, our child
        copies.append(p)
        mine = _wait_for_lines(log, p.pid, 5, len(before))
        assert mine[0] > 3 and mine == sorted(mine), mine  # it counts on from the dump
        assert log.read_bytes().startswith(before), "a copy wrote over what was there"

    # In place: the original ends, the image comes back under its PID, no option.
    os.kill(t.pid, signal.SIGKILL)
    t.reap()
    before = log.read_bytes()
    p = pyckpt.restore(img)
    spawn.track(p.pid)
    assert p.pid == t.pid
    _wait_for_lines(log, t.pid, 5, len(before))
    for c in copies:  # both copies still append, beside the restored original
        _wait_for_lines(log, c.pid, 5, len(before))
    text = log.read_bytes()
    assert text.startswith(before)
    writers = _lines_by_writer(text[:text.rfind(b"\n") + 1].decode())
    assert {t.pid, *(c.pid for c in copies)} <= set(writers)


# Holds a file it reads, a log it appends to, and a file mapped shared that
# others write; on SIGUSR1 it reports what its mapping shows at byte 4096.
HOLDER = r"""
import ctypes, os, sys
work = sys.argv[1]
data = os.open(os.path.join(work, "data.txt"), os.O_RDONLY)
log = os.open(os.path.join(work, "app.log"), os.O_WRONLY | os.O_APPEND)
fd = os.open(os.path.join(work, "perf.data"), os.O_RDWR)
libc = ctypes.CDLL(None)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
shared = libc.mmap(None, 8192, 3, 1, fd, 0)  # PROT_READ|PROT_WRITE, MAP_SHARED
os.close(fd)  # only the mapping stays (Python's mmap would keep an fd)
import selfcheck
def check():
    os.write(log, b"checked\n")
    print("SHOWS", ctypes.string_at(shared + 4096, 8).decode(), flush=True)
    ctypes.memmove(shared, b"copy-was", 8)
    return [] if os.pread(data, 3, 0) == b"abc" else ["data"]
selfcheck.listen()
print("READY", flush=True)
selfcheck.serve(check)
"""


def _holder(spawn, python_exe, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.txt").write_bytes(b"abcdefgh")
    (work / "app.log").write_bytes(b"first\n")
    (work / "perf.data").write_bytes(bytes(8192))
    t = spawn([python_exe, "-c", HOLDER, str(work)])
    t.wait_for("^READY")
    check(t)
    return t, work


def test_shared_mapping_of_a_file_changed_after_dump_restores(spawn, python_exe, tmp_path):
    t, work = _holder(spawn, python_exe, tmp_path)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    # Others write the mapped file (as a JVM writes its hsperfdata file) and the log grows.
    with open(work / "perf.data", "r+b") as f:
        f.seek(4096)
        f.write(b"by-other")
    with open(work / "app.log", "ab") as f:
        f.write(b"another writer\n")
    assert pyckpt.open_image(img).check_restore() == []
    p = pyckpt.restore(img)  # no option
    spawn.track(p.pid)
    t.popen = None
    after = len(t.lines())
    check(t)
    assert t.wait_for(r"^SHOWS (.*)$", after=after).group(1) == "by-other"
    assert (work / "perf.data").read_bytes()[:8] == b"copy-was"  # still shared with the file
    assert (work / "app.log").read_bytes() == b"first\nchecked\nanother writer\nchecked\n"


def test_changed_file_the_process_reads_is_refused_naming_it(spawn, python_exe, tmp_path):
    t, work = _holder(spawn, python_exe, tmp_path)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    data = str(work / "data.txt")
    with open(data, "ab") as f:  # it only grew: still refused, the process reads it
        f.write(b"more")
    with pytest.raises(pyckpt.FileChangedError, match=r"data\.txt.*size 12, was 8") as e:
        pyckpt.restore(img)
    assert e.value.path == data and "--allow-changed-files=PATH" in str(e.value)
    assert not psutil.pid_exists(t.pid)
    # a glob that names another file does not help
    with pytest.raises(pyckpt.FileChangedError, match=r"data\.txt"):
        pyckpt.restore(img, allow_changed_files=[str(work / "*.log"), "other.txt"])
    assert not psutil.pid_exists(t.pid)
    # the CLI: --allow-changed-files=GLOB (repeatable) that does not match, then one that does
    cmd = [sys.executable, "-m", "pyckpt", "--no-progress", "check", "--restore", str(img)]
    r = subprocess.run(cmd + ["--allow-changed-files=*.log"], capture_output=True, text=True, timeout=60)
    assert r.returncode == pyckpt.FileChangedError.exit_code and data in r.stderr + r.stdout, r
    r = subprocess.run(cmd + ["--allow-changed-files=*.log", "--allow-changed-files=data.*"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    p = pyckpt.restore(img, allow_changed_files=[str(work / "data.*")])
    spawn.track(p.pid)
    t.popen = None
    check(t)


WRITER = r"""
import os, sys
out = os.open(sys.argv[1], os.O_WRONLY)  # no O_APPEND: it writes at its offset
os.write(out, b"mine\n")
import selfcheck
def check():
    os.write(out, b"again\n")
    return []
selfcheck.listen()
print("READY", flush=True)
selfcheck.serve(check)
"""


def test_write_only_file_that_grew_without_append_is_refused_with_the_way_out(spawn, python_exe, tmp_path):
    out = tmp_path / "out.txt"
    out.write_bytes(b"")
    t = spawn([python_exe, "-c", WRITER, str(out)])
    t.wait_for("^READY")
    fd = next(f["fd"] for f in pyckpt.dump(t.pid, tmp_path / "img", kill=True).summary()["fds"]
              if f["path"] == str(out))
    reap_dumped(t)
    with open(out, "ab") as f:
        f.write(b"someone else's line\n")
    with pytest.raises(pyckpt.FileChangedError, match=r"out\.txt.*grew to 25 bytes from 5.*O_APPEND.*"
                                                      rf"--fd N=PATH") as e:
        pyckpt.restore(tmp_path / "img")
    assert e.value.path == str(out)
    problems = pyckpt.open_image(tmp_path / "img").check_restore()
    assert [set(p.fixes) for p in problems] == [{pyckpt.Fix("allow_changed_files"), pyckpt.Fix("fds", fd)}]
    assert out.read_bytes() == b"mine\nsomeone else's line\n"  # untouched
    # its own file, as the error says: restored, and it writes there
    own = tmp_path / "own.txt"
    p = pyckpt.restore(tmp_path / "img", fds={fd: str(own)})
    spawn.track(p.pid)
    t.popen = None
    check(t)
    assert own.read_bytes() == b"again\n"
    assert out.read_bytes() == b"mine\nsomeone else's line\n"


def _http_get(port: int, netns_of: int | None = None) -> bytes:
    if netns_of is None:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    else:
        with pyckpt.network_namespace(netns_of):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
    with s:
        s.sendall(b"GET /hello.txt HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.0 200"), data
    return data.partition(b"\r\n\r\n")[2]


def _http_server(spawn, python_exe, tmp_path, mode: str):
    """`python -m http.server` serving tmp_path/site, its stderr log opened with `mode`
    ("ab": as `>> log`, "wb": as `> log`)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_bytes(b"hello\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "http.log"
    with open(log, mode) as out:
        p = subprocess.Popen([python_exe, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                              str(site), str(port)], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             start_new_session=True)
    spawn.track(p.pid)
    deadline = time.monotonic() + 10
    while True:
        try:
            assert _http_get(port) == b"hello\n"
            break
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    return p, port, log


def test_http_server_copies_side_by_side_with_its_log_appended(spawn, python_exe, tmp_path):
    p, port, log = _http_server(spawn, python_exe, tmp_path, "ab")  # as `>> http.log 2>&1`
    img = tmp_path / "img"
    pyckpt.dump(p.pid, img)
    assert _http_get(port) == b"hello\n"  # the original runs on; its log grows
    for _ in range(2):  # copies side by side, each in its own network: no other option
        size = log.stat().st_size
        copy = pyckpt.restore(img, new_pidns=True, new_netns=True)
        spawn.track(copy.ppid())
        assert _http_get(port, netns_of=copy.pid) == b"hello\n"
        assert log.stat().st_size > size  # its request line, appended
    assert _http_get(port) == b"hello\n"
    lines = log.read_text().splitlines()
    assert len([line for line in lines if '"GET /hello.txt HTTP/1.0" 200' in line]) == 5, lines


def test_http_server_whose_log_is_not_appended_names_the_option(spawn, python_exe, tmp_path):
    p, port, log = _http_server(spawn, python_exe, tmp_path, "wb")  # as `> http.log 2>&1`
    img = tmp_path / "img"
    pyckpt.dump(p.pid, img)
    assert _http_get(port) == b"hello\n"  # the original writes its log on
    problems = pyckpt.open_image(img).check_restore(new_pidns=True, new_netns=True)
    assert len(problems) == 1 and isinstance(problems[0].error, pyckpt.FileChangedError), problems
    assert problems[0].error.path == str(log) and "without O_APPEND" in str(problems[0].error)
    assert pyckpt.Fix("fds", 1) in problems[0].fixes
    own = tmp_path / "copy.log"
    copy = pyckpt.restore(img, new_pidns=True, new_netns=True, fds={1: str(own)})  # stdout and stderr
    spawn.track(copy.ppid())
    assert _http_get(port, netns_of=copy.pid) == b"hello\n"
    assert '"GET /hello.txt HTTP/1.0" 200' in own.read_text()


JAVAC = real_program("javac", "/usr/lib/jvm/*/bin")
JAVA_LOGGER = r"""
import java.io.FileOutputStream;
import java.nio.file.Files;
import java.nio.file.Paths;

public class Logger {
    public static void main(String[] args) throws Exception {
        FileOutputStream log = new FileOutputStream(args[0], true);  // O_APPEND
        System.out.println("READY");
        System.out.flush();
        for (long n = 1; ; n++) {
            String me = "";
            for (String line : Files.readAllLines(Paths.get("/proc/self/status")))
                if (line.startsWith("NSpid:")) me = line.split("\\s+")[1];
            log.write(("LINE " + me + " " + n + "\n").getBytes());
            Thread.sleep(20);
        }
    }
}
"""


@pytest.mark.skipif(JAVAC is None, reason="no JDK here (javac)")
def test_jvm_copies_side_by_side_with_no_option(spawn, tmp_path):
    """A JVM maps its perf-data file /tmp/hsperfdata_USER/PID shared and keeps writing it;
    its log (O_APPEND) grows: copies beside the running original need only new_pidns."""
    src = tmp_path / "Logger.java"
    src.write_text(JAVA_LOGGER)
    subprocess.run([JAVAC, "-d", str(tmp_path), str(src)], check=True, timeout=120)
    java = os.path.join(os.path.dirname(JAVAC), "java")
    log = tmp_path / "app.log"
    t = spawn([java, "-Xmx64m", "-XX:+UseSerialGC", "-cp", str(tmp_path), "Logger", str(log)], name="jvm")
    t.wait_for("^READY", timeout=30)
    _wait_for_lines(log, t.pid, 3, 0)
    assert any("/hsperfdata_" in line and " rw-s " in line for line in open(f"/proc/{t.pid}/maps"))
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)
    _wait_for_lines(log, t.pid, 5, log.stat().st_size)  # the original logs on
    copies = []
    for _ in range(2):
        before = log.read_bytes()
        p = pyckpt.restore(img, new_pidns=True)  # no other option
        spawn.track(p.ppid())
        copies.append(p)
        mine = _wait_for_lines(log, p.pid, 5, len(before))
        assert mine == sorted(mine) and mine[0] > 3, mine
    size = log.stat().st_size
    for who in (t.pid, *(c.pid for c in copies)):  # all three log side by side
        _wait_for_lines(log, who, 3, size)
    text = log.read_bytes()
    _lines_by_writer(text[:text.rfind(b"\n") + 1].decode())  # whole lines only


def test_appended_log_that_shrank_or_was_replaced_is_refused(spawn, python_exe, tmp_path):
    """Only growth is free: a log truncated since the dump (as by a copy-and-truncate
    rotation), or another file at its path, is refused naming it."""
    t, work = _holder(spawn, python_exe, tmp_path)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    log = work / "app.log"
    log.write_bytes(b"")  # truncated in place: same inode, shorter
    with pytest.raises(pyckpt.FileChangedError, match=r"app\.log.*size 0, was 14") as e:
        pyckpt.restore(img)
    assert e.value.path == str(log)
    log.unlink()  # rotated: another file at the path
    log.write_bytes(b"first\nchecked\nmore\n")
    with pytest.raises(pyckpt.FileChangedError, match=r"app\.log.*it is another file now"):
        pyckpt.restore(img)
    assert not psutil.pid_exists(t.pid)
    p = pyckpt.restore(img, allow_changed_files=["app.log"])  # a name alone matches the file's name
    spawn.track(p.pid)
    t.popen = None
    check(t)
    assert log.read_bytes() == b"first\nchecked\nmore\nchecked\n"


# An SQLite database held open for reading and writing (as IPython's history.sqlite is).
SQLITE_HOLDER = r"""
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("SELECT count(*) FROM history").fetchone()
import selfcheck
def check():
    print("ROWS", db.execute("SELECT count(*) FROM history").fetchone()[0], flush=True)
    return []
selfcheck.listen()
print("READY", flush=True)
selfcheck.serve(check)
"""


def test_database_changed_since_the_dump_names_the_option_for_it(spawn, python_exe, tmp_path):
    """A file the process reads and writes (a database) changed by another writer since
    the dump is refused, and the error names the option that accepts this file alone."""
    import sqlite3

    db = tmp_path / "history.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE history (line TEXT)")
        c.execute("INSERT INTO history VALUES ('first')")
    c.close()
    log = tmp_path / "holder.log"
    with open(log, "ab") as out:  # its output appended: copies need nothing for it
        p = subprocess.Popen([python_exe, "-c", SQLITE_HOLDER, str(db)], stdin=subprocess.DEVNULL,
                             stdout=out, stderr=out, start_new_session=True,
                             env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent / "targets")))
    spawn.track(p.pid)
    t = Target(p.pid, log, p)
    t.wait_for("^READY")
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)  # the original runs on
    with sqlite3.connect(db) as c:  # and writes its database (here: another writer does)
        c.execute("INSERT INTO history VALUES ('second')")
    c.close()
    with pytest.raises(pyckpt.FileChangedError) as e:
        spawn.track(pyckpt.restore(img, new_pidns=True).ppid())
    assert e.value.path == str(db) and "--allow-changed-files=PATH" in str(e.value), e.value
    [problem] = pyckpt.open_image(img).check_restore(new_pidns=True)
    assert problem.error.path == str(db)
    copy = pyckpt.restore(img, new_pidns=True, allow_changed_files=[str(db)])
    spawn.track(copy.ppid())
    after = len(t.lines())
    os.kill(copy.pid, signal.SIGUSR1)
    assert t.wait_for(r"^ROWS (\d+)$", after=after).group(1) == "2"  # it reads the database as it is


def test_shared_mapping_of_a_file_cut_shorter_is_refused(spawn, python_exe, tmp_path):
    """A shared mapping shows the file as it is, but not past its end: a file cut shorter
    than the mapped range would fault there (SIGBUS), and is refused naming it."""
    t, work = _holder(spawn, python_exe, tmp_path)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    reap_dumped(t)
    os.truncate(work / "perf.data", 4096)
    with pytest.raises(pyckpt.FileChangedError, match=r"perf\.data.*size 4096, was 8192.*SIGBUS") as e:
        pyckpt.restore(img)
    assert e.value.path == str(work / "perf.data")
    assert not psutil.pid_exists(t.pid)
    os.truncate(work / "perf.data", 12288)  # longer than it was: fine
    p = pyckpt.restore(img)
    spawn.track(p.pid)
    t.popen = None
    check(t)
