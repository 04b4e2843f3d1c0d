"""Unix sockets by name: a server with a listener on a path or an abstract name, its
clients inside the tree and outside it, a client waiting in a listener's queue, a
datagram socket bound to a path, a stale socket file, a path that is taken, and a
multiprocessing forkserver pool."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import stat
import textwrap
import time

import psutil
import pytest

import pyckpt

from conftest import TARGETS, Target, check, real_program, reap_dumped
from test_trees import _wait_gone, dump_kill_restore_tree

SERVER = str(TARGETS / "unix_server.py")
TMUX = real_program("tmux")


def _talk(s: socket.socket, n: int) -> bytes:
    s.sendall(b"%d\n" % n)
    s.settimeout(5)
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = s.recv(10)
        assert chunk, "the server closed the connection"
        answer += chunk
    return answer


def _start_server(spawn, python_exe, address: str):
    t = spawn([python_exe, SERVER, "server", address], name="unix-server")
    m = t.wait_for(r"^READY (\d+) (\d+) (\d+) (\d+)$")
    return t, int(m.group(1)), [int(m.group(i)) for i in (2, 3, 4)]


def _check_talking(t, tries: int = 20) -> int:
    """check(t) for the unix server, which also wants every inside client to have spoken
    since its last check: on a loaded machine a client may not have had its turn yet,
    so a check that found only silent clients is asked again a little later (a client
    that stopped for good stays silent through all of them)."""
    for _ in range(tries):
        time.sleep(0.3)
        after = len(t.lines())
        os.kill(t.pid, signal.SIGUSR1)
        m = t.wait_for(r"^CHECK (ok counter=(\d+)|FAIL.*)$", after=after)
        if m.group(1).startswith("ok"):
            return int(m.group(2))
        problems = m.group(1)[len("FAIL "):].split("; ")
        assert all(" silent (at " in p for p in problems), m.group(0)
    raise AssertionError(f"inside clients silent through {tries} checks: {m.group(0)}")


def _connect(name: bytes) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(name)
    return s


def _server_round_trip(spawn, python_exe, tmp_path, address: str, name: bytes) -> None:
    t, fd, children = _start_server(spawn, python_exe, address)
    outside = _connect(name)
    assert _talk(outside, 5) == b"6\n"
    before = _check_talking(t)
    img = dump_kill_restore_tree(spawn, t, children, tmp_path / "img")
    whats = {f["fd"]: f["what"] for f in img.summary()["fds"]}
    shown = address if address.startswith("@") else name.decode()
    assert f"listening on {shown} (backlog 7" in whats[fd], whats[fd]
    # the original died: the outside client's connection is gone (EOF or reset) ...
    outside.settimeout(5)
    try:
        assert outside.recv(10) == b""
    except ConnectionResetError:
        pass
    outside.close()
    # ... and the restored server sees that connection closed, as if its client had died
    t.wait_for(r"^CLOSED -1$")
    assert _check_talking(t) > before  # the three clients inside the tree talk on, names as they were
    _check_talking(t)
    again = _connect(name)  # the outside client reconnects to the restored listener
    assert _talk(again, 7) == b"8\n"
    again.close()
    # the client that waited in the second listener's queue is accepted now
    lines = len(t.lines())
    os.kill(t.pid, signal.SIGUSR2)
    m = t.wait_for(r"^LATE (\d+) (.*)$", after=lines)
    assert m.group(1) == "42"
    assert m.group(2) in (repr(name + b"-q"), (name + b"-q").decode()), m.group(2)
    for pid in children:
        assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def test_server_on_a_path_with_clients_inside_and_outside(spawn, python_exe, tmp_path):
    """Listener + 3 clients in child processes + 1 client outside (this test) + a client
    waiting in a queue; dump --kill, restore: the stale socket file of the dead original
    is replaced, inside clients talk on, the outside one's connection is closed at the
    server and it reconnects."""
    path = tmp_path / "server.sock"
    _server_round_trip(spawn, python_exe, tmp_path, str(path), os.fsencode(path))
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_server_on_an_abstract_name(spawn, python_exe, tmp_path):
    name = f"pyckpt-test-{secrets.token_hex(6)}"
    _server_round_trip(spawn, python_exe, tmp_path, "@" + name, b"\0" + name.encode())


def test_datagram_socket_bound_to_a_path_keeps_its_queue(spawn, python_exe, tmp_path):
    path = tmp_path / "dgram.sock"
    t = spawn([python_exe, SERVER, "dgram", str(path)], name="dgram")
    fd = int(t.wait_for(r"^READY (\d+)$").group(1))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"one", os.fsencode(path))
        s.sendto(b"", os.fsencode(path))  # an empty datagram is one too
        s.sendto(b"three", os.fsencode(path))
    img = pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    what = next(f["what"] for f in img.summary()["fds"] if f["fd"] == fd)
    assert f"datagram socket" in what and str(path) in what and "3 message(s) / 8 bytes" in what, what
    reap_dumped(t)
    p = pyckpt.restore(tmp_path / "img")
    spawn.track(p.pid)
    t.popen = None
    lines = len(t.lines())
    check(t)
    assert t.wait_for(r"^GOT.*$", after=lines).group(0) == "GOT one  three"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"four", os.fsencode(path))  # bound to its path again
    lines = len(t.lines())
    check(t)
    assert t.wait_for(r"^GOT.*$", after=lines).group(0) == "GOT one  three four"


def test_stale_socket_file_replaced_and_taken_path_refused(spawn, python_exe, tmp_path):
    """The original still runs: its path is taken (a SocketPathInUseError naming it, no
    process left).  Once it is dead its socket file is stale, and replaced."""
    path = tmp_path / "server.sock"
    t, fd, children = _start_server(spawn, python_exe, str(path))
    os.chmod(path, 0o640)
    pyckpt.dump(t.pid, tmp_path / "img")  # the original runs on
    ours = {c.pid for c in psutil.Process().children()}
    problems = pyckpt.open_image(tmp_path / "img").check_restore(new_pidns=True, allow_changed_files=True)
    assert [type(p.error) for p in problems] == [pyckpt.SocketPathInUseError] * 2, problems
    assert sorted(p.error.path for p in problems) == [str(path), f"{path}-q"]  # both listeners
    assert str(path) in str(problems[0].error) and "--unix-path" not in str(problems[0].error)
    with pytest.raises(pyckpt.SocketPathInUseError) as ei:
        pyckpt.restore(tmp_path / "img", new_pidns=True, allow_changed_files=True)
    assert ei.value.path == str(path) and "in use" in str(ei.value)
    assert {c.pid for c in psutil.Process().children()} == ours  # no init, no copy left
    _check_talking(t)  # untouched, still listening on its path
    assert _talk(_connect(os.fsencode(path)), 1) == b"2\n"
    # a regular file at the path is not replaced either
    for pid in (t.pid, *children):
        os.kill(pid, signal.SIGKILL)
    reap_dumped(t)
    for pid in children:
        _wait_gone(pid)
    os.unlink(path)
    path.write_text("not a socket")
    with pytest.raises(pyckpt.SocketPathInUseError, match="not a socket"):
        pyckpt.restore(tmp_path / "img", allow_changed_files=True)
    # a stale socket file (bound, nothing listening) is replaced
    os.unlink(path)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(os.fsencode(path))
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    log = tmp_path / "restored.log"  # its own log: the original's grew since the dump
    p = pyckpt.restore(tmp_path / "img", allow_changed_files=True, fds={1: str(log)})
    for pid in (p.pid, *children):
        spawn.track(pid)
    t.popen = None
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o640  # the socket file's mode, as it was
    _check_talking(Target(p.pid, log))
    assert _talk(_connect(os.fsencode(path)), 1) == b"2\n"


FORKSERVER = r"""
import multiprocessing, os, sys, selfcheck

def square(x):
    return x * x

if __name__ == "__main__":
    ctx = multiprocessing.get_context("forkserver")
    pool = ctx.Pool(2)
    assert pool.map(square, range(10)) == [x * x for x in range(10)]
    workers = sorted(p.pid for p in pool._pool)
    from multiprocessing import forkserver
    print("READY", os.getpid(), forkserver._forkserver._forkserver_address, *workers, flush=True)
    n = [0]

    def check():
        n[0] += 1
        got = pool.map(square, range(n[0], n[0] + 20), chunksize=3)
        bad = [] if got == [x * x for x in range(n[0], n[0] + 20)] else [f"map gave {got}"]
        # a new process from the forkserver (another pool) works too
        with ctx.Pool(1) as other:
            if other.apply(square, (7,)) != 49:
                bad.append("a new pool's worker answered wrong")
        return bad

    selfcheck.serve(check)
"""


def test_multiprocessing_forkserver_pool(spawn, python_exe, tmp_path):
    """A forkserver Pool(2): the main process, the forkserver (listening on a socket
    path) and the two workers it forked; dumped with kill and restored, the pool maps
    work again, and the forkserver forks new workers (the main process connects to
    its restored listener)."""
    script = tmp_path / "fs.py"
    script.write_text(FORKSERVER)
    t = spawn([python_exe, str(script)], name="forkserver")
    m = t.wait_for(r"^READY (\d+) (\S+) (\d+) (\d+)$", timeout=30)
    address = m.group(2)
    workers = [int(m.group(3)), int(m.group(4))]
    forkserver = psutil.Process(workers[0]).ppid()
    assert forkserver != t.pid and psutil.Process(forkserver).ppid() == t.pid
    assert {c.pid for c in psutil.Process(forkserver).children()} == set(workers)
    time.sleep(0.5)  # the pool's helper processes of the first check are gone
    img = pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    members = [p["pid"] for p in img.summary()["processes"]][1:]
    assert set(members) >= {forkserver, *workers}, members
    reap_dumped(t)
    _wait_gone(*members)
    assert stat.S_ISSOCK(os.lstat(address).st_mode)  # the dead forkserver's stale socket file
    p = pyckpt.restore(tmp_path / "img")
    for pid in (p.pid, *members):
        spawn.track(pid)
    t.popen = None
    check(t, timeout=30)
    check(t, timeout=30)


COPY_IN_OWN_MOUNTS = r"""
import os, sys, pyckpt
img, log = sys.argv[1], sys.argv[2]
p = pyckpt.restore(img, new_pidns=True, allow_changed_files=True, fds={1: log})
init = p.ppid()
print(p.pid, init, flush=True)
os.waitpid(init, 0)
"""


def test_copy_beside_the_original_in_a_mount_namespace_of_its_own(spawn, python_exe, tmp_path):
    """The documented way to run a copy while the original holds its socket path: a
    mount namespace per copy with a private socket directory.  Both serve on 'the
    same' path, each in its own directory."""
    import shutil
    import subprocess
    import tempfile

    run = tempfile.mkdtemp(prefix="pu", dir="/tmp")  # short: a socket path has 108 bytes
    sock = os.path.join(run, "server.sock")
    copy = init = None
    try:
        t, fd, children = _start_server(spawn, python_exe, sock)
        pyckpt.dump(t.pid, tmp_path / "img")  # the original runs on
        log = tmp_path / "copy.log"
        shell = (f"mount -t tmpfs tmpfs {run} && exec {python_exe} -c '{COPY_IN_OWN_MOUNTS}' "
                 f"{tmp_path / 'img'} {log}")
        copy = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", shell],
                                stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, PYTHONPATH=str(TARGETS)))
        line = copy.stdout.readline()
        assert line, f"the copy's restore failed (exit {copy.wait()})"
        pid, init = map(int, line.split())
        _check_talking(Target(pid, log))  # its clients talk to its listener, in its directory
        _check_talking(t)  # the original's too, in the real one
        assert _talk(_connect(os.fsencode(sock)), 1) == b"2\n"  # the original
        inside = f"/proc/{pid}/root{sock}"  # the copy's socket file, seen through its root
        assert os.lstat(inside).st_ino != os.lstat(sock).st_ino
        assert _talk(_connect(os.fsencode(inside)), 5) == b"6\n"
    finally:
        if init is not None:
            os.kill(init, signal.SIGKILL)  # the copy's namespace ends with its init
        if copy is not None:
            copy.kill()
            copy.wait()
        shutil.rmtree(run, ignore_errors=True)


def test_untrusted_image_binds_only_where_its_owner_may(spawn, python_exe, tmp_path):
    """An image of uid 65534's binds its socket where that user may (its own directory),
    and a forged one naming a root-owned directory is an UntrustedImageError, checked
    before anything is bound."""
    import dataclasses
    import shutil
    import tempfile

    from conftest import NOBODY, drop_to_nobody
    from pyckpt.kinds.unixname import UnixNamedRecord
    from test_trust import forge, give

    pub = tempfile.mkdtemp(prefix="pyckpt-trust-")
    try:
        os.chmod(pub, 0o755)
        os.chown(pub, NOBODY, NOBODY)
        path = os.path.join(pub, "d.sock")
        # the system python: the test venv may not be reachable by uid 65534
        t = spawn(["/usr/bin/python3", SERVER, "dgram", path], name="dgram", preexec_fn=drop_to_nobody,
                  cwd=pub)
        t.wait_for(r"^READY (\d+)$")
        pyckpt.dump(t.pid, tmp_path / "img", kill=True)
        reap_dumped(t)
        give(tmp_path / "img", NOBODY)
        forbidden = tmp_path / "root-only"  # root's, 0755: nobody may not bind there
        forbidden.mkdir()
        bad = forge(tmp_path / "img", tmp_path / "forged", lambda r: dataclasses.replace(
            r, address=os.fsencode(forbidden / "d.sock")) if isinstance(r, UnixNamedRecord) else r)
        with pytest.raises(pyckpt.UntrustedImageError, match="to bind the unix socket .*root-only/d.sock"):
            pyckpt.restore(bad, fds={1: "/dev/null"})  # (the log is root's: replaced)
        assert not (forbidden / "d.sock").exists()
        assert pyckpt.restore(bad, trust_image=True, fds={1: "/dev/null"}).pid == t.pid  # trusted
        spawn.track(t.pid)
        os.kill(t.pid, signal.SIGKILL)
        os.waitpid(t.pid, 0)
        assert stat.S_ISSOCK(os.lstat(forbidden / "d.sock").st_mode)
        p = pyckpt.restore(tmp_path / "img", fds={1: "/dev/null"})  # nobody's own directory
        spawn.track(p.pid)
        assert psutil.Process(p.pid).uids().real == NOBODY
        assert os.lstat(path).st_uid == NOBODY
    finally:
        shutil.rmtree(pub, ignore_errors=True)


MIXED = r"""
import os, socket, sys, selfcheck
name = b"\0" + sys.argv[1].encode()
outside = sys.argv[2]
lst = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
lst.bind(name)
lst.listen(3)
cli = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
cli.connect(name)
srv, _ = lst.accept()
for m in (b"a", b"bb", b"", b"ccc"):
    cli.send(m)          # queued at the server's end, boundaries and all
srv.send(b"from server")  # queued at the client's end
out = socket.socket(socket.AF_UNIX)
out.connect(outside)     # a client of a listener outside the image
print("READY", lst.fileno(), srv.fileno(), cli.fileno(), out.fileno(), flush=True)
state = {"first": True}

def check():
    bad = []
    if srv.getsockname() != name or cli.getpeername() != name or lst.getsockname() != name:
        bad.append(f"names {srv.getsockname()!r} {cli.getpeername()!r}")
    if state["first"]:
        state["first"] = False
        got = [srv.recv(10) for _ in range(4)]
        if got != [b"a", b"bb", b"", b"ccc"]:
            bad.append(f"server end read {got}")
        if cli.recv(100) != b"from server":
            bad.append("client end lost its message")
    cli.send(b"ping")
    if srv.recv(10) != b"ping":
        bad.append("no ping")
    srv.send(b"pong")
    if cli.recv(10) != b"pong":
        bad.append("no pong")
    out.setblocking(False)
    try:
        data = out.recv(100)
        print("OUTSIDE", data.decode() or "EOF", flush=True)
    except BlockingIOError:
        print("OUTSIDE nothing", flush=True)
    return bad

selfcheck.serve(check)
"""


def test_seqpacket_pair_on_an_abstract_name_and_a_client_of_an_outside_server(spawn, python_exe,
                                                                               tmp_path):
    """A seqpacket listener with an accepted connection and its client in one process,
    messages queued each way (an empty one too); and a stream client of a server outside
    the image, with data queued for it: after dump --kill and restore the pair talks on,
    names as they were, and the outside server's client reads its data, then EOF."""
    name = f"pyckpt-sp-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(os.fsencode(tmp_path / "outside.sock"))
        server.listen()
        t = spawn([python_exe, "-c", MIXED, name, str(tmp_path / "outside.sock")], name="mixed")
        conn, _ = server.accept()
        conn.sendall(b"left for you")
        fds = [int(x) for x in t.wait_for(r"^READY (\d+) (\d+) (\d+) (\d+)$").groups()]
        time.sleep(0.1)
        img = pyckpt.dump(t.pid, tmp_path / "img", kill=True)
        whats = {f["fd"]: f["what"] for f in img.summary()["fds"]}
        assert f"seqpacket socket" in whats[fds[0]] and f"listening on @{name}" in whats[fds[0]]
        assert "4 message(s) / 6 bytes" in whats[fds[1]], whats[fds[1]]
        assert "peer outside the image" in whats[fds[3]] and "12 bytes" in whats[fds[3]], whats[fds[3]]
        reap_dumped(t)
        conn.close()
        p = pyckpt.restore(tmp_path / "img")
        spawn.track(p.pid)
        t.popen = None
        lines = len(t.lines())
        check(t)
        assert t.wait_for(r"^OUTSIDE .*$", after=lines).group(0) == "OUTSIDE left for you"
        lines = len(t.lines())
        check(t)
        assert t.wait_for(r"^OUTSIDE .*$", after=lines).group(0) == "OUTSIDE EOF"


def test_fds_in_flight_on_a_named_connection_are_refused(spawn, python_exe, tmp_path):
    code = textwrap.dedent(r"""
        import array, os, socket, sys, selfcheck
        lst = socket.socket(socket.AF_UNIX)
        lst.bind(sys.argv[1]); lst.listen()
        cli = socket.socket(socket.AF_UNIX); cli.connect(sys.argv[1])
        srv, _ = lst.accept()
        r, w = os.pipe()
        cli.sendmsg([b"fd"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))])
        print("READY", srv.fileno(), flush=True)
        selfcheck.serve(lambda: [])
    """)
    t = spawn([python_exe, "-c", code, str(tmp_path / "s.sock")], name="rights")
    fd = int(t.wait_for(r"^READY (\d+)$").group(1))
    with pytest.raises(pyckpt.UnsupportedFdError, match="file descriptors in flight") as ei:
        pyckpt.dump(t.pid, tmp_path / "img")
    assert ei.value.fd == fd and ei.value.pid == t.pid
    check(t)


def test_listener_whose_socket_file_was_removed(spawn, python_exe, tmp_path):
    """A daemon that removed its socket file after binding (clients got it otherwise):
    restored listening, with its connection, and its file removed again."""
    code = textwrap.dedent(r"""
        import os, socket, sys, selfcheck
        lst = socket.socket(socket.AF_UNIX)
        lst.bind(sys.argv[1]); lst.listen()
        cli = socket.socket(socket.AF_UNIX); cli.connect(sys.argv[1])
        srv, _ = lst.accept()
        os.unlink(sys.argv[1])
        cli.send(b"queued")
        print("READY", lst.fileno(), flush=True)
        first = [True]
        def check():
            bad = []
            if first[0]:
                first[0] = False
                if srv.recv(10) != b"queued":
                    bad.append("lost the queued bytes")
            cli.send(b"x")
            if srv.recv(10) != b"x" or srv.getsockname() != sys.argv[1]:
                bad.append("pair broken")
            return bad
        selfcheck.serve(check)
    """)
    path = tmp_path / "gone.sock"
    t = spawn([python_exe, "-c", code, str(path)], name="unlinked")
    fd = int(t.wait_for(r"^READY (\d+)$").group(1))
    img = pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    assert "(socket file removed)" in next(f["what"] for f in img.summary()["fds"] if f["fd"] == fd)
    reap_dumped(t)
    p = pyckpt.restore(tmp_path / "img")
    spawn.track(p.pid)
    t.popen = None
    assert not os.path.lexists(path)
    check(t)
    check(t)


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (scripts/setup.sh installs it)")
def test_tmux_server_on_its_socket_path(tmp_path):
    """A real tmux server (its listener on a socket path, a pane running cat on a pty pair):
    dumped with kill, restored in place; a new tmux client connects to the restored
    server through the path and the pane still echoes what it is sent."""
    import shutil
    import subprocess
    import tempfile

    d = tempfile.mkdtemp(prefix="tm", dir="/tmp")  # short: a socket path has 108 bytes
    sock = os.path.join(d, "s")
    env = {k: v for k, v in os.environ.items() if k != "TMUX"}

    def tmux(*args: str) -> str:
        return subprocess.run([TMUX, "-S", sock, "-f", "/dev/null", *args], env=env, check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def pane_shows(text: str) -> None:
        deadline = time.monotonic() + 5
        while text not in tmux("capture-pane", "-p", "-t", "main"):
            assert time.monotonic() < deadline, tmux("capture-pane", "-p", "-t", "main")
            time.sleep(0.05)

    server, members = None, []
    try:
        tmux("new-session", "-d", "-s", "main", "cat")
        server = int(tmux("display", "-p", "#{pid}"))  # the daemonized server (our child: subreaper)
        tmux("send-keys", "-t", "main", "before-dump", "Enter")
        pane_shows("before-dump")
        img = pyckpt.dump(server, tmp_path / "img", kill=True)
        whats = [f["what"] for f in img.summary()["fds"]]
        assert any(f"listening on {sock}" in w for w in whats), whats
        os.waitpid(server, 0)
        members = [q["pid"] for q in img.summary()["processes"]][1:]  # the pane's cat
        _wait_gone(*members)
        p = pyckpt.restore(tmp_path / "img")
        assert p.pid == server
        tmux("send-keys", "-t", "main", "after-restore", "Enter")
        pane_shows("after-restore")
        assert "before-dump" in tmux("capture-pane", "-p", "-t", "main")
        assert tmux("list-sessions", "-F", "#{session_name}").split() == ["main"]
    finally:
        if server is not None and psutil.pid_exists(server) and psutil.Process(server).ppid() == os.getpid():
            for pid in (*members, server):  # the pane first: the server's death hangs it up
                os.kill(pid, signal.SIGKILL)
            os.waitpid(server, 0)
            _wait_gone(*members)
        shutil.rmtree(d, ignore_errors=True)


def test_waiting_connections_outside_dropped_inside_with_data_refused(spawn, python_exe, tmp_path):
    """A listener's accept queue: a connection from outside the image is dropped (the
    summary says so; that client sees its connection end when the original dies); a
    client of the image that waits there with data already sent is refused by name."""
    code = textwrap.dedent(r"""
        import socket, sys, selfcheck
        lst = socket.socket(socket.AF_UNIX)
        lst.bind(sys.argv[1]); lst.listen(4)
        keep = []
        if sys.argv[2] == "send":
            c = socket.socket(socket.AF_UNIX); c.connect(sys.argv[1]); c.send(b"early")
            keep.append(c)
        print("READY", lst.fileno(), *(c.fileno() for c in keep), flush=True)
        def check():
            lst.setblocking(False)
            try:
                conn, _ = lst.accept()
                got = conn.recv(10)
            except BlockingIOError:
                got = None
            # "send": the refused dump left the waiting client and its data as they were;
            # "quiet": after the restore nothing from before waits
            want = b"early" if sys.argv[2] == "send" and not keep[1:] else None
            if sys.argv[2] == "send":
                keep.append(got)
            return [] if got == want else [f"accept gave {got!r}"]
        selfcheck.serve(check)
    """)
    path = tmp_path / "q.sock"
    t = spawn([python_exe, "-c", code, str(path), "send"], name="send")
    lst, fd = map(int, t.wait_for(r"^READY (\d+) (\d+)$").groups())
    with pytest.raises(pyckpt.UnsupportedFdError, match="waiting to be accepted with data already sent") as ei:
        pyckpt.dump(t.pid, tmp_path / "img")
    assert ei.value.fd == fd and str(path) in str(ei.value)
    check(t)
    os.kill(t.pid, signal.SIGKILL)
    t.reap()
    os.unlink(path)

    t = spawn([python_exe, "-c", code, str(path), "quiet"], name="quiet")
    fd = int(t.wait_for(r"^READY (\d+)$").group(1))
    ours = _connect(os.fsencode(path))  # waits in its queue, never accepted
    img = pyckpt.dump(t.pid, tmp_path / "img2", kill=True)
    what = next(f["what"] for f in img.summary()["fds"] if f["fd"] == fd)
    assert "1 connection(s) from outside the image waiting to be accepted (dropped" in what, what
    reap_dumped(t)
    p = pyckpt.restore(tmp_path / "img2")
    spawn.track(p.pid)
    t.popen = None
    check(t)  # nothing waits at the restored listener
    try:
        assert ours.recv(10) == b""
    except ConnectionResetError:
        pass


def test_copy_with_an_abstract_name_in_its_own_network_namespace(spawn, python_exe, tmp_path):
    """Abstract names belong to a network namespace: a copy restored with new_netns
    beside the running original binds the same name in its own; without it the name
    is taken (a SocketPathInUseError avoided by new_netns)."""
    name = f"pyckpt-nn-{secrets.token_hex(6)}"
    t, fd, children = _start_server(spawn, python_exe, "@" + name)
    pyckpt.dump(t.pid, tmp_path / "img")  # the original runs on
    problems = pyckpt.open_image(tmp_path / "img").check_restore(new_pidns=True, allow_changed_files=True)
    assert {p.error.path for p in problems} == {"@" + name, f"@{name}-q"}
    assert all(isinstance(p.error, pyckpt.SocketPathInUseError) and [f.option for f in p.fixes] == ["new_netns"]
               for p in problems), problems
    log = tmp_path / "copy.log"
    p = pyckpt.restore(tmp_path / "img", new_pidns=True, new_netns=True, fds={1: str(log)})
    spawn.track(p.ppid())  # the namespace's init, our child
    _check_talking(Target(p.pid, log))  # the copy's clients talk to the copy's listener
    _check_talking(t)  # the original's to the original's
    with pyckpt.network_namespace(p.pid):
        inside = _connect(b"\0" + name.encode())
    assert _talk(inside, 10) == b"11\n"
    assert _talk(_connect(b"\0" + name.encode()), 20) == b"21\n"  # the original, here


# A real postgres on its unix socket only: tests/test_postgres.py ("unix only").


def test_failed_restore_removes_the_socket_files_it_bound(spawn, python_exe, tmp_path):
    """The server's second listener's path is taken by a live socket at restore: the
    restore fails naming it, and the socket file it had bound for the first is gone."""
    path = tmp_path / "server.sock"
    t, fd, children = _start_server(spawn, python_exe, str(path))
    dump_kill_restore = pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    assert dump_kill_restore.pid == t.pid
    reap_dumped(t)
    _wait_gone(*children)
    os.unlink(path)
    os.unlink(f"{path}-q")
    with socket.socket(socket.AF_UNIX) as squatter:
        squatter.bind(f"{path}-q")
        squatter.listen()
        with pytest.raises(pyckpt.SocketPathInUseError) as ei:
            pyckpt.restore(tmp_path / "img")
        assert ei.value.path == f"{path}-q"
        assert not os.path.lexists(path)  # bound for the first listener, removed again
        assert stat.S_ISSOCK(os.lstat(f"{path}-q").st_mode)  # the squatter's, untouched
        assert not psutil.pid_exists(t.pid)


def test_socket_directory_gone_at_restore(spawn, python_exe, tmp_path):
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / "d.sock"
    t = spawn([python_exe, SERVER, "dgram", str(path)], name="dgram")
    t.wait_for(r"^READY (\d+)$")
    pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    reap_dumped(t)
    os.unlink(path)
    os.rmdir(tmp_path / "run")
    with pytest.raises(pyckpt.RestoreError, match=f"its directory {tmp_path / 'run'} is gone"):
        pyckpt.restore(tmp_path / "img")
    (tmp_path / "run").mkdir()
    p = pyckpt.restore(tmp_path / "img")
    spawn.track(p.pid)
    t.popen = None
    check(t)


REDIS = real_program("redis-server")


def _redis(s: socket.socket, *args: bytes) -> bytes:
    s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    reply = b""
    while not reply.endswith(b"\r\n") or (reply[:1] == b"$" and reply.count(b"\r\n") < 2
                                          and not reply.startswith(b"$-1")):
        chunk = s.recv(4096)
        assert chunk, f"redis closed the connection (after {reply!r})"
        reply += chunk
    return reply


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")
def test_redis_on_a_unix_socket(spawn, tmp_path):
    """A real redis-server listening only on a unix socket, with a client (this test)
    connected: dumped with kill and restored in place; the old client's connection is
    closed (the restored server drops it as a vanished client), a new one finds every key."""
    path = tmp_path / "redis.sock"
    t = spawn([REDIS, "--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700",
               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)], name="redis")
    t.wait_for(r"(?i)ready to accept connections", timeout=20)
    old = _connect(os.fsencode(path))
    for i in range(100):
        assert _redis(old, b"SET", b"key%d" % i, b"value%d" % i) == b"+OK\r\n"
    img = pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    whats = [f["what"] for f in img.summary()["fds"]]
    assert any(f"listening on {path}" in w for w in whats), whats
    assert any("peer outside the image" in w for w in whats), whats
    reap_dumped(t)
    p = pyckpt.restore(tmp_path / "img")
    spawn.track(p.pid)
    t.popen = None
    try:
        assert old.recv(10) == b""
    except ConnectionResetError:
        pass
    new = _connect(os.fsencode(path))
    assert _redis(new, b"DBSIZE") == b":100\r\n"
    assert _redis(new, b"GET", b"key42") == b"$7\r\nvalue42\r\n"
    assert _redis(new, b"CLIENT", b"LIST").count(b"id=") == 1  # the old client was dropped
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o700
