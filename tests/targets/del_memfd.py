"""Target holding memfds.

m1 "pyckpt test memfd" (MFD_ALLOW_SEALING, 20000 bytes, offset 333, seals
F_SEAL_SHRINK | F_SEAL_GROW) and m1b, a second description of it opened
through /proc/self/fd (O_RDONLY, offset 4097); m2 "plain" (no sealing
allowed: F_SEAL_SEAL, O_NONBLOCK set on its description); m3 "frozen"
(F_SEAL_WRITE | F_SEAL_SEAL, mode 0600); m4 "noexec" (MFD_NOEXEC_SEAL: mode
0666, F_SEAL_EXEC).  m1 is also mapped shared and privately (one
copy-on-write page); "maponly" is a memfd that is only mapped.  Prints READY, then on SIGUSR1
checks everything and prints `CHECK ok counter=N` or `CHECK FAIL <what>`.
"""

import ctypes
import errno
import fcntl
import os
import stat
import selfcheck

with open("/proc/self/comm", "w") as f:
    f.write("del-memfd")

C1 = bytes((i * 13 + 5) & 0xFF for i in range(20000))
C2 = b"plain memfd"
C3 = b"frozen content" * 300
S1 = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
S3 = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
MFD_NOEXEC_SEAL, F_SEAL_EXEC = 8, 0x20

m1 = os.memfd_create("pyckpt test memfd", os.MFD_ALLOW_SEALING)
os.write(m1, C1)
os.lseek(m1, 333, os.SEEK_SET)
fcntl.fcntl(m1, fcntl.F_ADD_SEALS, S1)
m1b = os.open(f"/proc/self/fd/{m1}", os.O_RDONLY)
os.lseek(m1b, 4097, os.SEEK_SET)

m2 = os.memfd_create("plain", 0)
os.write(m2, C2)
os.set_blocking(m2, False)

m3 = os.memfd_create("frozen", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
os.write(m3, C3)
os.fchmod(m3, 0o600)
fcntl.fcntl(m3, fcntl.F_ADD_SEALS, S3)

# Mappings: m1 shared (the same memfd as fd m1) and private with a
# copy-on-write page; "maponly", a memfd left only mapped (its fd closed).
PAGE = 4096
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]


def mmap(fd, length, flags):
    addr = libc.mmap(None, length, 3, flags, fd, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    return addr


shared1 = mmap(m1, 4 * PAGE, 0x01)
priv1 = mmap(m1, 4 * PAGE, 0x02)
ctypes.memmove(priv1 + PAGE, b"private copy", 12)
C5 = b"only mapped " * 1000
m5 = os.memfd_create("maponly", 0)
os.write(m5, C5)
map5 = mmap(m5, len(C5), 0x01)
os.close(m5)

m4 = os.memfd_create("noexec", MFD_NOEXEC_SEAL)
S4 = fcntl.fcntl(m4, fcntl.F_GET_SEALS)
assert S4 & F_SEAL_EXEC

selfcheck.listen()  # before READY: a check may come at once
print(f"READY m1={m1} m1b={m1b} m2={m2} m3={m3} m4={m4}", flush=True)


def fails_with(err, fn, *args) -> bool:
    try:
        fn(*args)
    except OSError as e:
        return e.errno == err
    return False


def check() -> list[str]:
    bad = []
    for fd, name, content, seals in ((m1, "pyckpt test memfd", C1, S1), (m1b, "pyckpt test memfd", C1, S1),
                                     (m2, "plain", C2, fcntl.F_SEAL_SEAL), (m3, "frozen", C3, S3)):
        link = os.readlink(f"/proc/self/fd/{fd}")
        if link != f"/memfd:{name} (deleted)":
            bad.append(f"fd {fd}: link {link!r}")
        got = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        if got != seals:
            bad.append(f"fd {fd}: seals {got:#x}, want {seals:#x}")
        if os.pread(fd, len(content) + 10, 0) != content:
            bad.append(f"fd {fd}: content differs")
    pos = {fd: os.lseek(fd, 0, os.SEEK_CUR) for fd in (m1, m1b, m2, m3)}
    if pos != {m1: 333, m1b: 4097, m2: len(C2), m3: len(C3)}:
        bad.append(f"offsets {pos}")
    if os.fstat(m1).st_ino != os.fstat(m1b).st_ino:
        bad.append("m1 and m1b are not one memfd")
    acc = {fd: fcntl.fcntl(fd, fcntl.F_GETFL) for fd in (m1, m1b, m2)}
    if acc[m1] & 3 != os.O_RDWR or acc[m1b] & 3 != os.O_RDONLY or not acc[m2] & os.O_NONBLOCK:
        bad.append(f"flags {acc}")
    if stat.S_IMODE(os.fstat(m4).st_mode) != 0o666 or fcntl.fcntl(m4, fcntl.F_GET_SEALS) != S4:
        bad.append(f"m4 mode {os.fstat(m4).st_mode:o} seals {fcntl.fcntl(m4, fcntl.F_GET_SEALS):#x}")
    if stat.S_IMODE(os.fstat(m3).st_mode) != 0o600:
        bad.append(f"m3 mode {os.fstat(m3).st_mode:o}")
    # the seals work
    if not fails_with(errno.EPERM, os.ftruncate, m1, 100):
        bad.append("m1 could shrink")
    if not fails_with(errno.EPERM, os.ftruncate, m1, len(C1) + 1):
        bad.append("m1 could grow")
    if not fails_with(errno.EPERM, fcntl.fcntl, m2, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE):
        bad.append("m2 could be sealed")
    if not fails_with(errno.EPERM, os.pwrite, m3, b"x", 0):
        bad.append("m3 could be written")
    # m1, m1b and the shared mapping are one memfd: a write through m1 shows
    # through m1b and the mapping, and one through the mapping through m1
    os.pwrite(m1, b"XYZ", 100)
    if os.pread(m1b, 3, 100) != b"XYZ" or ctypes.string_at(shared1 + 100, 3) != b"XYZ":
        bad.append("a write through m1 is not seen through m1b and its shared mapping")
    os.pwrite(m1, C1[100:103], 100)
    ctypes.memmove(shared1 + 200, b"ABC", 3)
    if os.pread(m1, 3, 200) != b"ABC":
        bad.append("a write through the shared mapping of m1 is not seen through m1")
    ctypes.memmove(shared1 + 200, C1[200:203], 3)
    want = C1[:PAGE] + b"private copy" + C1[PAGE + 12:4 * PAGE]
    if ctypes.string_at(priv1, 4 * PAGE) != want:
        bad.append("private mapping of m1 differs")
    if ctypes.string_at(map5, len(C5)) != C5:
        bad.append("maponly mapping differs")
    with open("/proc/self/maps") as f:
        names = [ln.split(None, 5)[-1].strip() for ln in f if "memfd:" in ln]
    if sorted(names) != ["/memfd:maponly (deleted)"] + ["/memfd:pyckpt test memfd (deleted)"] * 2:
        bad.append(f"memfd mappings {names}")
    return bad


selfcheck.serve(check)
