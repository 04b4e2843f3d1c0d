"""ctypes helpers shared by the ev_* targets (epoll with data, signalfd, timerfd)."""

import ctypes
import os
import struct

libc = ctypes.CDLL(None, use_errno=True)
EPOLL_CTL_ADD = 1
EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP = 0x1, 0x4, 0x8, 0x10
EPOLLEXCLUSIVE, EPOLLONESHOT, EPOLLET = 1 << 28, 1 << 30, 1 << 31


def _check(r: int, what: str) -> int:
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return r


def epoll_create() -> int:
    return _check(libc.epoll_create1(os.O_CLOEXEC), "epoll_create1")


def epoll_add(ep: int, fd: int, events: int, data: int) -> None:
    ev = ctypes.create_string_buffer(struct.pack("<IQ", events, data), 12)
    _check(libc.epoll_ctl(ep, EPOLL_CTL_ADD, fd, ev), f"epoll_ctl ADD fd {fd}")


def epoll_wait(ep: int, timeout_ms: int = 0, maxevents: int = 16) -> list[tuple[int, int]]:
    """[(data, events)] of the ready items."""
    buf = ctypes.create_string_buffer(12 * maxevents)
    n = _check(libc.epoll_wait(ep, buf, maxevents, timeout_ms), "epoll_wait")
    return [struct.unpack_from("<IQ", buf.raw, 12 * i)[::-1] for i in range(n)]


def fdinfo(fd: int) -> str:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return f.read()


def epoll_items(ep: int) -> list[tuple[int, int, int]]:
    """(tfd, events, data) of every item, from /proc/self/fdinfo."""
    out = []
    for line in fdinfo(ep).splitlines():
        if line.startswith("tfd:"):
            w = line.split()
            out.append((int(w[1]), int(w[3], 16), int(w[5], 16)))
    return sorted(out)


def signalfd(signals, flags: int) -> int:
    mask = (ctypes.c_uint64 * 16)(sum(1 << (s - 1) for s in signals))
    return _check(libc.signalfd(-1, ctypes.byref(mask), flags), "signalfd")


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("interval", _Timespec), ("value", _Timespec)]


def _ts(seconds: float) -> _Timespec:
    ns = round(seconds * 1e9)
    return _Timespec(ns // 10**9, ns % 10**9)


def timerfd_create(clock: int, flags: int) -> int:
    return _check(libc.timerfd_create(clock, flags), "timerfd_create")


def timerfd_settime(fd: int, value: float, interval: float = 0.0, flags: int = 0) -> None:
    spec = _Itimerspec(_ts(interval), _ts(value))
    _check(libc.timerfd_settime(fd, flags, ctypes.byref(spec), None), "timerfd_settime")


def timerfd_gettime(fd: int) -> tuple[float, float]:
    """(time left, interval) in seconds."""
    spec = _Itimerspec()
    _check(libc.timerfd_gettime(fd, ctypes.byref(spec)), "timerfd_gettime")
    return (spec.value.sec + spec.value.nsec / 1e9, spec.interval.sec + spec.interval.nsec / 1e9)
