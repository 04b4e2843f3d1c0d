"""A thread that writes memory all the time, so that a dump sees it write during
pre-copy's pass 1, between pass 1 and the freeze, and (incremental) since the parent.

A 16 MiB private anonymous buffer of 4096 pages; the writer thread writes
generation after generation, each one the generation's number into the first
8 bytes of every page, in page order, pausing a little every 64 pages (a
generation takes ~0.1-0.3 s: a dump finds some pieces written since pass 1
and others not).  At any instant, so at the freeze, the pages before the
writer's position hold its generation i and the others i - 1; the writer's
position and generation are part of the same instant (its frame), and it
carries on from there after a restore.  A copy of a page from before the
freeze that was kept although the page was written since shows an older number.

On SIGUSR1 the writer is stopped where it is and every page is checked against
its position (the selfcheck line).
"""

import mmap
import struct
import threading
import time

import selfcheck

PAGE, PAGES = 4096, 4096
buf = mmap.mmap(-1, PAGE * PAGES, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
stop, stopped = threading.Event(), threading.Event()
where = {}


def writer() -> None:
    i = 0
    while True:
        i += 1
        for k in range(PAGES):
            if stop.is_set():
                where.update(i=i, k=k)
                stopped.set()
                return
            struct.pack_into("<Q", buf, k * PAGE, i)
            if k % 64 == 63:
                time.sleep(0.002)


def check():
    stop.set()
    if not stopped.wait(10):
        return ["the writer did not stop"]
    i, k = where["i"], where["k"]
    bad = []
    for n in range(PAGES):
        (got,) = struct.unpack_from("<Q", buf, n * PAGE)
        want = i if n < k else i - 1
        if got != want:
            bad.append(f"page {n} holds generation {got}, not {want} (writer at page {k} of generation {i})")
    return bad[:5]


threading.Thread(target=writer, daemon=True).start()
selfcheck.listen()
time.sleep(0.5)  # a few generations written
print("READY", flush=True)
selfcheck.serve(check)
