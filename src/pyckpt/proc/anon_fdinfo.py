"""Kind-specific lines of /proc/PID/fdinfo/FD for anon-inode files.

eventfd, signalfd, timerfd and epoll keep their whole state where fdinfo
shows it; reading it there is the only non-destructive way (a read() on the
fd consumes a count, a signal or ticks).  Formats, as printed by the kernel
(fs/eventfd.c, fs/signalfd.c, fs/timerfd.c, fs/eventpoll.c):

    eventfd-count:                5      hex, right-aligned
    eventfd-id: 1
    eventfd-semaphore: 1

    sigmask:	0000000000000801           hex, bit N-1 = signal N

    clockid: 1
    ticks: 0                               expirations not yet read
    settime flags: 00                      octal: TFD_TIMER_ABSTIME 1, CANCEL_ON_SET 2
    it_value: (1, 999951698)               time LEFT (relative), 0 when expired
    it_interval: (0, 500000000)

    tfd:        8 events: 80000019 data:                8  pos:0 ino:1b693 sdev:f

One `tfd:` line per epoll item, in the kernel's tree order (by file, then
fd number): the same order kcmp(KCMP_EPOLL_TFD) counts `toff` in.

    inotify wd:1 ino:2a sdev:800001 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:...

One `inotify` line per watch (fs/notify/fdinfo.c): wd, inode and device (hex,
the device in the kernel's major << 20 | minor encoding), mask, and the
inode's file handle when the file system gives one.
"""

from __future__ import annotations

import os
from .._dataclass import dataclass

from .fdinfo import read_fdinfo_text  # noqa: F401 (its reader; the epoll and pidfd kinds import it here)


def _fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


def _need(fields: dict[str, str], key: str, what: str) -> str:
    if key not in fields:
        raise ValueError(f"{what} fdinfo has no '{key}:' line")
    return fields[key]


@dataclass(frozen=True)
class EventfdInfo:
    count: int
    semaphore: bool


def parse_eventfd(text: str) -> EventfdInfo:
    f = _fields(text)
    return EventfdInfo(count=int(_need(f, "eventfd-count", "eventfd"), 16),
                       semaphore=f.get("eventfd-semaphore", "0") == "1")


def parse_signalfd(text: str) -> int:
    """The signal mask of a signalfd (bit N-1 set for signal N)."""
    return int(_need(_fields(text), "sigmask", "signalfd"), 16)


@dataclass(frozen=True)
class TimerfdInfo:
    clockid: int
    ticks: int  # expirations not read yet
    settime_flags: int
    value_ns: int  # time left until the next expiry; 0: disarmed or expired
    interval_ns: int


_PAIR = r"^\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)$"  # (patterns compiled when first used: re's cache)


def _timespec_ns(value: str, key: str) -> int:
    import re  # (`re` when such an fd is met: not in a command's start-up)

    m = re.match(_PAIR, value)
    if not m:
        raise ValueError(f"timerfd fdinfo: bad '{key}:' value {value!r}")
    return int(m.group(1)) * 1_000_000_000 + int(m.group(2))


def parse_timerfd(text: str) -> TimerfdInfo:
    f = _fields(text)
    return TimerfdInfo(
        clockid=int(_need(f, "clockid", "timerfd")),
        ticks=int(_need(f, "ticks", "timerfd")),
        settime_flags=int(_need(f, "settime flags", "timerfd"), 8),
        value_ns=_timespec_ns(_need(f, "it_value", "timerfd"), "it_value"),
        interval_ns=_timespec_ns(_need(f, "it_interval", "timerfd"), "it_interval"),
    )


@dataclass(frozen=True)
class EpollItemInfo:
    tfd: int  # fd number the item was added under (it may be closed since)
    events: int
    data: int
    toff: int  # how many earlier lines have the same tfd (kcmp's KCMP_EPOLL_TFD index)


def _hex(s: str) -> bool:
    return bool(s) and s.isascii() and not s.strip("0123456789abcdefABCDEF")


def parse_epoll_items(text: str) -> list[EpollItemInfo]:
    """The items of an epoll fdinfo text: its `tfd: N events: HEX data: HEX ...` lines
    (split at the colons and blanks: no `re`, 3-9 ms of a dump command's start-up here)."""
    items: list[EpollItemInfo] = []
    seen: dict[int, int] = {}
    for line in text.splitlines():
        if not line.startswith("tfd:"):
            continue
        t = line.replace(":", " ").split()
        if (len(t) < 6 or t[2] != "events" or t[4] != "data" or not (t[1].isascii() and t[1].isdigit())
                or not _hex(t[3]) or not _hex(t[5])):
            raise ValueError(f"epoll fdinfo: bad item line {line!r}")
        tfd = int(t[1])
        items.append(EpollItemInfo(tfd, int(t[3], 16), int(t[5], 16), seen.get(tfd, 0)))
        seen[tfd] = seen.get(tfd, 0) + 1
    return items


def parse_pidfd(text: str) -> int:
    """The process a pidfd refers to, as the reader of /proc sees it ('Pid:'); -1 once
    that process has exited and been reaped, 0 when it is in no namespace the reader
    sees."""
    return int(_need(_fields(text), "Pid", "pidfd"))


# --- inotify: `inotify wd:... ino:... sdev:... mask:...` lines ----------------------------

_WATCH_RE = (
    r"^inotify wd:(\d+) ino:([0-9a-f]+) sdev:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:[0-9a-f]+"
    r"(?: fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]*))?"
)


@dataclass
class FdinfoWatch:
    """One `inotify` line of /proc/PID/fdinfo/N."""

    wd: int
    ino: int
    sdev: int  # kernel encoding: major << 20 | minor
    mask: int
    handle_type: int | None
    handle: bytes | None

    @property
    def dev(self) -> int:
        return os.makedev(self.sdev >> 20, self.sdev & 0xFFFFF)


def parse_watches(text: str) -> list[FdinfoWatch]:
    """The watches of an inotify fdinfo text (unit-tested on captured text)."""
    out = []
    import re

    for m in re.finditer(_WATCH_RE, text, re.M):
        wd, ino, sdev, mask, nbytes, htype, handle = m.groups()
        raw = bytes.fromhex(handle) if handle is not None else None
        if raw is not None and len(raw) != int(nbytes, 16):
            raise ValueError(f"inotify wd {wd}: f_handle has {len(raw)} bytes, fdinfo says {nbytes}")
        out.append(FdinfoWatch(int(wd), int(ino, 16), int(sdev, 16), int(mask, 16),
                               None if htype is None else int(htype, 16), raw))
    return out
