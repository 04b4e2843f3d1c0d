"""Small /proc files: /proc/PID/timers, personality, comm, task/TID/children,
uid_map, /proc/sys values, /proc/sysvipc tables, the boot id, and the memory limit
of pyckpt's cgroup (/proc/self/cgroup)."""

from __future__ import annotations

from .._dataclass import dataclass
from ._read import read_bytes, read_text

NOTIFY = {"signal": 0, "none": 1, "thread": 2}  # SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD
SIGEV_THREAD_ID = 4


def parse_timers(text: str) -> list[dict]:
    """Parse /proc/PID/timers: blocks of `ID:`, `signal: N/VALUE`, `notify: KIND/pid.N`
    (or `tid.N`), `ClockID:` lines."""
    timers, cur = [], None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "ID":
            cur = {"id": int(value)}
            timers.append(cur)
        elif cur is None:
            continue
        elif key == "signal":
            signo, _, sival = value.partition("/")
            cur["signo"], cur["value"] = int(signo), int(sival, 16)
        elif key == "notify":
            kind, _, target = value.partition("/")
            who, _, num = target.partition(".")
            cur["notify"] = NOTIFY[kind] | (SIGEV_THREAD_ID if who == "tid" else 0)
            cur["tid"] = int(num) if who == "tid" else 0
        elif key == "ClockID":
            cur["clock"] = int(value)
    return timers


def in_initial_user_ns(pid: int | str = "self") -> bool:
    """Whether `pid` runs in the initial user namespace: its uid map the whole range."""
    try:
        return read_bytes(f"/proc/{pid}/uid_map").split() == [b"0", b"0", b"4294967295"]
    except OSError:
        return False


def read_timers(pid: int) -> list[dict]:
    with open(f"/proc/{pid}/timers") as f:
        return parse_timers(f.read())


def parse_personality(text: str) -> int:
    return int(text, 16)


def read_personality(pid: int) -> int:
    with open(f"/proc/{pid}/personality") as f:
        return parse_personality(f.read())


def read_comm(pid: int, tid: int | None = None) -> bytes:
    """The name (comm) of a process, or of its thread `tid`, without the newline."""
    return read_bytes(f"/proc/{pid}/comm" if tid is None else f"/proc/{pid}/task/{tid}/comm").rstrip(b"\n")


def parse_children(text: str) -> list[int]:
    return [int(x) for x in text.split()]


def read_children(pid: int, tid: int) -> list[int]:
    return parse_children(read_text(f"/proc/{pid}/task/{tid}/children"))


def read_sys(name: str) -> str:
    """The text of /proc/sys/NAME ("fs/nr_open", "net/ipv4/igmp_max_msf"...), stripped."""
    if ".." in name.split("/"):
        raise ValueError(name)
    with open(f"/proc/sys/{name}") as f:
        return f.read().strip()


def read_sys_int(name: str) -> int:
    return int(read_sys(name))


def write_sys(name: str, value: str) -> None:
    """Write /proc/sys/NAME (e.g. kernel/shm_next_id, for this thread's IPC namespace)."""
    if ".." in name.split("/"):
        raise ValueError(name)
    with open(f"/proc/sys/{name}", "w") as f:
        f.write(value)


def read_boot_id() -> str:
    return read_sys("kernel/random/boot_id")


def parse_cgroup_memory_files(text: str) -> list[str]:
    """The files that hold the memory limit of the cgroups in /proc/PID/cgroup text: v2's
    memory.max ("0::PATH"), v1's memory controller's memory.limit_in_bytes."""
    out = []
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            out.append(f"/sys/fs/cgroup{path}/memory.max")
        elif "memory" in controllers.split(","):
            out.append(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
    return out


def read_memory_limit() -> int | None:
    """The lowest memory limit of pyckpt's cgroups (bytes), or None where none is set."""
    try:
        files = parse_cgroup_memory_files(read_text("/proc/self/cgroup"))
    except (OSError, ValueError):
        return None
    limits = []
    for where in files:
        try:
            with open(where) as f:
                limits.append(int(f.read()))
        except (OSError, ValueError):  # ("max": no limit; a file not there)
            pass
    return min(limits, default=None)


def parse_sysvipc(text: str) -> list[list[int]]:
    """Rows of /proc/sysvipc/sem or msg: key (unsigned), id, perms (octal), the rest."""
    rows = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) >= 8:
            rows.append([int(f[0]) & 0xFFFFFFFF, int(f[1]), int(f[2], 8)] + [int(x) for x in f[3:]])
    return rows


def read_sysvipc_text(kind: str) -> str:
    """The text of /proc/sysvipc/KIND ("shm", "sem", "msg") of the reader's IPC namespace."""
    if kind not in ("shm", "sem", "msg"):
        raise ValueError(kind)
    with open(f"/proc/sysvipc/{kind}") as f:
        return f.read()


@dataclass
class ShmEntry:
    """One line of /proc/sysvipc/shm."""

    key: int
    shmid: int
    mode: int
    size: int
    cpid: int
    nattch: int
    uid: int
    gid: int
    cuid: int
    cgid: int


def parse_shm_table(text: str) -> list[ShmEntry]:
    """The segments /proc/sysvipc/shm lists (the reader's IPC namespace); the key is
    printed as a signed int, kept here as the unsigned 32-bit key_t."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 11:
            continue
        out.append(ShmEntry(key=int(f[0]) & 0xFFFFFFFF, shmid=int(f[1]), mode=int(f[2], 8), size=int(f[3]),
                            cpid=int(f[4]), nattch=int(f[6]), uid=int(f[7]), gid=int(f[8]),
                            cuid=int(f[9]), cgid=int(f[10])))
    return out
