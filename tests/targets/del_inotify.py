"""Target holding an inotify instance.  argv[1]: a scratch directory.

Watches DIR/d1 (IN_CREATE) as wd 1, DIR/d2 (IN_CREATE | IN_DELETE) as wd 3
and DIR/watched.txt (IN_ATTRIB | IN_EXCL_UNLINK) as wd 6: the numbers in
between were used by watches removed again.  Prints READY, then on SIGUSR1
prints `PENDING <n>` (events queued before the check, read away), checks
its watches in /proc/self/fdinfo and that creating files in d1 and d2 and
chmod of watched.txt give events with the right wds, and prints
`CHECK ok counter=N` or `CHECK FAIL <what>`.
"""

import ctypes
import os
import select
import struct
import sys
import selfcheck

libc = ctypes.CDLL(None, use_errno=True)
IN_ATTRIB, IN_CREATE, IN_DELETE, IN_IGNORED = 0x4, 0x100, 0x200, 0x8000
IN_EXCL_UNLINK = 0x04000000
EVENT = struct.Struct("iIII")

work = sys.argv[1]
os.chdir(work)
with open("/proc/self/comm", "w") as f:
    f.write("del-inotify")
for d in ("d1", "d2", "gap"):
    os.mkdir(d)
with open("watched.txt", "w") as f:
    f.write("x")

ifd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
assert ifd >= 0


def add(path: str, mask: int) -> int:
    wd = libc.inotify_add_watch(ifd, path.encode(), mask)
    assert wd > 0, os.strerror(ctypes.get_errno())
    return wd


def rm(wd: int) -> None:
    assert libc.inotify_rm_watch(ifd, wd) == 0


def read_events(timeout: float = 0.0) -> list[tuple[int, int, str]]:
    if timeout and not select.select([ifd], [], [], timeout)[0]:
        return []
    out = []
    while True:
        try:
            buf = os.read(ifd, 65536)
        except BlockingIOError:
            return out
        pos = 0
        while pos < len(buf):
            wd, mask, _, n = EVENT.unpack_from(buf, pos)
            name = buf[pos + EVENT.size: pos + EVENT.size + n].rstrip(b"\0").decode()
            out.append((wd, mask, name))
            pos += EVENT.size + n


WANT = {}
WANT[add("d1", IN_CREATE)] = ("d1", IN_CREATE)
rm(add("gap", IN_CREATE))
WANT[add("d2", IN_CREATE | IN_DELETE)] = ("d2", IN_CREATE | IN_DELETE)
rm(add("gap", IN_CREATE))
rm(add("gap", IN_CREATE))
WANT[add("watched.txt", IN_ATTRIB | IN_EXCL_UNLINK)] = ("watched.txt", IN_ATTRIB | IN_EXCL_UNLINK)
assert sorted(WANT) == [1, 3, 6], WANT
assert all(m & IN_IGNORED for _, m, _ in read_events())

selfcheck.listen()  # before READY: a check may come at once
print(f"READY ifd={ifd} wds={sorted(WANT)}", flush=True)
rounds = 0


def expect(bad, what, want):
    got = read_events(2.0)
    got += read_events()
    if got != want:
        bad.append(f"{what}: events {got}, want {want}")


def check() -> list[str]:
    global rounds
    rounds += 1
    bad = []
    print(f"PENDING {len(read_events())}", flush=True)
    with open(f"/proc/self/fdinfo/{ifd}") as f:
        lines = [ln.split() for ln in f if ln.startswith("inotify ")]
    seen = {int(ln[1][3:]): int(ln[4][5:], 16) for ln in lines}
    if seen != {wd: mask for wd, (_, mask) in WANT.items()}:
        bad.append(f"fdinfo watches {seen}")
    flags = __import__("fcntl").fcntl(ifd, 3)
    if not flags & os.O_NONBLOCK:
        bad.append(f"flags {flags:o}")
    name = f"probe-{rounds}"
    open(f"d1/{name}", "w").close()
    expect(bad, "create in d1", [(1, IN_CREATE, name)])
    open(f"d2/{name}", "w").close()
    expect(bad, "create in d2", [(3, IN_CREATE, name)])
    os.chmod("watched.txt", 0o600 if rounds % 2 else 0o644)
    expect(bad, "chmod watched.txt", [(6, IN_ATTRIB, "")])
    os.unlink(f"d1/{name}")
    os.unlink(f"d2/{name}")
    expect(bad, "unlinks", [(3, IN_DELETE, name)])
    return bad


selfcheck.serve(check)
