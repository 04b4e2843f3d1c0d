"""Target of the SIGKILL-during-dump test: N MiB of patterned memory, a second
thread, a pipe holding data and a custom signal mask; `CHECK ok` on SIGUSR1 when
all of it is as it was (registers, mask and memory the injector touched included:
the interpreter itself runs on them)."""

import hashlib
import os
import signal
import sys
import threading

import selfcheck

mib = int(sys.argv[1])
buf = bytearray(mib << 20)
for off in range(0, len(buf), 4096):
    buf[off] = (off >> 12) % 251 + 1
digest = hashlib.sha256(buf).hexdigest()
r, w = os.pipe()
os.set_blocking(r, False)
os.write(w, b"hello")
idle = threading.Event()
threading.Thread(target=idle.wait, daemon=True).start()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGURG})
MASK = signal.pthread_sigmask(signal.SIG_BLOCK, set())


def check() -> list[str]:
    bad = []
    if hashlib.sha256(buf).hexdigest() != digest:
        bad.append("memory changed")
    if threading.active_count() != 2:
        bad.append(f"{threading.active_count()} threads")
    try:
        data = os.read(r, 5)
    except BlockingIOError:
        data = b""
    if data != b"hello":
        bad.append(f"pipe holds {data!r}")
    os.write(w, b"hello")
    if signal.pthread_sigmask(signal.SIG_BLOCK, set()) != MASK:
        bad.append(f"signal mask {signal.pthread_sigmask(signal.SIG_BLOCK, set())}, was {MASK}")
    return bad


selfcheck.listen()
print("READY", os.getpid(), flush=True)
selfcheck.serve(check)
