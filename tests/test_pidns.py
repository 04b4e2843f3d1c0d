"""Many live copies of one image at once, each in its own PID namespace where it
keeps the image's PID; each copy checks itself.

A copy's parent is the namespace's init (a child of the restoring process):
killing that init ends the whole namespace, so the finalizer kills inits.
"""

import os
import signal
import subprocess
import sys
import time

import psutil

import pyckpt
from conftest import kill_own

TARGET = r"""
import os, signal, sys, threading, time
log = open(sys.argv[1], "a", buffering=1)   # O_APPEND: every copy adds its own lines
table = {i: i * 3 for i in range(50_000)}
ask = False
def on_usr1(*a):
    global ask
    ask = True
signal.signal(signal.SIGUSR1, on_usr1)
threading.Thread(target=lambda: [time.sleep(0.05) for _ in iter(int, 1)], daemon=True).start()
log.write(f"READY {os.getpid()}\n")
n = 0
while True:
    n += 1
    time.sleep(0.02)
    if ask:
        ask = False
        nspid = [l.split()[1:] for l in open("/proc/self/status") if l.startswith("NSpid:")][0]
        ok = all(table[i] == i * 3 for i in range(0, 50_000, 7)) and threading.active_count() == 2
        log.write(f"CHECK {'ok' if ok else 'FAIL'} n={n} getpid={os.getpid()} nspid={','.join(nspid)}\n")
"""


def _start(spawn, python_exe, tmp_path):
    log = tmp_path / "copies.log"
    log.touch()
    t = spawn([python_exe, "-c", TARGET, str(log)])
    t.log = log
    t.wait_for(r"^READY")
    return t


def _check_copy(t, outer: int, inner: int) -> None:
    after = len(t.lines())  # only a line written after this request counts
    os.kill(outer, signal.SIGUSR1)  # a copy this test restored
    t.wait_for(rf"^CHECK ok n=\d+ getpid={inner} nspid={outer},{inner}$", timeout=15, after=after)


def test_eight_copies_at_once(spawn, python_exe, tmp_path):
    t = _start(spawn, python_exe, tmp_path)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img, kill=True)
    t.reap()
    copies = []
    for _ in range(8):
        p = pyckpt.restore(img, new_pidns=True, allow_changed_files=True)
        spawn.track(p.ppid())  # the namespace's init, our child
        copies.append(p)
    assert len({p.pid for p in copies}) == 8
    for p in copies:
        assert p.status() in (psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING)
        init = psutil.Process(p.ppid())
        assert init.ppid() == os.getpid()
        _check_copy(t, p.pid, t.pid)
    # A copy that ends takes its namespace's init with it.
    p = copies.pop()
    init = p.ppid()
    p.kill()
    _, status = os.waitpid(init, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    for p in copies:
        _check_copy(t, p.pid, t.pid)


def test_copy_beside_the_running_original_through_cli(spawn, python_exe, tmp_path):
    t = _start(spawn, python_exe, tmp_path)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)  # the original keeps running and keeps its PID
    r = subprocess.run([sys.executable, "-m", "pyckpt", "restore", "--new-pidns", "--allow-changed-files",
                        str(img)], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0, r.stderr
    outer = int(r.stdout.strip())
    init = psutil.Process(outer).ppid()
    spawn.track(init)  # reparented to pytest when the command exited
    assert outer != t.pid
    _check_copy(t, outer, t.pid)
    os.kill(t.pid, signal.SIGUSR1)
    t.wait_for(rf"^CHECK ok n=\d+ getpid={t.pid} nspid={t.pid}$")
    kill_own(init)  # reaped: the kernel kills the namespace's other processes with it
    deadline = time.monotonic() + 10
    while psutil.pid_exists(outer):
        assert time.monotonic() < deadline, f"the copy {outer} outlived its namespace's init"
        time.sleep(0.01)


def _without_cap_sys_admin():
    """preexec_fn: drop CAP_SYS_ADMIN from the bounding set, so the exec'ed command
    (root or not) cannot have it."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(24, 21, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, CAP_SYS_ADMIN
        raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")


def test_new_pidns_without_privilege_names_the_capability(spawn, python_exe, tmp_path):
    t = _start(spawn, python_exe, tmp_path)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)
    r = subprocess.run([sys.executable, "-m", "pyckpt", "restore", "--new-pidns", "--allow-changed-files",
                        str(img)], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
                       preexec_fn=_without_cap_sys_admin)
    # Refused up front, before anything is created (privileges are checked first).
    assert r.returncode == pyckpt.PrivilegeError.exit_code, r.stderr
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert "CAP_SYS_ADMIN" in r.stderr and "--new-pidns" in r.stderr and "nothing was created" in r.stderr
    os.kill(t.pid, signal.SIGUSR1)  # the original runs on untouched
    t.wait_for(rf"^CHECK ok n=\d+ getpid={t.pid} nspid={t.pid}$")


def test_server_copies_each_in_their_own_network(spawn, python_exe, tmp_path):
    """Copies of a listening server, restored beside the running original with
    new_netns: each listens on the original's ports in a network of its own."""
    import socket

    import pytest

    from conftest import TARGETS, check

    t = spawn([python_exe, str(TARGETS / "sockets.py"), "listen"], name="server")
    ports = [int(p) for p in t.wait_for(r"^READY (\d+) (\d+)$").groups()]
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)  # the original keeps running, and keeps its ports
    copies = []
    for _ in range(3):
        p = pyckpt.restore(img, new_pidns=True, new_netns=True, allow_changed_files=True)
        spawn.track(p.ppid())  # the namespace's init, our child
        copies.append(p.pid)
    r = subprocess.run([sys.executable, "-m", "pyckpt", "restore", "--new-pidns", "--new-netns",
                        "--allow-changed-files", str(img)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0, r.stderr
    outer = int(r.stdout.strip())
    spawn.track(psutil.Process(outer).ppid())
    copies.append(outer)

    def net(pid) -> int:
        return os.stat(f"/proc/{pid}/ns/net").st_ino

    assert len({net(pid) for pid in copies} | {net(os.getpid())}) == len(copies) + 1
    with socket.create_server(("127.0.0.1", 0)) as ours:  # only in the test's own network
        for pid in copies:
            with pyckpt.network_namespace(pid):
                for host, port in (("127.0.0.1", ports[0]), ("::1", ports[1])):
                    socket.create_connection((host, port), timeout=5).close()
                with pytest.raises(OSError):
                    socket.create_connection(("127.0.0.1", ours.getsockname()[1]), timeout=5)
    assert net(os.getpid()) == os.stat("/proc/thread-self/ns/net").st_ino  # back home
    check(t)  # the original still serves on its ports


def test_copies_with_tcp_connections_beside_the_original(spawn, python_exe, tmp_path):
    """A process talking TCP to itself and to its child, copied twice with new_netns while
    it runs: each copy's connections are rebuilt in its own network and carry on."""
    from conftest import TARGETS

    # stdout a pipe (outside the image), so each copy can be given its own
    t = subprocess.Popen([python_exe, str(TARGETS / "sockets.py"), "tcp"], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(TARGETS)),
                         start_new_session=True)
    spawn.track(t.pid)
    child = int(t.stdout.readline().split()[1])
    spawn.track(child)
    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)  # the original keeps its connections and ports
    r, w = os.pipe()
    copies = []
    for _ in range(2):
        p = pyckpt.restore(img, new_pidns=True, new_netns=True, fds={1: w})
        spawn.track(p.ppid())
        copies.append(p.pid)
    os.close(w)
    for pid in copies:
        os.kill(pid, signal.SIGUSR1)
    import select

    got, deadline = b"", time.monotonic() + 15
    while got.count(b"\n") < len(copies):
        assert select.select([r], [], [], max(0.0, deadline - time.monotonic()))[0], \
            f"the copies did not answer: {got!r}"
        got += os.read(r, 4096)
    os.close(r)
    assert got.count(b"CHECK ok") == len(copies), got
    os.kill(t.pid, signal.SIGUSR1)  # and the original carries on beside them
    assert select.select([t.stdout], [], [], 15)[0], "the original did not answer"
    assert t.stdout.readline().startswith(b"CHECK ok")
