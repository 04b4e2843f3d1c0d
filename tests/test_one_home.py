"""One home for the machine's numbers and its C library (issue 10, item 7): syscall
numbers only in inject/nr.py, the page size and the libc handle (with every
prototype) only in arch.py.  A module that writes one again (a `SYS_x = N` or
`PAGE = 4096` line, a `ctypes.CDLL(None...)`) fails this test, which names it."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).parent.parent / "src" / "pyckpt"
# pyckpt.hooks runs inside the target's Python: importing inject/ there would load
# ptrace and the C helper into the target, so it keeps the one number it needs.
INSIDE_THE_TARGET = {"hooks.py"}


def test_syscall_numbers_page_size_and_libc_have_one_home():
    offenders = []
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC).as_posix()
        if rel in INSIDE_THE_TARGET:
            continue
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if re.match(r"^(\w+, )*SYS_\w+(, \w+)* = ", line) and rel != "inject/nr.py":
                offenders.append(f"{rel}:{n}: {line.strip()} (use inject/nr.py)")
            if re.match(r"^PAGE(_SIZE)? = ", line) and rel != "arch.py":
                offenders.append(f"{rel}:{n}: {line.strip()} (use arch.PAGE)")
            if "CDLL(None" in line and rel != "arch.py":
                offenders.append(f"{rel}:{n}: {line.strip()} (use arch.libc)")
    assert not offenders, "\n".join(offenders)


# --- /proc tables are read in proc/ (issue 10, item 7) -------------------------------------
#
# Only src/pyckpt/proc/ opens a /proc *table* (text the kernel formats: stat, status,
# mountinfo, net/tcp, timers, sysvipc/*, sys/*...): each has one parser there, unit-tested
# on captured text in test_proc_parsers.py.  Other modules may open /proc paths that are
# handles, not tables: an fd (fd/N, a namespace under ns/, a mapping under map_files/) or
# the memory files (mem, pagemap), read as bytes at offsets.  Listing a directory
# (os.listdir) or stat/readlink of a link (exe, cwd, root) opens no table either.
# Exempt: hooks.py (see INSIDE_THE_TARGET: it runs in the target's Python and must not
# import pyckpt's machinery, so it reads /proc/self/status itself); code handed to another
# interpreter as a string (tcpconn's HOLDER program) is not Python of this module and is
# not seen by the parse below.
import ast  # noqa: E402

HANDLES = re.compile(r"^/proc/(self|thread-self|\{\})/(fd|map_files|ns)/|^/proc/(self|\{\})/(mem|pagemap)$")
OPENERS = {"open", "os.open", "io.open", "builtins.open", "os.fdopen"}


def _template(node: ast.AST, names: dict[str, str]) -> str | None:
    """The text of a path expression with {} for what is computed, if it is a literal
    (a string, an f-string, a name bound to one, or one + something); else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _template(node.left, names)
        return None if left is None else left + "{}"
    return None


def proc_table_opens(source: str) -> list[tuple[int, str]]:
    """(line, path) of every open() of a /proc path that is not a handle."""
    tree = ast.parse(source)
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            t = _template(node.value, {})
            if t is not None:
                names[node.targets[0].id] = t
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        if node.args and (func in OPENERS or func.endswith(("Path.read_text", "Path.read_bytes"))):
            path = _template(node.args[0], names)
        elif isinstance(node.func, ast.Attribute) and node.func.attr in ("read_text", "read_bytes", "open") \
                and isinstance(node.func.value, ast.Call) and ast.unparse(node.func.value.func).endswith("Path") \
                and node.func.value.args:
            path = _template(node.func.value.args[0], names)
        else:
            continue
        if path is not None and path.startswith("/proc") and not HANDLES.match(path):
            out.append((node.lineno, path))
    return out


def test_proc_tables_are_read_in_proc_only():
    offenders = []
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC).as_posix()
        if rel.startswith("proc/") or rel in INSIDE_THE_TARGET:
            continue
        for n, path in proc_table_opens(p.read_text()):
            offenders.append(f"{rel}:{n}: opens {path} (parse it in proc/, read it through proc)")
    assert not offenders, "\n".join(offenders)


def test_the_check_sees_every_way_of_opening_a_table():
    """The check above must not pass for want of looking: it flags each form."""
    src = '''
import os, pathlib
T = "/proc/sysvipc/shm"
open(f"/proc/{pid}/stat")
open("/proc/locks")
open(T, "w")
os.open(f"/proc/{pid}/net/" + name, 0)
pathlib.Path(f"/proc/{pid}/mountinfo").read_text()
open(f"/proc/{pid}/fd/{fd}")
os.open(f"/proc/self/map_files/{a:x}-{b:x}", 0)
open(f"/proc/{pid}/mem", "rb")
os.open(f"/proc/{pid}/ns/ipc", 0)
os.listdir(f"/proc/{pid}/fd")
'''
    assert [n for n, _ in proc_table_opens(src)] == [4, 5, 6, 7, 8]


# A process with several TCP connections to itself, UDP sockets and an inotify fd
# watching three directories: each needed the network tables or mountinfo, per fd.
MANY_SOCKETS = r"""
import ctypes, os, socket, sys, time
keep = []
for i in range(6):
    l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(4)
    c = socket.create_connection(l.getsockname()); a, _ = l.accept(); keep += [l, c, a]
for i in range(6):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); keep.append(u)
libc = ctypes.CDLL(None, use_errno=True)
ino = libc.inotify_init1(os.O_CLOEXEC)
for d in sys.argv[1:]:
    assert libc.inotify_add_watch(ino, d.encode(), 0x100) > 0  # IN_CREATE
print("READY", flush=True)
while True:
    time.sleep(1)
"""


def test_each_table_is_read_once_per_dump(spawn, tmp_path, monkeypatch):
    import sys
    from collections import Counter

    import pyckpt
    from pyckpt.proc import net, tables

    dirs = [tmp_path / f"w{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    t = spawn([sys.executable, "-c", MANY_SOCKETS, *map(str, dirs)])
    t.wait_for("^READY")
    reads: Counter = Counter()
    real_net, real_mountinfo = net.read_net_text, tables.read_mountinfo

    def counted_net(pid, name):
        reads[name] += 1
        return real_net(pid, name)

    def counted_mountinfo(pid):
        reads["mountinfo", pid] += 1
        return real_mountinfo(pid)

    monkeypatch.setattr(net, "read_net_text", counted_net)
    monkeypatch.setattr(tables, "read_mountinfo", counted_mountinfo)
    for n in (1, 2):  # the second dump reads them again: no cache outlives a dump
        img = pyckpt.dump(t.pid, tmp_path / f"img{n}")
        (ino,) = [r for r in img.records if type(r).__name__ == "InotifyRecord"]
        assert sorted(w.path for w in ino.watches) == sorted(map(str, dirs))
        # (TCP connections are paired from the sockets themselves: no tcp/tcp6 table)
        assert reads == Counter({"udp": n, "udp6": n, "igmp": n, ("mountinfo", t.pid): n}), reads
    assert t.alive()
