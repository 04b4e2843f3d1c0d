"""Network namespaces: restoring a copy into a fresh one, and talking to it.

A server restored many times at once needs a network of its own per copy:
the copies listen on the same ports.  `fresh()` gives the calling thread a
new network namespace with its loopback interface up, for as long as the
restore runs: every socket pyckpt makes for the restored processes is made
in it (a socket belongs to the namespace it was created in), and the
processes, forked from this thread, live in it.  Afterwards the thread is
back in its own namespace.

`entered(pid)` puts the calling thread into the network namespace of a
process for a while, so the caller can connect to a copy: a socket made
inside the block stays in that namespace and keeps working after it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import struct

from .arch import libc as _libc
from .errors import RestoreError

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _loopback_up() -> None:
    import socket  # (only for --new-netns: not in every restore's start-up)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack_from("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


@contextlib.contextmanager
def _switched(enter) -> object:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            enter()
            yield
        finally:  # also when enter() failed half-way (setns to where we are is harmless)
            _check(_libc.setns(own, CLONE_NEWNET), "returning to pyckpt's network namespace")
    finally:
        os.close(own)


@contextlib.contextmanager
def fresh():
    """The calling thread in a new network namespace (loopback up) inside the block."""
    def enter():
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise RestoreError(f"cannot make a new network namespace: {os.strerror(err)} "
                               "(--new-netns needs CAP_SYS_ADMIN)")
        _loopback_up()

    with _switched(enter):
        yield


@contextlib.contextmanager
def entered(pid: int):
    """The calling thread in the network namespace of process `pid` inside the block."""
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _switched(lambda: _check(_libc.setns(target, CLONE_NEWNET),
                                      f"entering the network namespace of process {pid}")):
            yield
    finally:
        os.close(target)
