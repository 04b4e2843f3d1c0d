"""Target holding deleted-but-open files.  argv[1]: a scratch directory;
argv[2] (optional): size in bytes of an extra deleted file "big.bin".

In DIR: victim.txt (content with a hole, mode 0640) open four times — fd A
(O_RDWR, offset 1234), B = dup(A), C (O_RDONLY, offset 77), D (O_WRONLY |
O_APPEND) — and sub/other.bin (O_RDONLY, offset 5); both unlinked.  Last,
mapped.bin, mapped privately (one copy-on-write page) and shared, with no
fd left.  keep.txt, a plain file left in place, at the highest fd.  Prints READY,
then on SIGUSR1 checks everything, prints `LINK <name> <readlink>` for
each deleted file and `CHECK ok counter=N` or `CHECK FAIL <what>`.
"""

import ctypes
import fcntl
import os
import stat
import sys
import selfcheck

work = sys.argv[1]
big_size = int(sys.argv[2]) if len(sys.argv) > 2 else 0
os.chdir(work)
with open("/proc/self/comm", "w") as f:
    f.write("del-files")

HOLE = 100 * 1024
CONTENT = bytes((i * 7 + 3) & 0xFF for i in range(10000)) + bytes(HOLE) + b"tail after the hole"
OTHER = b"other deleted file\n"

a = os.open("victim.txt", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.write(a, CONTENT[:10000])
os.lseek(a, 10000 + HOLE, os.SEEK_SET)  # leaves a hole
os.write(a, CONTENT[10000 + HOLE:])
os.fchmod(a, 0o640)
os.lseek(a, 1234, os.SEEK_SET)
b = os.dup(a)
c = os.open("victim.txt", os.O_RDONLY)
os.lseek(c, 77, os.SEEK_SET)
d = os.open("victim.txt", os.O_WRONLY | os.O_APPEND)
os.utime(a, ns=(1_000_000_000_123, 2_000_000_000_456))
os.unlink("victim.txt")

os.mkdir("sub")
e = os.open("sub/other.bin", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.write(e, OTHER)
os.close(e)
e = os.open("sub/other.bin", os.O_RDONLY)
os.lseek(e, 5, os.SEEK_SET)
os.unlink("sub/other.bin")

big = None
if big_size:
    big = os.open("big.bin", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(big, big_size)
    os.pwrite(big, b"big", big_size - 3)
    os.unlink("big.bin")

# mapped.bin: only mapped (no fd), privately with a copy-on-write page and
# shared (writable), then deleted.
PAGE = 4096
MAPPED = b"".join(bytes([65 + p]) * PAGE for p in range(3))
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
m = os.open("mapped.bin", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.write(m, MAPPED)
priv = libc.mmap(None, 3 * PAGE, 3, 0x02, m, 0)  # PROT_READ|PROT_WRITE, MAP_PRIVATE
shared = libc.mmap(None, 3 * PAGE, 3, 0x01, m, 0)  # MAP_SHARED
assert priv not in (None, ctypes.c_void_p(-1).value) and shared not in (None, ctypes.c_void_p(-1).value)
os.close(m)
os.unlink("mapped.bin")
ctypes.memmove(priv + PAGE, b"copy-on-write page", 18)

with open("keep.txt", "w") as f:
    f.write("kept\n")
keep = os.open("keep.txt", os.O_RDONLY)

selfcheck.listen()  # before READY: a check may come at once
print(f"READY fds a={a} b={b} c={c} d={d} e={e} big={big} keep={keep}", flush=True)
mtime = os.fstat(a).st_mtime_ns


def check_deleted(fd, name, content, mode, bad):
    st = os.fstat(fd)
    link = os.readlink(f"/proc/self/fd/{fd}")
    print(f"LINK {name} {link}", flush=True)
    if st.st_nlink != 0:
        bad.append(f"{name}: st_nlink {st.st_nlink}")
    if not link.endswith(" (deleted)"):
        bad.append(f"{name}: link {link!r} does not say (deleted)")
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode:
        bad.append(f"{name}: mode {st.st_mode:o}")
    if st.st_size != len(content):
        bad.append(f"{name}: size {st.st_size}, want {len(content)}")
    if os.pread(fd, len(content) + 10, 0) != content:
        bad.append(f"{name}: content differs")


def check() -> list[str]:
    bad = []
    check_deleted(a, "victim", CONTENT, 0o640, bad)
    check_deleted(e, "other", OTHER, 0o600, bad)
    if os.fstat(a).st_mtime_ns != mtime:
        bad.append(f"victim: mtime {os.fstat(a).st_mtime_ns}, want {mtime}")
    if os.fstat(a).st_blocks * 512 >= len(CONTENT):
        bad.append(f"victim: hole not kept ({os.fstat(a).st_blocks} blocks)")
    pos = {fd: os.lseek(fd, 0, os.SEEK_CUR) for fd in (a, b, c, e)}
    if pos != {a: 1234, b: 1234, c: 77, e: 5}:
        bad.append(f"offsets {pos}")
    # a and b share one description; c is another one of the same file
    os.lseek(a, 2000, os.SEEK_SET)
    if os.lseek(b, 0, os.SEEK_CUR) != 2000 or os.lseek(c, 0, os.SEEK_CUR) != 77:
        bad.append("a and b do not share their offset, or c does")
    os.lseek(a, 1234, os.SEEK_SET)
    if len({os.fstat(fd).st_ino for fd in (a, b, c, d)}) != 1:
        bad.append("victim fds are on different files")
    flags = {fd: fcntl.fcntl(fd, fcntl.F_GETFL) for fd in (a, c, d)}
    acc = {fd: fl & 3 for fd, fl in flags.items()}
    if acc != {a: os.O_RDWR, c: os.O_RDONLY, d: os.O_WRONLY} or not flags[d] & os.O_APPEND:
        bad.append(f"flags {flags}")
    # the descriptions are on one file: an append through d is seen through c
    os.write(d, b"!")
    if os.pread(c, 2, len(CONTENT) - 1) != CONTENT[-1:] + b"!":
        bad.append("a write through d is not seen through c")
    os.ftruncate(a, len(CONTENT))
    os.utime(a, ns=(1_000_000_000_123, mtime))
    # the deleted mapped file: private copy-on-write page kept, other pages
    # still the file's (a write through the shared mapping shows in them)
    if ctypes.string_at(priv, 3 * PAGE) != MAPPED[:PAGE] + b"copy-on-write page" + MAPPED[PAGE + 18:]:
        bad.append("private mapping of mapped.bin differs")
    if ctypes.string_at(shared, 3 * PAGE) != MAPPED:
        bad.append("shared mapping of mapped.bin differs")
    ctypes.memmove(shared + 2 * PAGE, b"through shared", 14)
    if ctypes.string_at(priv + 2 * PAGE, 14) != b"through shared":
        bad.append("the two mappings of mapped.bin are not one file")
    ctypes.memmove(shared + 2 * PAGE, MAPPED[2 * PAGE:2 * PAGE + 14], 14)
    with open("/proc/self/maps") as f:
        maps = [ln.split(None, 5)[-1].strip() for ln in f if "mapped.bin" in ln]
    if len(maps) != 2 or not all(ln.endswith(" (deleted)") for ln in maps):
        bad.append(f"mapped.bin in /proc/self/maps: {maps}")
    print(f"LINK mapped {maps[0] if maps else None}", flush=True)
    if big is not None and os.fstat(big).st_nlink != 0:
        bad.append("big: not deleted")
    return bad


selfcheck.serve(check)
