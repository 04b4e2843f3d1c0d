"""Memory that changes a little from one dump to the next, and memory that is all zero.

A 32 MiB private anonymous buffer of 128 pieces of 256 KiB, each piece filled
with a pattern of its index and version; a 32 MiB buffer written and then
zeroed (touched, all zero) but for one page in its middle.  On SIGUSR2 the
generation goes up: pieces 5, 6 and 77 get a new version, piece 30 is zeroed
and piece 3 of the zero buffer is written; a few single pages of other pieces
are rewritten in place (MARKS: which ones depends on the generation); GEN <n>
is printed.  On SIGUSR1
every piece of both buffers is checked against what it must hold (the
selfcheck line), after a line `STATE gen=<n>`.
"""

import ctypes
import signal

import selfcheck

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
PIECE, PIECES = 256 << 10, 128
SIZE = PIECE * PIECES
MIDDLE = SIZE // 2 + 8192  # the one page of the zero buffer that is not zero


def buffer() -> int:
    a = libc.mmap(None, SIZE, 3, 0x22, -1, 0)
    assert a not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
    return a


def content(index: int, version: int) -> bytes:
    if version < 0:
        return bytes(PIECE)
    unit = b"piece %05d version %03d;" % (index, version)
    return (unit * (PIECE // len(unit) + 1))[:PIECE]


PAGE = 4096
# generation -> the (piece, page) of the data buffer it rewrites in place
MARKS = {1: ((40, 10), (40, 11), (41, 0)), 2: ((40, 30), (90, 63)), 3: ((41, 1), (40, 11))}


def mark(piece: int, page: int, gen_: int) -> bytes:
    unit = b"mark %05d/%02d gen %03d;" % (piece, page, gen_)
    return (unit * (PAGE // len(unit) + 1))[:PAGE]


data, zeros = buffer(), buffer()
marked: dict[tuple[int, int], int] = {}  # (piece, page) -> the generation that wrote it
version = {i: 0 for i in range(PIECES)}  # -1: all zero
zero_version = {i: -1 for i in range(PIECES)}
for i in range(PIECES):
    ctypes.memmove(data + i * PIECE, content(i, 0), PIECE)
ctypes.memset(zeros, 0x5A, SIZE)  # touched ...
ctypes.memset(zeros, 0, SIZE)  # ... and zeroed again
ctypes.memmove(zeros + MIDDLE, b"not zero" * 512, 4096)
gen = 0


def advance(*_):
    global gen
    gen += 1
    for i in (5, 6, 77):
        version[i] = gen
        ctypes.memmove(data + i * PIECE, content(i, gen), PIECE)
    version[30] = -1
    ctypes.memset(data + 30 * PIECE, 0, PIECE)
    zero_version[3] = gen
    ctypes.memmove(zeros + 3 * PIECE, content(1000 + 3, gen), PIECE)
    for piece, page in MARKS.get(gen, ()):
        marked[(piece, page)] = gen
        ctypes.memmove(data + piece * PIECE + page * PAGE, mark(piece, page, gen), PAGE)
    print(f"GEN {gen}", flush=True)


def check():
    print(f"STATE gen={gen}", flush=True)
    bad = []
    for i, v in version.items():
        want = bytearray(content(i, v))
        for (piece, page), g in marked.items():
            if piece == i:
                want[page * PAGE:(page + 1) * PAGE] = mark(piece, page, g)
        if ctypes.string_at(data + i * PIECE, PIECE) != want:
            bad.append(f"piece {i} is not version {v} with its marks")
    for i, v in zero_version.items():
        want = content(1000 + i, v)
        if i * PIECE <= MIDDLE < (i + 1) * PIECE:
            at = MIDDLE - i * PIECE
            want = want[:at] + b"not zero" * 512 + want[at + 4096:]
        if ctypes.string_at(zeros + i * PIECE, PIECE) != want:
            bad.append(f"zero buffer piece {i} is not version {v}")
    return bad[:5]


signal.signal(signal.SIGUSR2, advance)
selfcheck.listen()
print(f"READY data={data:#x} zeros={zeros:#x}", flush=True)
selfcheck.serve(check)
