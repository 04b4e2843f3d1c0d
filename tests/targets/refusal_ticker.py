"""Target for the refusal tests: prints a tick every 10 ms, forever.

argv[1] picks what it holds besides: "plain" (nothing), "thread" (a second
thread that sleeps), "pipe" (both ends of an os.pipe()), "pidfd" (a pidfd of its parent,
the test, which is outside the image: an fd pyckpt cannot save), or "bigN" (a
bytearray of N MiB with every page touched).  It prints "ready ..." once
set up, then "tick N" lines, so a test can see it keeps making progress.
"""

import os
import sys
import threading
import time

mode = sys.argv[1] if len(sys.argv) > 1 else "plain"
extra = ""
if mode == "thread":
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
    extra = f" threads {threading.active_count()}"
elif mode == "pipe":
    r, w = os.pipe()
    extra = f" pipe {r} {w}"
elif mode == "pidfd":
    pidfd = os.pidfd_open(os.getppid())
    extra = f" pidfd {pidfd}"
elif mode.startswith("big"):
    mib = int(mode[3:])
    buf = bytearray(mib << 20)
    for off in range(0, len(buf), 4096):
        buf[off] = (off >> 12) % 251 + 1
    extra = f" big {mib}"
elif mode != "plain":
    sys.exit(f"unknown mode {mode}")

print(f"ready {os.getpid()}{extra}", flush=True)
i = 0
while True:
    print(f"tick {i}", flush=True)
    i += 1
    time.sleep(0.01)
