"""Sockets: unnamed unix sockets (socketpairs with their queues, asyncio's
self-pipe, a socketpair between parent and child), listening TCP sockets,
and the sockets pyckpt refuses."""

from __future__ import annotations

import os
import socket

import psutil
import pytest

import pyckpt
from conftest import TARGETS, check, dump_kill_restore, reap_dumped
from test_trees import dump_kill_restore_tree

TARGET = str(TARGETS / "sockets.py")


def _start(spawn, python_exe, mode: str, *args: str):
    t = spawn([python_exe, TARGET, mode, *args], name=mode)
    m = t.wait_for(r"^READY ?(\d*)$")
    return t, m.group(1)


def test_socketpairs_keep_their_queues_and_options(spawn, python_exe, tmp_path):
    t, _ = _start(spawn, python_exe, "pairs")
    before = check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    assert check(t) > before
    check(t)  # the check put every queue back as it was: it holds again
    kinds = {f["kind"] for f in pyckpt.open_image(tmp_path / "img").summary()["fds"]}
    assert "unix" in kinds


def test_show_lists_sockets_and_their_queues(spawn, python_exe, tmp_path):
    t, _ = _start(spawn, python_exe, "pairs")
    image = pyckpt.dump(t.pid, tmp_path / "img")
    socks = [f for f in image.summary()["fds"] if f["kind"] == "unix"]
    whats = [f["what"] for f in socks]
    assert any("stream" in w and "10240 bytes queued" in w for w in whats), whats
    assert any("datagram" in w and "3 message(s) / 503 bytes" in w for w in whats), whats
    assert any("peer closed" in w and "3 bytes" in w for w in whats), whats
    assert any("not connected" in w for w in whats), whats
    check(t)  # dumping peeked at the queues; it consumed nothing


def test_asyncio_event_loop_carries_on(spawn, python_exe, tmp_path):
    """asyncio's self-pipe is a socketpair; SIGUSR1 reaches the loop through it."""
    t, _ = _start(spawn, python_exe, "asyncio")
    before = check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    after = check(t)
    assert after > before
    assert check(t) > after


def test_socketpair_between_parent_and_child(spawn, python_exe, tmp_path):
    t, child = _start(spawn, python_exe, "tree")
    child = int(child)
    check(t)
    dump_kill_restore_tree(spawn, t, [child], tmp_path / "img")
    check(t)
    check(t)


def test_tcp_listeners_listen_again_on_their_ports(spawn, python_exe, tmp_path):
    t = spawn([python_exe, TARGET, "listen"], name="listen")
    ports = t.wait_for(r"^READY (\d+) (\d+)$").groups()
    check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    check(t)
    listeners = [f for f in pyckpt.open_image(tmp_path / "img").summary()["fds"] if f["kind"] == "tcp-listen"]
    assert sorted(f["what"] for f in listeners) == sorted([
        f"TCP 127.0.0.1:{ports[0]}, listening (backlog 128)",  # listen()'s default in Python
        f"TCP [::1]:{ports[1]}, listening (backlog 7)"])


def test_tcp_listener_with_a_waiting_connection_is_saved_without_it(spawn, python_exe, tmp_path):
    """A connection not yet accepted is not saved: with dump --kill its client is reset
    (as when a server restarts) and the restored listener takes new ones."""
    t = spawn([python_exe, TARGET, "listen"], name="listen")
    port = int(t.wait_for(r"^READY (\d+) (\d+)$").group(1))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as waiting:  # never accepted
        dump_kill_restore(spawn, t, tmp_path / "img")
        with pytest.raises(ConnectionResetError):
            waiting.recv(1)
    check(t)  # its check connects to its own listener and accepts


def test_tcp_port_taken_at_restore_is_a_clear_error(spawn, python_exe, tmp_path):
    t = spawn([python_exe, TARGET, "listen"], name="listen")
    port = int(t.wait_for(r"^READY (\d+) (\d+)$").group(1))
    pyckpt.dump(t.pid, tmp_path / "img")  # the original keeps its ports
    with pytest.raises(pyckpt.RestoreError, match=rf"127\.0\.0\.1:{port}.*in use"):
        pyckpt.restore(tmp_path / "img", new_pidns=True)
    check(t)


def test_tcp_connections_within_the_tree_are_rebuilt(spawn, python_exe, tmp_path):
    """Both ends in the image: TCP_REPAIR rebuilds them with their addresses and unread data."""
    t = spawn([python_exe, TARGET, "tcp"], name="tcp")
    child = int(t.wait_for(r"^READY (\d+)$").group(1))
    check(t)
    image = dump_kill_restore_tree(spawn, t, [child], tmp_path / "img")
    conns = [f for p in image.summary()["processes"] for f in p["fds"] if f["kind"] == "tcp"]
    assert len({f["file_id"] for f in conns}) == 8  # four connections, both ends of each
    assert any(f["what"].endswith("5000 bytes unread") for f in conns)
    check(t)
    check(t)


def test_tcp_connection_to_itself_restores_again_after_a_kill(spawn, python_exe, tmp_path):
    """A process connected to its own SO_REUSEADDR listener (an ipykernel is one): the
    rebuilt ends get their SO_REUSEADDR back (leaving repair mode clears it), so the
    accepted end that a SIGKILL leaves in TIME_WAIT on the listener's port does not keep
    the next restore of the same image from listening there."""
    t, port = _start(spawn, python_exe, "tcp-self")
    check(t)
    dump_kill_restore(spawn, t, tmp_path / "img")
    check(t)
    os.kill(t.pid, 9)
    os.waitpid(t.pid, 0)
    again = tmp_path / "again.log"  # (the log grew, and is not written O_APPEND)
    proc = pyckpt.restore(tmp_path / "img", fds={1: again})
    spawn.track(proc.pid)
    t.log = again
    check(t)


def test_tcp_connection_to_outside_is_saved_and_left_alone(spawn, python_exe, tmp_path):
    """Saved (see test_tcp_outside.py for its restore); the dump does not disturb it."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        t = spawn([python_exe, TARGET, "refuse-outside", str(server.getsockname()[1])], name="out")
        fd = int(t.wait_for(r"^READY (\d+)$").group(1))
        conn, _ = server.accept()
        with conn:
            image = pyckpt.dump(t.pid, tmp_path / "img")
            assert next(f for f in image.summary()["fds"] if f["fd"] == fd)["kind"] == "tcp-outside"
            assert t.state() not in "tT"
            check(t)
            conn.sendall(b"still connected")
            conn.settimeout(0.2)
            with pytest.raises(socket.timeout):  # nothing was sent or closed on its behalf
                conn.recv(1)


@pytest.mark.parametrize("mode, kind", [
    ("refuse-udplite", "AF_INET"),
    ("refuse-rights", "file descriptors in flight"),
])
def test_refused_sockets(spawn, python_exe, tmp_path, mode, kind):
    t, fd = _start(spawn, python_exe, mode, str(tmp_path / "listening.sock"))
    with pytest.raises(pyckpt.UnsupportedFdError) as ei:
        pyckpt.dump(t.pid, tmp_path / "img")
    assert kind in str(ei.value) and ei.value.pid == t.pid
    if mode != "refuse-rights":
        assert ei.value.fd == int(fd)
    assert not (tmp_path / "img" / "COMPLETE").exists()
    assert t.state() not in "tT"
    check(t)  # it carries on, untouched


def test_socket_connected_outside_is_external(spawn, python_exe, tmp_path):
    """A socket whose peer the test holds: saved as external; restore wants a replacement."""
    ours, theirs = socket.socketpair()
    n = theirs.fileno()
    code = ("import os, selfcheck, socket\n"
            f"s = socket.socket(fileno={n})\n"
            "def check():\n"
            "    s.send(b'ping')\n"
            "    return []\n"
            "print('READY', flush=True)\n"
            "selfcheck.serve(check)\n")
    t = spawn([python_exe, "-c", code], name="outside", pass_fds=(n,))
    theirs.close()
    t.wait_for("^READY")
    image = pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    reap_dumped(t)
    fd = next(f for f in image.summary()["fds"] if f["fd"] == n)
    assert fd["kind"] == "external" and "outside the image" in fd["what"]
    with pytest.raises(pyckpt.RestoreError, match=rf"fd {n} .*outside the image"):
        pyckpt.restore(tmp_path / "img")
    assert not psutil.pid_exists(t.pid)
    mine, replacement = socket.socketpair()
    p = pyckpt.restore(tmp_path / "img", fds={n: replacement})
    replacement.close()
    spawn.track(p.pid)
    t.popen = None
    check(t)
    mine.settimeout(5)
    assert mine.recv(4) == b"ping"  # the restored process talks through the replacement
    ours.close()
    mine.close()


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1284 1 000000006667e356 100 0 0 10 0
   1: 0100007F:A3F2 0100007F:07E8 01 00000000:00000000 00:00000000 00000000     0        0 99812 1 0000000012345678 20 4 30 10 -1
"""


def test_parse_proc_net_tcp_finds_listeners_only():
    from pyckpt.kinds.tcp import parse_proc_net_tcp

    assert parse_proc_net_tcp(PROC_NET_TCP, socket.AF_INET) == {1284: socket.AF_INET}


def test_dump_leaves_every_socket_flag_as_it_was(spawn, python_exe, tmp_path):
    """pyckpt works on the target's own sockets (pidfd_getfd): even with a default
    socket timeout set in the caller, no O_NONBLOCK or other flag of theirs moves."""
    t = spawn([python_exe, TARGET, "tcp"], name="tcp")
    t.wait_for(r"^READY (\d+)$")

    def flags() -> dict[int, str]:
        out = {}
        for fd in os.listdir(f"/proc/{t.pid}/fd"):
            with open(f"/proc/{t.pid}/fdinfo/{fd}") as f:
                out[int(fd)] = next(line for line in f if line.startswith("flags:"))
        return out

    before = flags()
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5)
    try:
        pyckpt.dump(t.pid, tmp_path / "img")
    finally:
        socket.setdefaulttimeout(old)
    assert flags() == before
    check(t)


SYSLOG_CLIENT = r"""
import socket, sys, selfcheck
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(sys.argv[1])                     # a server outside the image, as /dev/log is
n = [0]
def check():
    n[0] += 1
    s.send(b"log line %d" % n[0])
    return []
selfcheck.listen()
print("READY", s.fileno(), flush=True)
selfcheck.serve(check)
"""


def test_datagram_client_of_an_outside_server_connects_again(spawn, python_exe, tmp_path):
    """A socket connected to a named datagram server outside the image (syslog's /dev/log
    is one): connected to that name again at restore, so its messages keep arriving."""
    path = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        t = spawn([python_exe, "-c", SYSLOG_CLIENT, path], name="logger")
        fd = int(t.wait_for(r"^READY (\d+)$").group(1))
        check(t)
        assert server.recv(100) == b"log line 1"
        image = pyckpt.dump(t.pid, tmp_path / "img")
        what = next(f["what"] for f in image.summary()["fds"] if f["fd"] == fd)
        assert f"connected to {path}" in what
        os.kill(t.pid, 9)
        t.reap()
        p = pyckpt.restore(tmp_path / "img", allow_changed_files=True)
        spawn.track(p.pid)
        t.popen = None
        check(t)
        assert server.recv(100) == b"log line 2"  # the restored process's own count goes on
        os.kill(p.pid, 9)
        os.waitpid(p.pid, 0)
    os.unlink(path)
    with pytest.raises(pyckpt.RestoreError, match="log.sock again"):  # the server is gone
        pyckpt.restore(tmp_path / "img", allow_changed_files=True)
