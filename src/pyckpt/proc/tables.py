"""Per-dump cache of the /proc tables several kinds or several fds need.

One `Tables` lives for one dump (dumper.py makes it, DumpContext.tables
carries it to every kind of every process of the tree) and is dropped with
it: a second dump reads fresh tables.  The tables cached are those that do
not change while the tree is frozen and that cost a walk to produce:
mountinfo (per process), the network tables (per network namespace:
/proc/PID/net/tcp walks the namespace's whole TCP table), each fd's fdinfo
(files and locks both need it) and /proc/sys limits.
"""

from __future__ import annotations

import os

from .fdinfo import read_fdinfo_text
from .misc import read_sys
from .mountinfo import Mount, read_mountinfo
from .net import NetSocket, read_groups, read_net_sockets


class Tables:
    def __init__(self) -> None:
        self._mounts: dict[int, list[Mount]] = {}
        self._net: dict[tuple[int, tuple[str, ...]], dict[int, NetSocket]] = {}
        self._groups: dict[tuple[int, int], list] = {}
        self._memo: dict = {}
        self._fdinfo: dict[tuple[int, int], str] = {}
        self.reads = 0  # how many /proc files were read (a measure, and for tests)

    def mountinfo(self, pid: int) -> list[Mount]:
        if pid not in self._mounts:
            self.reads += 1
            self._mounts[pid] = read_mountinfo(pid)
        return self._mounts[pid]

    def net(self, pid: int, *names: str) -> dict[int, NetSocket]:
        """inode -> socket of /proc/PID/net/NAME for each of `names` ("tcp", "tcp6"...),
        read once per network namespace and dump."""
        key = (os.stat(f"/proc/{pid}/ns/net").st_ino, names)
        if key not in self._net:
            self.reads += len(names)
            self._net[key] = {s.inode: s for s in read_net_sockets(pid, *names)}
        return self._net[key]

    def fdinfo_text(self, pid: int, fd: int) -> str:
        """/proc/PID/fdinfo/FD as the files phase read it (its flags, position, locks):
        the kinds that look at it again (locks) reuse that text."""
        key = (pid, fd)
        if key not in self._fdinfo:
            self.reads += 1
            self._fdinfo[key] = read_fdinfo_text(pid, fd)
        return self._fdinfo[key]

    def fd_link(self, pid: int, fd: int) -> str:
        """readlink of /proc/PID/fd/FD, once per dump (files and locks both need it)."""
        key = ("fd link", pid, fd)
        if key not in self._memo:
            self._memo[key] = os.readlink(f"/proc/{pid}/fd/{fd}")
        return self._memo[key]

    def fd_stats(self, pid: int) -> dict[int, os.stat_result]:
        """fd -> stat through /proc/PID/fd/FD of every fd of `pid`, in fd order, once per
        dump: the fd table of a frozen process does not change, and five kinds walked
        it (files, unix, pipes twice, tcpconn: ~300 stats a dump of a Jupyter kernel).
        An fd closed while it is read (a process not frozen) is left out."""
        key = ("fd stats", pid)
        if key not in self._memo:
            self.reads += 1
            base = f"/proc/{pid}/fd"
            table: dict[int, os.stat_result] = {}
            for fd in sorted(int(n) for n in os.listdir(base)):
                try:
                    table[fd] = os.stat(f"{base}/{fd}")
                except FileNotFoundError:
                    continue
            self._memo[key] = table
        return self._memo[key]

    def sys(self, name: str) -> str:
        """/proc/sys/NAME, once per dump (a limit such as net/ipv4/igmp_max_msf)."""
        key = ("sys", name)
        if key not in self._memo:
            self.reads += 1
            self._memo[key] = read_sys(name)
        return self._memo[key]

    def memo(self, key, make):
        """What `make()` derives from the tables (an index...), computed once per dump."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def groups(self, pid: int, family: int) -> list[tuple[str, int, str]]:
        key = (os.stat(f"/proc/{pid}/ns/net").st_ino, family)
        if key not in self._groups:
            self.reads += 1
            self._groups[key] = read_groups(pid, family)
        return self._groups[key]
