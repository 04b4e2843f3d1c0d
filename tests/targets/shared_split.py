"""Shared anonymous memory split into several VMAs, and mapped at different
offsets by parent and child.

Region X (4 pages, MAP_SHARED|MAP_ANONYMOUS): page 1 is made read-only, so
X is three VMAs of one object (offsets 0, 1, 2 pages).  Region Y (4 pages)
is shared with the child; after the fork the parent unmaps Y's first page,
so the parent maps Y from offset 1 page and the child maps all of it.

Every 10 ms the parent writes its counter into X[2] and Y[2]; the child
copies what it sees of X[2] into X[0] (another VMA of the same object) and
of Y[2] into Y[3], checks the pattern in Y[0] (a page only the child maps
now) and in X[1], and writes its verdict into X[3].  The parent's check
waits until both echoes have caught up with its counter and reads the
child's verdict: so both directions of the sharing are seen, across every
VMA, after restore.

Region G was grown with mremap from 2 to 4 pages: its object stays 2 pages
long (touching the rest would raise SIGBUS), and the check reads the 2
pages.  Region H is a sparse 64 GiB MAP_NORESERVE region, far more than
the machine has, with data at its start, middle and end.
"""

import ctypes
import os
import time

import selfcheck

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
MREMAP_MAYMOVE, MAP_NORESERVE = 1, 0x4000
HUGE = 64 << 30
PAGE = 4096
PROT_READ, PROT_RW = 1, 3
MAP_SHARED_ANON = 0x01 | 0x20
SLOTS = PAGE // 8


def region(pages: int, flags: int = 0) -> int:
    addr = libc.mmap(None, pages * PAGE, PROT_RW, MAP_SHARED_ANON | flags, -1, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    return addr


def slots(addr: int, page: int):
    return (ctypes.c_uint64 * SLOTS).from_address(addr + page * PAGE)


X, Y = region(4), region(4)
x = [slots(X, i) for i in range(4)]
y = [slots(Y, i) for i in range(4)]
for i in range(SLOTS):
    x[1][i] = 0x1111_0000 + i
    y[0][i] = 0x2222_0000 + i
assert libc.mprotect(X + PAGE, PAGE, PROT_READ) == 0
G = region(2)
ctypes.memmove(G, b"G0", 2)
ctypes.memmove(G + PAGE, b"G1", 2)
G = libc.mremap(G, 2 * PAGE, 4 * PAGE, MREMAP_MAYMOVE)
assert G not in (None, ctypes.c_void_p(-1).value)
H = region(HUGE // PAGE, MAP_NORESERVE)
for off in (0, HUGE // 2, HUGE - PAGE):
    ctypes.memmove(H + off, b"H%d" % off, len(b"H%d" % off))
parent = os.getpid()

child = os.fork()
if child == 0:
    try:
        while os.getppid() == parent:
            intact = all(y[0][i] == 0x2222_0000 + i for i in range(SLOTS)) and \
                all(x[1][i] == 0x1111_0000 + i for i in range(SLOTS))
            x[3][0] = 1 if intact else 2
            x[0][1] = x[2][0]
            y[3][1] = y[2][0]
            time.sleep(0.01)
    finally:
        os._exit(0)

assert libc.munmap(Y, PAGE) == 0
y = [None] + y[1:]
counter = 0


def check():
    global counter
    bad = []
    for i in range(SLOTS):
        if x[1][i] != 0x1111_0000 + i:
            bad.append(f"X[1] slot {i} is {x[1][i]:#x}")
            break
    if ctypes.string_at(G, 2) + ctypes.string_at(G + PAGE, 2) != b"G0G1":
        bad.append("region G lost its data")
    for off in (0, HUGE // 2, HUGE - PAGE):
        want = b"H%d" % off
        if ctypes.string_at(H + off, len(want)) != want:
            bad.append(f"region H at {off:#x} holds {ctypes.string_at(H + off, len(want))!r}")
    counter += 1
    x[2][0] = y[2][0] = counter
    deadline = time.monotonic() + 5
    while (x[0][1], y[3][1]) != (counter, counter) and time.monotonic() < deadline:
        time.sleep(0.01)
    if x[0][1] != counter:
        bad.append(f"the child's echo through X[0] is {x[0][1]}, not {counter}")
    if y[3][1] != counter:
        bad.append(f"the child's echo through Y[3] is {y[3][1]}, not {counter}")
    if x[3][0] != 1:
        bad.append(f"the child's verdict on Y[0] and X[1] is {x[3][0]}")
    x[3][0] = 0  # the child must write it again before the next check
    deadline = time.monotonic() + 5
    while x[3][0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if x[3][0] != 1:
        bad.append("the child stopped writing its verdict")
    return bad


selfcheck.listen()  # before READY: a check may come at once
print("READY", child, flush=True)
selfcheck.serve(check)
