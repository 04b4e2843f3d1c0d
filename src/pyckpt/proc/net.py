"""/proc/PID/net/{tcp,tcp6,udp,udp6} and /proc/PID/net/{igmp,igmp6}: tables of
the network namespace of PID (not of PID alone).

tcp/udp print a header line, then per socket: slot, local and remote
address as hex `ADDR:PORT` (the address in 32-bit host-order words), state
(hex), `tx_queue:rx_queue` (hex), timer fields, retransmits, uid, timeout,
inode, ...  Reading tcp walks the namespace's whole TCP table: read it once
per dump (proc.tables), never per socket.
"""

from __future__ import annotations

from .._dataclass import dataclass

TCP_ESTABLISHED, TCP_LISTEN = 1, 10


@dataclass(frozen=True)
class NetSocket:
    local: tuple[str, int]
    remote: tuple[str, int]
    state: int
    tx_queue: int
    rx_queue: int
    inode: int


_MAPPED = bytes(10) + b"\xff\xff"  # the first 12 bytes of an IPv4-mapped IPv6 address


def address(text: str) -> tuple[str, int]:
    """(address, port) from /proc/net/tcp{,6} hex ("0100007F:1F90"); an IPv4-mapped
    IPv6 address as plain IPv4, so both files name one connection alike.  Written
    by inet_ntop, as Python's getsockname() writes an address (not the ipaddress
    module, whose import is ~2 ms of a command's start-up)."""
    from _socket import AF_INET, AF_INET6, inet_ntop

    host, port = text.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # host-order words
    if len(words) == 16 and words.startswith(_MAPPED):
        words = words[12:]
    return inet_ntop(AF_INET if len(words) == 4 else AF_INET6, words), int(port, 16)


def parse_net_sockets(text: str) -> list[NetSocket]:
    """Every socket of /proc/net/{tcp,tcp6,udp,udp6} text that has an inode."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) <= 9 or f[9] == "0":
            continue
        tx, _, rx = f[4].partition(":")
        out.append(NetSocket(address(f[1]), address(f[2]), int(f[3], 16), int(tx, 16), int(rx, 16),
                             int(f[9])))
    return out


def parse_listening(text: str, family: int) -> dict[int, int]:
    """Inode -> family of the listening sockets in /proc/net/tcp{,6} text."""
    return {s.inode: family for s in parse_net_sockets(text) if s.state == TCP_LISTEN}


def parse_igmp(text: str) -> list[tuple[str, int, str]]:
    """(group, ifindex, device) of /proc/net/igmp text (groups in the host's byte order)."""
    from _socket import AF_INET, inet_ntop

    out, dev = [], None
    for line in text.splitlines()[1:]:
        fields = line.split()
        if not fields:
            continue
        if not line[0].isspace():  # "1	lo        :     2      V3"
            dev = (int(fields[0]), fields[1].rstrip(":"))
        elif dev is not None and len(fields[0]) == 8:
            group = inet_ntop(AF_INET, int(fields[0], 16).to_bytes(4, "little"))
            out.append((group, dev[0], dev[1]))
    return out


def parse_igmp6(text: str) -> list[tuple[str, int, str]]:
    """(group, ifindex, device) of /proc/net/igmp6 text."""
    from _socket import AF_INET6, inet_ntop

    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and len(fields[2]) == 32:
            out.append((inet_ntop(AF_INET6, bytes.fromhex(fields[2])), int(fields[0]), fields[1]))
    return out


def read_net_text(pid: int, name: str) -> str:
    """The text of /proc/PID/net/NAME; "" when the namespace has no such table
    (no IPv6...)."""
    if name not in ("tcp", "tcp6", "udp", "udp6", "igmp", "igmp6"):
        raise ValueError(name)
    try:
        with open(f"/proc/{pid}/net/{name}") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def read_net_sockets(pid: int, *names: str) -> list[NetSocket]:
    """The sockets of the tables `names` ("tcp", "tcp6"...) of PID's network namespace."""
    return [s for name in names for s in parse_net_sockets(read_net_text(pid, name))]


def read_groups(pid: int, family: int) -> list[tuple[str, int, str]]:
    from _socket import AF_INET6

    if family == AF_INET6:
        return parse_igmp6(read_net_text(pid, "igmp6"))
    return parse_igmp(read_net_text(pid, "igmp"))


def netns_of(pid: int) -> int:
    import os

    return os.stat(f"/proc/{pid}/ns/net").st_ino
