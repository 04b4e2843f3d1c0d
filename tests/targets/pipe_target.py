"""Target for pipes and FIFOs.  argv: scenarios, any of
`unread`, `big`, `dups`, `packets`, `fifo=PATH`, `rdwr=FIFO_PATH`, `stdout`.

Each scenario sets up its pipe state; then the target prints READY (on
stderr) and sleeps in a loop.  On SIGUSR1 it checks every scenario — reads
the unread data and compares it with what it wrote, checks sizes, flags and
sharing, then writes more and reads it back — and prints `CHECK ok
counter=N` or `CHECK FAIL <what>` on stderr.  Checking consumes the data,
so the check is meant to run once per restored copy.
"""

import fcntl
import os
import signal
import sys
import termios
import time

F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed + (i >> 8)) & 0xFF for i in range(n))


def unread(fd: int) -> int:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


def read_exactly(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def write_all(fd: int, data: bytes) -> None:
    done = 0
    while done < len(data):
        done += os.write(fd, data[done:])


def drain_and_reuse(name: str, r: int, w: int, expected: bytes, bad: list) -> None:
    """Unread data equal to `expected`; then the pipe still carries new data."""
    if unread(r) != len(expected):
        bad.append(f"{name}: {unread(r)} bytes unread, expected {len(expected)}")
        return
    got = read_exactly(r, len(expected))
    if got != expected:
        first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), len(got))
        bad.append(f"{name}: unread data differs from byte {first}")
        return
    more = b"more data after restore " + name.encode()
    write_all(w, more)
    if read_exactly(r, len(more)) != more:
        bad.append(f"{name}: the pipe does not carry new data")


checks = []

for arg in sys.argv[1:]:
    if arg == "unread":
        # 10 KiB written, none read.
        r, w = os.pipe()
        data = pattern(10240, 1)
        write_all(w, data)
        state = {"expected": data}

        def check_unread(bad, r=r, w=w, state=state):
            if fcntl.fcntl(r, F_GETPIPE_SZ) != 65536:
                bad.append(f"unread: pipe size {fcntl.fcntl(r, F_GETPIPE_SZ)}")
            drain_and_reuse("unread", r, w, state["expected"], bad)
            state["expected"] = b""

        checks.append(check_unread)
        print(f"unread: fds {r} {w}", file=sys.stderr, flush=True)

    elif arg == "big":
        # A 1 MiB pipe holding 900 KiB, the first 1000 bytes already read.
        r, w = os.pipe()
        fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
        data = pattern(900 << 10, 2)
        os.set_blocking(w, False)
        write_all(w, data)
        os.set_blocking(w, True)
        assert read_exactly(r, 1000) == data[:1000]
        state = {"expected": data[1000:]}

        def check_big(bad, r=r, w=w, state=state):
            if fcntl.fcntl(r, F_GETPIPE_SZ) != 1 << 20:
                bad.append(f"big: pipe size {fcntl.fcntl(r, F_GETPIPE_SZ)}")
            drain_and_reuse("big", r, w, state["expected"], bad)
            state["expected"] = b""

        checks.append(check_big)

    elif arg == "dups":
        # Both ends dup'ed to several fds, a second read description of the
        # same pipe, O_NONBLOCK on the write end.
        r, w = os.pipe()
        r2 = os.dup(r)
        os.set_inheritable(r2, True)
        r3 = os.dup2(r, 40, inheritable=False)
        w2 = os.dup(w)
        w3 = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 50)
        r_other = os.open(f"/proc/self/fd/{r}", os.O_RDONLY)
        os.set_blocking(w, False)
        data = pattern(3000, 3)
        write_all(w2, data)
        state = {"expected": data}

        def check_dups(bad, r=r, r2=r2, r3=r3, w=w, w2=w2, w3=w3, r_other=r_other, state=state):
            if [os.get_blocking(x) for x in (w, w2, w3)] != [False] * 3:
                bad.append("dups: write ends lost O_NONBLOCK")
            if [os.get_blocking(x) for x in (r, r2, r3, r_other)] != [True] * 4:
                bad.append("dups: read ends became non-blocking")
            if fcntl.fcntl(r, fcntl.F_GETFL) & 3 != os.O_RDONLY or fcntl.fcntl(w3, fcntl.F_GETFL) & 3 != os.O_WRONLY:
                bad.append("dups: access modes")
            if os.get_inheritable(r3) or os.get_inheritable(w3) or not os.get_inheritable(r2):
                bad.append("dups: close-on-exec flags")
            os.set_blocking(r2, False)  # r, r2, r3 share one description; r_other does not
            if [os.get_blocking(x) for x in (r, r3, r_other)] != [False, False, True]:
                bad.append("dups: description sharing of the read ends")
            os.set_blocking(r2, True)
            expected = state["expected"]
            if not expected:
                return
            if unread(r_other) != len(expected):
                bad.append(f"dups: {unread(r_other)} bytes unread, expected {len(expected)}")
                return
            if read_exactly(r3, 1000) + read_exactly(r_other, len(expected) - 1000) != expected:
                bad.append("dups: unread data differs")
            state["expected"] = b""
            try:
                os.write(w, b"x" * (1 << 20))  # more than fits: a blocking end would hang here
                n = unread(r)
                if n != 65536:
                    bad.append(f"dups: non-blocking write left {n} bytes")
                read_exactly(r, n)
            except BlockingIOError:
                bad.append("dups: first non-blocking write wrote nothing")
            drain_and_reuse("dups", r_other, w3, b"", bad)

        checks.append(check_dups)

    elif arg == "packets":
        # Packet mode (O_DIRECT): each write is one packet for the reader.
        r, w = os.pipe2(os.O_DIRECT)
        sizes = [10, 200, 3000, 1]
        packets = [pattern(n, n) for n in sizes]
        for p in packets:
            os.write(w, p)
        state = {"expected": packets}

        def check_packets(bad, r=r, w=w, state=state):
            if not fcntl.fcntl(w, fcntl.F_GETFL) & os.O_DIRECT:
                bad.append("packets: write end lost O_DIRECT")
            for i, p in enumerate(state["expected"]):
                got = os.read(r, 65536)
                if got != p:
                    bad.append(f"packets: packet {i} is {len(got)} bytes, expected {len(p)}")
                    break
            state["expected"] = []
            drain_and_reuse("packets", r, w, b"", bad)

        checks.append(check_packets)

    elif arg.startswith("fifo="):
        # A named FIFO held at both ends, 5000 bytes written, 100 read.
        path = arg[len("fifo="):]
        rd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(rd, True)
        wr = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        data = pattern(5000, 5)
        write_all(wr, data)
        assert read_exactly(rd, 100) == data[:100]
        ino = os.stat(path).st_ino
        state = {"expected": data[100:]}

        def check_fifo(bad, rd=rd, wr=wr, path=path, ino=ino, state=state):
            if os.fstat(rd).st_ino != ino or os.fstat(wr).st_ino != ino:
                bad.append("fifo: not the same FIFO")
            if fcntl.fcntl(rd, fcntl.F_GETFL) & 3 != os.O_RDONLY or fcntl.fcntl(wr, fcntl.F_GETFL) & 3 != os.O_WRONLY:
                bad.append("fifo: access modes")
            if not os.get_blocking(rd) or os.get_blocking(wr):
                bad.append("fifo: O_NONBLOCK flags")
            drain_and_reuse("fifo", rd, wr, state["expected"], bad)
            state["expected"] = b""

        checks.append(check_fifo)

    elif arg.startswith("rdwr="):
        # Read-write descriptions only: an anonymous pipe reopened O_RDWR
        # through /proc (its pipe() ends closed) and a FIFO opened O_RDWR.
        r, w = os.pipe()
        anon = os.open(f"/proc/self/fd/{r}", os.O_RDWR)
        os.close(r)
        os.close(w)
        fifo = os.open(arg[len("rdwr="):], os.O_RDWR)
        data = pattern(777, 7)
        write_all(anon, data)
        write_all(fifo, data[::-1])
        state = {"anon": data, "fifo": data[::-1]}

        def check_rdwr(bad, anon=anon, fifo=fifo, state=state):
            for name, fd in (("anon", anon), ("fifo", fifo)):
                if fcntl.fcntl(fd, fcntl.F_GETFL) & 3 != os.O_RDWR:
                    bad.append(f"rdwr {name}: access mode")
                drain_and_reuse(f"rdwr {name}", fd, fd, state[name], bad)
                state[name] = b""

        checks.append(check_rdwr)

    elif arg == "stdout":
        # fd 1 is whatever the starter gave (a pipe to it): write a line there.
        def check_stdout(bad):
            try:
                os.write(1, f"OUT pid={os.getpid()}\n".encode())
            except OSError as e:
                bad.append(f"stdout: {e}")

        checks.append(check_stdout)

    else:
        sys.exit(f"unknown scenario {arg!r}")

flag = False


def on_usr1(sig, frame):
    global flag
    flag = True


signal.signal(signal.SIGUSR1, on_usr1)
print(f"READY {os.getpid()}", file=sys.stderr, flush=True)

n = 0
while True:
    n += 1
    if flag:
        flag = False
        bad = []
        for c in checks:
            try:
                c(bad)
            except Exception as e:  # noqa: BLE001 -- report, never die: the test reads the verdict
                bad.append(f"{c.__name__}: {type(e).__name__}: {e}")
        print(f"CHECK ok counter={n}" if not bad else "CHECK FAIL " + "; ".join(bad),
              file=sys.stderr, flush=True)
    time.sleep(0.02)
