"""Target of test_fast_copies: state each copy must have of its own, checked by itself.

    python fastcopy_target.py DATAFILE [--threads N] [--listen PORT] [--mib M] [--children N]
                              [--sparse S]

Holds M MiB of patterned memory, DATAFILE open for reading (16 bytes read:
offset 16), a pipe of its own with 4 bytes in it, an eventfd (count 5) in an
epoll set, optionally N worker threads counting and a TCP socket listening
on PORT (a thread answers each connection with "<pid> <marker>"), and N
child processes (forked first: they hold all of that too) that each write
"<ppid> <pid>" into a pipe to the root every 20 ms, and exit when their
parent changes; S MiB more of private memory of which only one page per 2 MiB
is written.

SIGUSR1: prints `STATE ...` (what it sees: its PID, the marker, the file
offset, bytes in its pipe, the eventfd count, the threads' progress, the
memory checksum) — or `STATE FAIL ...` when something is not as it must be.
SIGUSR2: changes its state: marker + 1, 100 more bytes read from DATAFILE,
one byte read from its pipe, its memory's first byte of each MiB written.
"""

import argparse
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import zlib

p = argparse.ArgumentParser()
p.add_argument("datafile")
p.add_argument("--threads", type=int, default=0)
p.add_argument("--listen", type=int, default=0)
p.add_argument("--mib", type=int, default=8)
p.add_argument("--children", type=int, default=0)
p.add_argument("--sparse", type=int, default=0, help="MiB of private memory with one page in 512 written")
p.add_argument("--mapfile", help="a file mapped private (copy-on-write), its fd closed")
args = p.parse_args()

MIB = 1 << 20
memory = bytearray(args.mib * MIB)
for i in range(0, len(memory), 4096):
    memory[i:i + 8] = struct.pack("<Q", i * 2654435761 & 0xFFFFFFFFFFFFFFFF)
pristine_crc = zlib.crc32(memory)
if args.sparse:
    import mmap

    sparse = mmap.mmap(-1, args.sparse * MIB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(0, len(sparse), 2 * MIB):
        sparse[i] = 1
if args.mapfile:
    import mmap

    with open(args.mapfile, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # its pages read when touched
marker = 0
data = os.open(args.datafile, os.O_RDONLY)
os.read(data, 16)
rfd, wfd = os.pipe()
os.write(wfd, b"abcd")
efd = os.eventfd(5, os.EFD_NONBLOCK)
ep = select.epoll()
ep.register(efd, select.EPOLLIN)
counters = [0] * args.threads
children = {}  # pid -> read end of its pipe
for _ in range(args.children):
    r, w = os.pipe()
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        os.close(r)
        while os.getppid() == parent:
            os.write(w, f"{os.getppid()} {os.getpid()}\n".encode())
            time.sleep(0.02)
        os._exit(0)
    os.close(w)
    os.set_blocking(r, False)
    children[child] = r


def work(i: int) -> None:
    while True:
        counters[i] += 1
        time.sleep(0.005)


for i in range(args.threads):
    threading.Thread(target=work, args=(i,), daemon=True).start()

if args.listen:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.listen))
    srv.listen(8)

    def answer() -> None:
        while True:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(f"{os.getpid()} {marker}\n".encode())

    threading.Thread(target=answer, daemon=True).start()

asked = {"usr1": False, "usr2": False}
signal.signal(signal.SIGUSR1, lambda s, f: asked.__setitem__("usr1", True))
signal.signal(signal.SIGUSR2, lambda s, f: asked.__setitem__("usr2", True))


def state() -> str:
    bad = []
    before = list(counters)
    time.sleep(0.05)
    stuck = [i for i, (a, b) in enumerate(zip(before, counters)) if b <= a]
    if stuck:
        bad.append(f"threads {stuck} do not run")
    alive = threading.active_count() - 1
    if alive != args.threads + (1 if args.listen else 0):
        bad.append(f"{alive} threads alive")
    events = ep.poll(0)
    if events != [(efd, select.EPOLLIN)]:
        bad.append(f"epoll says {events}")
    count = struct.unpack("<Q", os.read(efd, 8))[0]
    os.write(efd, struct.pack("<Q", count))  # as it was
    import fcntl
    import termios

    for child, r in children.items():
        if os.waitpid(child, os.WNOHANG) != (0, 0):
            bad.append(f"child {child} ended")
            continue
        try:
            while os.read(r, 65536):  # what it wrote so far
                pass
        except BlockingIOError:
            pass
        line = b""
        deadline = time.monotonic() + 2
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            try:
                line += os.read(r, 64)
            except BlockingIOError:
                time.sleep(0.005)
        said = line.decode().split("\n")[-2].split() if line.endswith(b"\n") else []
        if said != [str(os.getpid()), str(child)]:
            bad.append(f"child {child} says {line!r}")

    in_pipe = struct.unpack("i", fcntl.ioctl(rfd, termios.FIONREAD, b"\0\0\0\0"))[0]
    crc = zlib.crc32(memory)
    offset = os.lseek(data, 0, os.SEEK_CUR)
    verdict = f"FAIL {'; '.join(bad)}" if bad else "ok"
    return (f"STATE {verdict} pid={os.getpid()} marker={marker} offset={offset} pipe={in_pipe} "
            f"eventfd={count} memory={'pristine' if crc == pristine_crc else 'changed'} "
            f"children={','.join(map(str, sorted(children)))}")


def change() -> None:
    global marker
    marker += 1
    os.read(data, 100)
    os.read(rfd, 1)
    for i in range(0, len(memory), MIB):
        memory[i] ^= 0xFF


print("READY", flush=True)
while True:
    if asked["usr2"]:
        asked["usr2"] = False
        change()
        print("CHANGED", flush=True)
    if asked["usr1"]:
        asked["usr1"] = False
        try:
            print(state(), flush=True)
        except Exception as e:  # the verdict is the test's
            print(f"STATE FAIL exception {e!r}", flush=True)
    time.sleep(0.01)
    sys.stdout.flush()
