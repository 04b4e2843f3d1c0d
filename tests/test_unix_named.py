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
from conftest import TARGETS, check, reap_dumped
from test_trees import dump_kill_restore_tree

SERVER = str(TARGETS / "unix_server.py")


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


def _connect(name: bytes) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(name)
    return s


def _server_round_trip(spawn, python_exe, tmp_path, address: str, name: bytes) -> None:
    t, fd, children = _start_server(spawn, python_exe, address)
    outside = _connect(name)
    assert _talk(outside, 5) == b"6\n"
    before = check(t)
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
    time.sleep(0.3)  # each check wants every inside client to have spoken since the last
    assert check(t) > before  # the three clients inside the tree talk on, names as they were
    time.sleep(0.3)
    check(t)
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
