"""Prints `tick N` on stdout every 20 ms; its stdout may be a terminal or a pipe."""

import os
import sys
import time

n = 0
print(f"READY {os.getpid()}", flush=True)
while True:
    n += 1
    try:
        print(f"tick {n}", flush=True)
    except BrokenPipeError:
        sys.exit(0)
    time.sleep(0.02)
