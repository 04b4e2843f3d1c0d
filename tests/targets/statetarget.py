"""Target for task state, files and memory kinds.  argv[1]: a scratch directory.

Sets up state, prints READY, then sleeps in a loop.  On SIGUSR1 it checks
everything it set up and prints `CHECK ok` or `CHECK FAIL <what>`.
"""

import ctypes
import mmap
import os
import resource
import signal
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PAGE = 4096
PROT_NONE, PROT_READ, PROT_WRITE = 0, 1, 2
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20

work = sys.argv[1]
os.chdir(work)
os.umask(0o027)
resource.setrlimit(resource.RLIMIT_NOFILE, (777, 4096))
resource.setrlimit(resource.RLIMIT_CORE, (0, 12345678))
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGQUIT, signal.SIG_IGN)
with open("/proc/self/comm", "w") as f:
    f.write("state-target")

# Files: an O_APPEND log, a file read part-way, a dup sharing its offset,
# a close-on-exec fd and /dev/null.
appender = os.open("append.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.write(appender, b"first\n")
with open("data.bin", "wb") as f:
    f.write(bytes(range(256)) * 64)
reader = os.open("data.bin", os.O_RDONLY)
os.lseek(reader, 1000, os.SEEK_SET)
shared = os.dup(reader)
os.set_inheritable(shared, True)  # dup() gives a non-cloexec fd; keep it so
cloexec = os.open("data.bin", os.O_RDONLY | os.O_CLOEXEC)
devnull = os.open("/dev/null", os.O_RDWR)

# Memory: a shared file mapping written through, a sparse region, a PROT_NONE
# reservation, and pages with content that were made PROT_NONE.
with open("shared.map", "wb") as f:
    f.write(b"\0" * 4 * PAGE)
shared_fd = os.open("shared.map", os.O_RDWR)
shared_map = mmap.mmap(shared_fd, 4 * PAGE, mmap.MAP_SHARED)
shared_map[:5] = b"hello"

SPARSE = 64 << 20
sparse = mmap.mmap(-1, SPARSE, mmap.MAP_PRIVATE)
for i in range(0, SPARSE, 1 << 20):  # one page in every 256
    sparse[i : i + 8] = i.to_bytes(8, "little")

reserved = libc.mmap(None, 16 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
hidden = libc.mmap(None, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
ctypes.memmove(hidden, b"secret" * 100, 600)
assert libc.mprotect(hidden, 2 * PAGE, PROT_NONE) == 0

flag = False


def on_usr1(sig, frame):
    global flag
    flag = True


signal.signal(signal.SIGUSR1, on_usr1)  # before READY: a check may come at once
print(f"READY sparse={SPARSE} reserved={reserved:#x} hidden={hidden:#x}", flush=True)


def check() -> list[str]:
    bad = []
    if os.getcwd() != work:
        bad.append(f"cwd {os.getcwd()}")
    old = os.umask(0o027)
    if old != 0o027:
        bad.append(f"umask {old:o}")
    if resource.getrlimit(resource.RLIMIT_NOFILE) != (777, 4096):
        bad.append(f"nofile {resource.getrlimit(resource.RLIMIT_NOFILE)}")
    if resource.getrlimit(resource.RLIMIT_CORE) != (0, 12345678):
        bad.append("core limit")
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN or signal.getsignal(signal.SIGQUIT) != signal.SIG_IGN:
        bad.append("ignored signals")
    with open("/proc/self/comm") as f:
        if f.read().strip() != "state-target":
            bad.append("comm")
    # files
    size = os.fstat(appender).st_size
    os.lseek(appender, 0, os.SEEK_SET)  # O_APPEND writes at the end whatever the offset
    os.write(appender, b"second\n")
    with open("append.txt", "rb") as f:
        content = f.read()
    if not (content.startswith(b"first\n") and len(content) == size + 7 and content.endswith(b"second\n")):
        bad.append("O_APPEND")
    if not os.get_blocking(appender) is True:
        bad.append("blocking flag")
    if os.lseek(reader, 0, os.SEEK_CUR) != 1000:
        bad.append(f"offset {os.lseek(reader, 0, os.SEEK_CUR)}")
    os.lseek(shared, 2000, os.SEEK_SET)  # moves the offset of the shared description
    if os.lseek(reader, 0, os.SEEK_CUR) != 2000:
        bad.append("dup no longer shares its offset")
    os.lseek(reader, 1000, os.SEEK_SET)
    if os.get_inheritable(cloexec) or not os.get_inheritable(shared):
        bad.append("close-on-exec flags")
    if os.read(devnull, 10) != b"" or os.write(devnull, b"x") != 1:
        bad.append("/dev/null")
    # memory
    shared_map[5:11] = b" world"
    with open("shared.map", "rb") as f:
        if f.read(11) != b"hello world":
            bad.append("shared file mapping does not write through")
    for i in range(0, SPARSE, 1 << 20):
        if int.from_bytes(sparse[i : i + 8], "little") != i:
            bad.append(f"sparse page {i}")
            break
    if libc.mprotect(hidden, 2 * PAGE, PROT_READ) != 0 or ctypes.string_at(hidden, 600) != b"secret" * 100:
        bad.append("PROT_NONE page content")
    libc.mprotect(hidden, 2 * PAGE, PROT_NONE)
    with open("/proc/self/maps") as f:
        if not any(line.startswith(f"{reserved:x}-") and " ---p " in line for line in f):
            bad.append("PROT_NONE reservation")
    return bad


n = 0
while True:
    n += 1
    if flag:
        flag = False
        bad = check()
        print(f"CHECK ok n={n}" if not bad else "CHECK FAIL " + "; ".join(bad), flush=True)
    time.sleep(0.02)
