"""/proc/PID/stat, /proc/PID/status and /proc/PID/auxv."""

from __future__ import annotations

import struct
from .._dataclass import dataclass
from ._read import read_text

PF_KTHREAD = 0x00200000


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    flags: int
    num_threads: int
    processor: int
    start_code: int
    end_code: int
    start_stack: int
    start_data: int
    end_data: int
    start_brk: int
    arg_start: int
    arg_end: int
    env_start: int
    env_end: int
    exit_code: int = 0  # wait status, for a zombie (field 52)
    tty_nr: int = 0  # the controlling terminal's device number (field 7)
    tpgid: int = -1  # its foreground process group (field 8)
    start_time: int = 0  # clock ticks after boot (field 22): with the pid, names one process

    @property
    def is_kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)


def parse_stat(text: str) -> ProcStat:
    """Parse /proc/PID/stat.

    comm sits in parentheses and may itself contain spaces and ')' — split on
    the *last* ')' (as psutil does).  The mm fields (startcode..env_end) read
    0 unless the reader may ptrace the process; root may.
    """
    text = text.strip()
    lpar = text.index("(")
    rpar = text.rindex(")")
    pid = int(text[:lpar])
    comm = text[lpar + 1 : rpar]
    rest = text[rpar + 2 :].split()
    # rest[0] is field 3 (state); field n is rest[n - 3].
    f = lambda n: int(rest[n - 3])  # noqa: E731
    return ProcStat(
        pid=pid,
        comm=comm,
        state=rest[0],
        ppid=f(4),
        pgrp=f(5),
        session=f(6),
        flags=f(9),
        num_threads=f(20),
        processor=f(39),
        start_code=f(26),
        end_code=f(27),
        start_stack=f(28),
        start_data=f(45),
        end_data=f(46),
        start_brk=f(47),
        arg_start=f(48),
        arg_end=f(49),
        env_start=f(50),
        env_end=f(51),
        exit_code=f(52) if len(rest) >= 50 else 0,
        tty_nr=f(7),
        tpgid=f(8),
        start_time=f(22),
    )


def parse_status(text: str) -> dict[str, str]:
    """Parse /proc/PID/status into {key: value-text}."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def parse_auxv(data: bytes) -> list[tuple[int, int]]:
    """Parse /proc/PID/auxv (pairs of native u64) up to and including AT_NULL."""
    pairs = []
    for i in range(0, len(data) - 15, 16):
        key, value = struct.unpack_from("<QQ", data, i)
        pairs.append((key, value))
        if key == 0:
            break
    return pairs


def read_stat(pid: int | str) -> ProcStat:
    # (comm is any bytes the process chose: undecodable ones are kept as surrogates)
    return parse_stat(read_text(f"/proc/{pid}/stat", "surrogateescape"))


def read_status(pid: int) -> dict[str, str]:
    return parse_status(read_text(f"/proc/{pid}/status"))


def read_auxv(pid: int) -> list[tuple[int, int]]:
    with open(f"/proc/{pid}/auxv", "rb") as f:
        return parse_auxv(f.read())


RLIM_INFINITY = -1  # resource.RLIM_INFINITY


def parse_limits(text: str) -> list[tuple[int, int]]:
    """Parse /proc/PID/limits into (soft, hard) per resource, in RLIMIT_* order.

    The kernel prints one line per resource in RLIMIT_* index order after a
    header line; 'unlimited' becomes RLIM_INFINITY.  Columns are padded with
    spaces and names contain spaces, so values are taken from the right.
    """
    out = []
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        fields = line[26:].split()  # past the fixed-width name column
        soft, hard = fields[0], fields[1]
        out.append(tuple(RLIM_INFINITY if v == "unlimited" else int(v) for v in (soft, hard)))
    return out


def read_limits(pid: int) -> list[tuple[int, int]]:
    with open(f"/proc/{pid}/limits") as f:
        return parse_limits(f.read())
