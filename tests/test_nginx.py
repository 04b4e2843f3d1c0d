"""A real prefork server: nginx with its master and two workers (issue 10).

The master has no epoll set; each worker has its own, watching the listening
socket and its channel to the master.  Restoring such a tree used to fail
with 'epoll file N has no fd' (after `dump --kill` had killed the original).
After the restore the workers serve requests again, and the master still
runs its workers: a reload (SIGHUP) starts new ones that serve, and a
graceful quit (SIGQUIT) ends the tree with status 0.

Skipped when nginx is not installed (CI installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time

import pytest

import pyckpt

from test_trees import _children, _stat, dump_kill_restore_tree, trees  # noqa: F401 -- the fixture

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/local/nginx/sbin")
# scripts/setup.sh installs nginx; CI sets PYCKPT_REQUIRE_REAL_PROGRAMS so that a
# missing nginx fails there instead of passing as a skip.
if NGINX is None and os.environ.get("PYCKPT_REQUIRE_REAL_PROGRAMS"):
    raise RuntimeError("nginx is not installed, and PYCKPT_REQUIRE_REAL_PROGRAMS is set")
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (scripts/setup.sh installs it)")

CONF = """\
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "served by $pid\\n"; }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, timeout: float = 5.0) -> int:
    """One HTTP request (no proxy settings in the way); the PID of the worker that served it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    words = body.decode().split()
    assert words[:2] == ["served", "by"] and len(words) == 3, body
    return int(words[2])


def _wait_until(what: str, cond, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = cond()
        except OSError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.02)


def _has_epoll(pid: int) -> bool:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[eventpoll]":
                return True
        except FileNotFoundError:
            pass
    return False


def _start_nginx(trees, spawn, tmp_path):
    """nginx with a master and two workers, serving: (Target of the master, port, workers)."""
    port = _free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(CONF.format(dir=tmp_path, port=port))
    t = spawn([NGINX, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"], name="nginx")
    trees.adopt(t.pid)
    workers = _wait_until("two workers", lambda: len(_children(t.pid)) == 2 and _children(t.pid))
    trees.adopt(t.pid, *workers)
    assert _wait_until("a first answer", lambda: _get(port)) in workers
    return t, port, workers


def test_nginx_master_and_two_workers(trees, spawn, tmp_path):
    t, port, workers = _start_nginx(trees, spawn, tmp_path)
    # the shape of the bug: the master has no epoll set, each worker its own
    _wait_until("the workers' epoll sets", lambda: all(_has_epoll(w) for w in workers))
    assert not _has_epoll(t.pid)

    dump_kill_restore_tree(spawn, t, workers, tmp_path / "img")
    assert _children(t.pid) == workers
    served = {_get(port) for _ in range(8)}
    assert served <= set(workers), served

    # The master still runs the tree: a reload starts new workers, which serve.
    os.kill(t.pid, signal.SIGHUP)
    new = _wait_until("new workers after a reload",
                      lambda: (lambda c: len(c) == 2 and not set(c) & set(workers) and c)(_children(t.pid)))
    trees.adopt(t.pid, *new)
    assert _wait_until("an answer from a new worker", lambda: (lambda p: p in new and p)(_get(port)))
    # and a graceful quit ends it all, the master last, with status 0
    os.kill(t.pid, signal.SIGQUIT)
    _, status = os.waitpid(t.pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    for w in workers + new:
        assert _stat(w) is None or _stat(w)["state"] in "ZX", (w, _stat(w))


def _get_in(pid: int, port: int, timeout: float = 5.0) -> int:
    """_get() in the network namespace of process `pid` (a copy restored with new_netns)."""
    with pyckpt.network_namespace(pid):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    return int(body.split()[2])


def test_nginx_copies_side_by_side_with_no_option(trees, spawn, tmp_path):
    """Copies of a running nginx, each in its own PID and network namespace, while the
    original runs on: its logs (O_APPEND) grew since the dump, which needs no option;
    every copy serves on the same port in its own network and appends to the same logs."""
    t, port, workers = _start_nginx(trees, spawn, tmp_path)
    _wait_until("the workers' epoll sets", lambda: all(_has_epoll(w) for w in workers))

    img = tmp_path / "img"
    pyckpt.dump(t.pid, img)  # the original runs on ...
    for _ in range(3):
        assert _get(port) in workers  # ... and its access log grows
    access = tmp_path / "access.log"
    copies = []
    for _ in range(2):
        size = access.stat().st_size
        p = pyckpt.restore(img, new_pidns=True, new_netns=True)  # no other option
        spawn.track(p.ppid())  # the namespace's init: killing it ends the copy
        copies.append(p)
        # the copy's workers have the image's PIDs in the copy's namespace
        served = {_get_in(p.pid, port) for _ in range(6)}
        assert served <= set(workers), served
        assert access.stat().st_size > size  # the copy appended to the shared log
    for p in copies:  # each copy still serves, and so does the original
        assert _get_in(p.pid, port) in workers
    assert _get(port) in workers
    lines = access.read_text().splitlines()
    assert all(line.startswith("127.0.0.1 - - [") for line in lines), lines  # whole lines only
