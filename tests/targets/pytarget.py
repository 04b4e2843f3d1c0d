"""CPython test target for pyckpt: holds a big dict and bytearray and verifies them itself.

PYTARGET_BUF_MIB in the environment sets the bytearray's size (MiB, default 32).
Prints READY once set up, then sleeps in a loop (0.05 s per iteration)
counting iterations; prints "TICK n" every 50 iterations.  On SIGUSR1 it
verifies its state and prints "CHECK ok counter=N" or "CHECK FAIL <what>".
"""

import hashlib
import os
import signal
import struct
import sys
import time

DICT_ITEMS = 100_000
BUF_BYTES = int(os.environ.get("PYTARGET_BUF_MIB", "32")) << 20  # (a test may want more)
PAGE = 4096


def make_dict() -> dict:
    return {i: str(i * i) for i in range(DICT_ITEMS)}


def make_buffer() -> bytearray:
    # a 251-byte period (prime, so it drifts against pages) with each
    # page's number stamped at its start
    period = bytes((i * 37 + 11) & 0xFF for i in range(251))
    buf = bytearray((period * (BUF_BYTES // len(period) + 1))[:BUF_BYTES])
    for page in range(BUF_BYTES // PAGE):
        struct.pack_into("<Q", buf, page * PAGE, 0x5059_0000_0000_0000 | page)
    return buf


def main() -> None:
    check_requested = False

    def on_usr1(signum, frame):
        nonlocal check_requested
        check_requested = True

    signal.signal(signal.SIGUSR1, on_usr1)
    pid = os.getpid()
    table = make_dict()
    buf = make_buffer()
    buf_digest = hashlib.sha256(buf).hexdigest()
    counter = 0
    last_checked = -1
    started = time.monotonic()
    print(f"READY pid={pid}", flush=True)

    while True:
        time.sleep(0.05)
        counter += 1
        if counter % 50 == 0:
            print(f"TICK {counter}", flush=True)
        if not check_requested:
            continue
        check_requested = False
        fails = []
        if os.getpid() != pid:
            fails.append(f"pid={os.getpid()}(expected {pid})")
        if counter <= last_checked:
            fails.append(f"counter_not_increasing({counter}<={last_checked})")
        if len(table) != DICT_ITEMS:
            fails.append(f"dict_len={len(table)}")
        if list(table) != list(range(DICT_ITEMS)):
            fails.append("dict_key_order")
        bad = [i for i in range(DICT_ITEMS) if table.get(i) != str(i * i)]
        if bad:
            fails.append(f"dict_values({len(bad)} bad, first key {bad[0]})")
        if len(buf) != BUF_BYTES:
            fails.append(f"buffer_len={len(buf)}")
        elif buf != make_buffer():
            first = next(i for i, (a, b) in enumerate(zip(buf, make_buffer())) if a != b)
            fails.append(f"buffer_content(first bad byte {first:#x})")
        if hashlib.sha256(buf).hexdigest() != buf_digest:
            fails.append("buffer_digest")
        if time.monotonic() < started:
            fails.append("monotonic_clock_went_back")
        if signal.getsignal(signal.SIGUSR1) is not on_usr1:
            fails.append("sigusr1_handler_lost")
        # stdout is the log file and only we write it: its offset is its size
        pos = os.lseek(1, 0, os.SEEK_CUR)
        if pos != os.fstat(1).st_size:
            fails.append(f"stdout_offset={pos}(size {os.fstat(1).st_size})")
        if fails:
            print("CHECK FAIL " + " ".join(fails), flush=True)
        else:
            print(f"CHECK ok counter={counter}", flush=True)
        last_checked = counter


if __name__ == "__main__":
    sys.exit(main())
