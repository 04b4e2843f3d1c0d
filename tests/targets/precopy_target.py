"""Memory that changes between pre-copy's pass 1 and the freeze, checked from inside.

Private anonymous regions of 64 pages, each page holding a pattern of its
region and index.  On SIGUSR2 (sent by the test between pass 1 and the
freeze) the target changes them, the ways a program does, and prints
MUTATED:
  A: pages 3 and 40 rewritten;
  B: pages 10-19 dropped (MADV_DONTNEED: they read as zeros);
  C: unmapped and mapped again at the same address with other content;
  D: moved with mremap onto E's address (E's pages go), and D's old place
     mapped again with other content;
  G: pages 0-7 dropped and read again (the zero page);
  H: split by mprotect (pages 8-15 read-only);
  A page 50: written by the kernel, read(2) from a pipe into it;
  plus a counter page written all the time.
On SIGUSR1 it checks every page against what it must hold now and prints
the selfcheck line.
"""

import ctypes
import os
import signal
import time

import selfcheck

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PAGE, N = 4096, 64
PROT_READ, PROT_RW = 1, 3
MAP_PRIVATE_ANON, MAP_FIXED = 0x22, 0x10
MADV_DONTNEED = 4
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
FAILED = ctypes.c_void_p(-1).value


def region(addr=None, fixed=False) -> int:
    a = libc.mmap(addr, N * PAGE, PROT_RW, MAP_PRIVATE_ANON | (MAP_FIXED if fixed else 0), -1, 0)
    assert a not in (None, FAILED), ctypes.get_errno()
    return a


def stamp(addr: int, tag: bytes, page: int) -> None:
    data = b"%s:%04d:" % (tag, page)
    ctypes.memmove(addr + page * PAGE, data * (PAGE // len(data)), (PAGE // len(data)) * len(data))


def page_of(addr: int, page: int) -> bytes:
    return ctypes.string_at(addr + page * PAGE, 16)


want: dict[tuple[str, int], bytes] = {}  # (region, page) -> what its first 16 bytes must be
regions: dict[str, int] = {}
for name in "ABCDEGH":
    regions[name] = region()
    for i in range(N):
        stamp(regions[name], name.encode(), i)
        want[(name, i)] = page_of(regions[name], i)
counter = region()
mutated = False


def mutate(*_):
    global mutated
    a, b, c, d, e, g, h = (regions[k] for k in "ABCDEGH")
    for i in (3, 40):
        stamp(a, b"a", i)
        want[("A", i)] = page_of(a, i)
    libc.madvise(b + 10 * PAGE, 10 * PAGE, MADV_DONTNEED)
    for i in range(10, 20):
        want[("B", i)] = bytes(16)
    libc.munmap(c, N * PAGE)
    region(c, fixed=True)
    for i in range(N):
        stamp(c, b"c", i)
        want[("C", i)] = page_of(c, i)
    moved = libc.mremap(d, N * PAGE, N * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, e)
    assert moved == e, ctypes.get_errno()
    for i in range(N):
        want[("E", i)] = want[("D", i)]  # E now holds D's pages
    region(d, fixed=True)
    for i in range(N):
        stamp(d, b"d", i)
        want[("D", i)] = page_of(d, i)
    libc.madvise(g, 8 * PAGE, MADV_DONTNEED)
    for i in range(8):
        page_of(g, i)  # read: the zero page
        want[("G", i)] = bytes(16)
    libc.mprotect(h + 8 * PAGE, 8 * PAGE, PROT_READ)
    # the kernel writes into a protected page on the process's behalf (read(2))
    r, w = os.pipe()
    os.write(w, b"K" * 16)
    got = libc.read(r, ctypes.c_void_p(a + 50 * PAGE), 16)
    assert got == 16, f"read(2) into a tracked page returned {got} (errno {ctypes.get_errno()})"
    os.close(r)
    os.close(w)
    want[("A", 50)] = b"K" * 16
    mutated = True
    print("MUTATED", flush=True)


signal.signal(signal.SIGUSR2, mutate)


def check():
    bad = [f"{k}{i}: {page_of(regions[k], i)!r}, want {v!r}" for (k, i), v in want.items()
           if page_of(regions[k], i) != v]
    return bad[:5] + ([] if mutated else ["never mutated"])


class _Ticking:  # the counter page is written all the time
    @staticmethod
    def sleep(s):
        ctypes.c_uint64.from_address(counter).value += 1
        time.sleep(s)


selfcheck.listen()
print("READY", flush=True)
selfcheck.time = _Ticking
selfcheck.serve(check)
