"""A real redis-server (the Debian package) saved with clients connected
(issue 11): an idle client and one in the middle of a pipeline (replies it has
not read, and half a command the server holds in its query buffer).

Restored with no option, the clients' connections come back reset: the old
sockets see a reset, the clients reconnect and every key is there.  With
tcp_established after an in-place dump --kill, the very connections go on: the
rest of the half-sent command, sent while the server was gone, is answered."""

from __future__ import annotations

import socket
import time

import pytest

import pyckpt
from conftest import real_program, reap_dumped

REDIS = real_program("redis-server")
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed (scripts/setup.sh)")
KEYS = 200


class Resp:
    """A redis client speaking RESP over a raw socket (the redis package is not installed)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    @staticmethod
    def encode(*args) -> bytes:
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            return rest.decode() if kind == b"+" else RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("redis closed the connection")
                self.buf += chunk
            value, self.buf = self.buf[:n], self.buf[n + 2:]
            return value
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise AssertionError(f"not RESP: {line!r}")

    def __call__(self, *args):
        self.sock.sendall(self.encode(*args))
        return self.reply()

    def close(self):
        self.sock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(spawn, tmp_path):
    port = _free_port()
    t = spawn([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--daemonize", "no", "--dir", str(tmp_path)], name="redis")
    t.wait_for(r"Ready to accept connections")
    return t, port


def _clients(port: int):
    idle = Resp(port)
    for i in range(KEYS):
        assert idle("SET", f"key:{i}", f"value {i}") == "OK"
    busy = Resp(port)
    # a pipeline: three commands whose replies stay unread, then half of a fourth
    busy.sock.sendall(Resp.encode("INCR", "counter") * 3)
    half = Resp.encode("SET", "late", "arrival")
    busy.sock.sendall(half[:len(half) // 2])
    # redis answered the three: wait until the replies sit in the client's socket
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if len(busy.sock.recv(64, socket.MSG_PEEK)) >= len(b":1\r\n:2\r\n:3\r\n"):
            break
        time.sleep(0.01)
    return idle, busy, half[len(half) // 2:]


def _all_keys_there(port: int) -> None:
    c = Resp(port)
    try:
        assert c("DBSIZE") >= KEYS
        assert c("GET", "key:0") == b"value 0" and c("GET", f"key:{KEYS - 1}") == f"value {KEYS - 1}".encode()
        assert c("GET", "counter") == b"3"
    finally:
        c.close()


def test_redis_with_clients_restored_resets_them(spawn, tmp_path):
    t, port = _start(spawn, tmp_path)
    idle, busy, _ = _clients(port)
    image = pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    reap_dumped(t)
    assert image.summary()["tcp_outside"]["count"] == 2
    p = pyckpt.restore(tmp_path / "img")
    spawn.track(p.pid)
    t.popen = None
    assert p.restore_warnings == []
    with pytest.raises(ConnectionResetError):  # the idle client's next command
        idle("PING")
    # the busy client still reads the replies it had not read, then the reset
    assert [busy.reply() for _ in range(3)] == [1, 2, 3]
    with pytest.raises((ConnectionResetError, ConnectionError)):
        busy.reply()
    idle.close()
    busy.close()
    again = Resp(port)  # the clients reconnect
    assert again("PING") == "PONG"
    again.close()
    _all_keys_there(port)


def test_redis_connections_survive_dump_kill_restore_with_tcp_established(spawn, tmp_path):
    t, port = _start(spawn, tmp_path)
    idle, busy, rest = _clients(port)
    pyckpt.dump(t.pid, tmp_path / "img", kill=True)
    reap_dumped(t)
    busy.sock.sendall(rest)  # the rest of the half-sent command, while redis is gone
    p = pyckpt.restore(tmp_path / "img", tcp_established=True)
    spawn.track(p.pid)
    t.popen = None
    assert p.restore_warnings == []
    assert idle("PING") == "PONG"  # the same connection answers
    assert idle("GET", "key:7") == b"value 7"
    assert [busy.reply() for _ in range(4)] == [1, 2, 3, "OK"]
    assert busy("GET", "late") == b"arrival"
    idle.close()
    busy.close()
    _all_keys_there(port)
