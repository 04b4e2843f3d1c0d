"""A real program: a PostgreSQL server saved and restored, its data queried after over TCP
and over its unix socket.

postgres (run as the user postgres, or nobody) holds a 56-byte SysV shared
memory segment (its interlock: at start-up it refuses to run while another
process is attached to the segment its data directory names), its main
shared memory (anonymous, shared by the postmaster and its helpers), POSIX
dynamic shared memory in /dev/shm, a TCP listener (and a unix one), pipes.  The server is
dumped with kill and restored in place (taking its own leftover segment over,
as a postmaster killed with -9 leaves it), then in a new PID, IPC and network
namespace (its segment re-created there under the same id and key beside the
leftover); each time psql reads what was written before the dump and writes
more.
"""

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile

import psutil
import pytest

import pyckpt
from conftest import Target, kill_own, real_program

INITDB = real_program("initdb", "/usr/lib/postgresql/*/bin")
PSQL = real_program("psql")
pytestmark = pytest.mark.skipif(INITDB is None or PSQL is None, reason="postgresql is not installed")


def _user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return pwd.getpwnam("nobody")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["tcp"])
def postgres(spawn, request):
    """A running postgres in a fresh data directory: (Target of the postmaster, port,
    its unix socket directory or "" when it listens on TCP only)."""
    user = _user()

    def as_user():
        os.setgroups([])
        os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
        os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)

    home = tempfile.mkdtemp(prefix="pyckpt-pg-")  # the user must reach it (pytest's tmp is 0700)
    os.chmod(home, 0o755)
    data = os.path.join(home, "data")
    os.mkdir(data, 0o700)
    os.chown(data, user.pw_uid, user.pw_gid)
    subprocess.run([INITDB, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"], preexec_fn=as_user,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=home)
    port = _free_port()
    sockets = ""
    if request.param in ("unix", "unix only"):
        sockets = os.path.join(home, "sockets")
        os.mkdir(sockets)
        os.chown(sockets, user.pw_uid, user.pw_gid)
    t = spawn([os.path.join(os.path.dirname(INITDB), "postgres"), "-D", data,
               "-c", f"unix_socket_directories={sockets}", "-p", str(port),
               "-c", f"listen_addresses={'' if request.param == 'unix only' else '127.0.0.1'}",
               "-c", "dynamic_shared_memory_type=posix", "-c", "fsync=off"],
              name="postgres", preexec_fn=as_user, cwd=home)
    t.wait_for(r"database system is ready to accept connections", timeout=30)
    shm_files = set()  # its POSIX shared memory files (a killed server leaves them)
    with open(f"/proc/{t.pid}/maps") as f:
        for line in f:
            if "/dev/shm/" in line:
                st = os.stat(f"/proc/{t.pid}/map_files/{line.split()[0]}")
                shm_files.add((st.st_dev, st.st_ino))
    yield t, port, sockets
    # a clean shutdown removes its segment and /dev/shm files; then anything left
    for proc in _tree(t.pid):
        if proc.pid == t.pid and proc.ppid() == os.getpid():
            proc.send_signal(2)  # SIGINT: fast shutdown
            try:
                proc.wait(15)
            except psutil.TimeoutExpired:
                pass
    for proc in _tree(t.pid):
        kill_own(proc.pid)
    shutil.rmtree(home, ignore_errors=True)
    with open("/proc/sysvipc/shm") as f:  # the segment a killed server left behind
        for line in f.read().splitlines()[1:]:
            shmid, cpid, nattch = (int(x) for x in (line.split()[1], line.split()[4], line.split()[6]))
            if cpid == t.pid and nattch == 0:
                subprocess.run(["ipcrm", "-m", str(shmid)], check=False)
    for entry in os.scandir("/dev/shm"):
        st = entry.stat(follow_symlinks=False)
        if (st.st_dev, st.st_ino) in shm_files:
            os.unlink(entry.path)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def psql(port: int, sql: str, netns_of: int | None = None, host: str = "127.0.0.1") -> str:
    """Run `sql` with psql over TCP, or through the socket directory `host`."""
    argv = [PSQL, "-h", host, "-p", str(port), "-U", "postgres", "-At", "-c", sql, "postgres"]
    if netns_of is not None:  # a copy in its own network namespace: psql goes in there
        argv = ["nsenter", f"--net=/proc/{netns_of}/ns/net", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _dump_kill_reap(t: Target, img) -> list[int]:
    pids = [p.pid for p in _tree(t.pid)]
    assert len(pids) >= 5, pids  # postmaster, checkpointer, bgwriter, walwriter, autovacuum...
    with open(f"/proc/{t.pid}/maps") as f:
        assert any("/SYSV" in line for line in f), "postgres holds no SysV segment?"
    pyckpt.dump(t.pid, img, kill=True)
    t.reap()
    for pid in pids[1:]:  # orphans of the killed postmaster are ours (pytest is a subreaper)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    return pids


@pytest.mark.parametrize("postgres", ["tcp", "unix", "unix only"], indirect=True)
def test_postgres_in_place(postgres, tmp_path):
    """Dumped with kill, restored in place: over TCP, over TCP and its unix socket, and
    listening on its unix socket only (.s.PGSQL.PORT: the dead server's stale socket file
    is replaced, with its mode and owner)."""
    t, port, sockets = postgres
    host = sockets if not _listens_on_tcp(t.pid, port) else "127.0.0.1"
    sock = os.path.join(sockets, f".s.PGSQL.{port}") if sockets else None
    mode = stat.S_IMODE(os.lstat(sock).st_mode) if sock else None
    psql(port, "CREATE TABLE saved (n int, s text); INSERT INTO saved SELECT g, md5(g::text) "
               "FROM generate_series(1, 1000) g", host=host)
    if sockets:
        assert psql(port, "SELECT count(*) FROM saved", host=sockets) == "1000"
    pids = _dump_kill_reap(t, tmp_path / "img")
    if sock:
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)  # the dead server's socket file is left
    p = pyckpt.restore(tmp_path / "img")
    assert p.pid == t.pid
    t.popen = None
    # its helpers are back under their PIDs (a backend that was just exiting may not be)
    back = {x.pid for x in _tree(p.pid)}
    assert back <= set(pids) and len(back) >= 5, (back, pids)
    assert psql(port, "SELECT count(*), sum(n) FROM saved", host=host) == "1000|500500"
    psql(port, "INSERT INTO saved VALUES (1001, 'after')", host=host)
    assert psql(port, "SELECT s FROM saved WHERE n = 1001", host=host) == "after"
    assert psql(port, "SELECT count(*) FROM saved", host=host) == "1001"
    if sock:  # and over its unix socket, listening again on its path, as it was
        assert psql(port, "SELECT count(*) FROM saved", host=sockets) == "1001"
        assert stat.S_IMODE(os.lstat(sock).st_mode) == mode
        assert os.lstat(sock).st_uid == _user().pw_uid


def _listens_on_tcp(pid: int, port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
               for p in _tree(pid) for c in p.net_connections("tcp"))


def test_postgres_in_its_own_namespaces(postgres, tmp_path, spawn):
    t, port, _ = postgres
    psql(port, "CREATE TABLE saved (n int); INSERT INTO saved SELECT generate_series(1, 100)")
    _dump_kill_reap(t, tmp_path / "img")
    p = pyckpt.restore(tmp_path / "img", new_pidns=True, new_netns=True)
    spawn.track(p.ppid())  # the namespace's init: killing it ends the copy
    assert os.stat(f"/proc/{p.pid}/ns/ipc").st_ino != os.stat("/proc/self/ns/ipc").st_ino
    assert psql(port, "SELECT count(*), sum(n) FROM saved", netns_of=p.pid) == "100|5050"
    psql(port, "INSERT INTO saved VALUES (101)", netns_of=p.pid)
    assert psql(port, "SELECT sum(n) FROM saved", netns_of=p.pid) == "5151"
    p.send_signal(2)  # a clean shutdown in there
    p.wait(15)
