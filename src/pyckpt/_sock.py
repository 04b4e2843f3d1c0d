"""What pyckpt uses of the `socket` module, without importing it.

`import socket` loads `enum`, `selectors` and `array` and builds four IntEnums
of its constants: ~6 ms of the start-up of a `pyckpt dump` or `restore` whose
process has a socket (bench/startup.py, bench/kernel.py), where its C core
`_socket` costs ~0.4 ms.  The socket kinds import this module as `socket`: it
has every name of `_socket` (constants, inet_pton/inet_ntop, if_nametoindex,
CMSG_SPACE...), and what socket.py adds that they use, done as socket.py does
it: `socket` objects that are context managers, with `set_inheritable()`,
whose `accept()` returns one; `socketpair`, `send_fds` and `recv_fds`.  A
socket's `family` and `type` are plain ints here, not socket.py's IntEnums
(they compare equal).
"""

from __future__ import annotations

import os
import struct

import _socket
from _socket import *  # noqa: F401,F403  (socket.py's constants and functions are these)

_INT = struct.calcsize("i")


class socket(_socket.socket):  # noqa: N801  (socket.socket's name)
    """_socket.socket, closed at the end of a `with`, whose accept() gives one too."""

    __slots__ = ("__weakref__",)

    def __enter__(self) -> "socket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_inheritable(self) -> bool:
        return os.get_inheritable(self.fileno())

    def set_inheritable(self, inheritable: bool) -> None:
        os.set_inheritable(self.fileno(), inheritable)

    def accept(self) -> tuple["socket", object]:
        fd, addr = self._accept()
        sock = socket(self.family, self.type, self.proto, fileno=fd)
        # (socket.py's: a listener with a timeout makes accepted sockets blocking)
        if getdefaulttimeout() is None and self.gettimeout():  # noqa: F405
            sock.setblocking(True)
        return sock, addr


def socketpair(family: int = AF_UNIX, type: int = SOCK_STREAM, proto: int = 0):  # noqa: A002,F405
    a, b = _socket.socketpair(family, type, proto)
    return socket(family, type, proto, a.detach()), socket(family, type, proto, b.detach())


def send_fds(sock, buffers, fds, flags: int = 0, address=None) -> int:
    """As socket.send_fds (which passes neither `flags` nor `address` on either)."""
    return sock.sendmsg(buffers, [(SOL_SOCKET, SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])  # noqa: F405


def recv_fds(sock, bufsize: int, maxfds: int, flags: int = 0):
    """As socket.recv_fds: (message, fds received, flags, address)."""
    msg, ancdata, flags, addr = sock.recvmsg(bufsize, CMSG_LEN(maxfds * _INT))  # noqa: F405
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == SOL_SOCKET and kind == SCM_RIGHTS:  # noqa: F405
            n = len(data) // _INT
            fds += struct.unpack(f"{n}i", data[:n * _INT])
    return msg, fds, flags, addr
